//! `zsc backup --url`: the client side of the online backup (zsc.v1.OperationsService.Backup).
//! The server names the point its backup is of, then sends the file; it is written aside
//! (0600), checked through (every entry, the count, the digest) and only then named `out`.

use std::{path::Path, time::Duration};

use tonic::Status;

use crate::client::{endpoint, Bearer};
use crate::domain::{Error, Result};
use crate::proto::{backup_response::Part, operations_service_client::OperationsServiceClient};
use crate::proto::{BackupPoint, BackupRequest};
use crate::store::{self, BackupReport, Done, PrivateFile};

/// Where the online backup is taken from and how the caller is known.
pub struct Source<'a> {
    pub url: &'a str,
    /// The operator's token.
    pub token: &'a str,
    /// The PEM of the CA to trust for an https URL.
    pub tls_ca: Option<&'a [u8]>,
}

/// Backs up the server at `from` into `out`; `started` is called once the point is known (with
/// it), `progress` as the file comes.
pub async fn backup(
    from: &Source<'_>,
    out: &Path,
    started: impl FnOnce(&BackupPoint),
    progress: &mut dyn FnMut(Done),
) -> Result<BackupReport> {
    let refused = |status: Status| {
        Error::FailedPrecondition(format!(
            "{}: {}: {}",
            from.url,
            status.code(),
            status.message()
        ))
    };
    let unreachable = |e: tonic::transport::Error| {
        Error::FailedPrecondition(format!("{}: cannot connect: {e}", from.url))
    };
    let channel = endpoint(from.url, from.tls_ca)
        .map_err(unreachable)?
        .connect()
        .await
        .map_err(unreachable)?;
    let bearer = Bearer::new(from.token).map_err(refused)?;
    let mut client = OperationsServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(4 << 20);
    let mut stream = client
        .backup(BackupRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let point = match stream
        .message()
        .await
        .map_err(refused)?
        .and_then(|m| m.part)
    {
        Some(Part::Point(point)) => point,
        _ => {
            return Err(Error::internal(
                "the server's backup did not start with its point",
            ))
        }
    };
    started(&point);
    let mut file = PrivateFile::create(out)?;
    let mut done = Done {
        entries: point.entries,
        bytes: 0,
    };
    while let Some(message) = stream.message().await.map_err(refused)? {
        if let Some(Part::Chunk(chunk)) = message.part {
            file.writer()
                .write_all(&chunk)
                .map_err(|e| Error::internal(format!("writing {}: {e}", out.display())))?;
            done.bytes += chunk.len() as u64;
            progress(done);
        }
    }
    file.commit()?;
    let checked = store::verify_backup(out);
    if checked.as_ref().ok()
        != Some(&Done {
            entries: point.entries,
            bytes: point.bytes,
        })
    {
        let _ = std::fs::remove_file(out);
        return Err(checked.err().unwrap_or_else(|| {
            Error::internal("the backup received is not the one the server announced")
        }));
    }
    Ok(BackupReport {
        entries: point.entries,
        bytes: point.bytes,
        head: point.revocation_head,
        audit_head: point.audit_head,
        store_id: point.store_id,
        paused: Duration::from_micros(point.writers_paused_us),
    })
}
