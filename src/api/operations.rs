//! zsc.v1.OperationsService: the backup of a running server (`zsc backup --url`).
//!
//! The store is read at one point into a spool file in the data dir first (on sled, writers
//! wait only for that copy), then the file is sent at the client's pace: a slow client holds
//! a file open, never the store.

use std::{fs::File, io::Read, path::PathBuf};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::{
    self as pb, backup_response::Part, operations_service_server::OperationsService,
};
use crate::store::{BackupReport, Store};

/// The most bytes of the backup file in one message.
const CHUNK_BYTES: usize = 1 << 20;

pub struct OperationsApi {
    store: Store,
    /// Where the spool file of a backup is written (the data dir).
    spool_dir: PathBuf,
}

impl OperationsApi {
    pub fn new(store: Store, spool_dir: PathBuf) -> Self {
        OperationsApi { store, spool_dir }
    }
}

type Sent = Result<pb::BackupResponse, Status>;

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    type BackupStream = ReceiverStream<Sent>;

    async fn backup(
        &self,
        _request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let (file, report) = self.store.backup_to_spool(&self.spool_dir).await?;
        tracing::info!(
            entries = report.entries,
            bytes = report.bytes,
            revocation_head = report.head,
            audit_head = report.audit_head,
            writers_paused_ms = report.paused.as_secs_f64() * 1e3,
            "online backup taken; sending it"
        );
        let (sender, receiver) = mpsc::channel(4);
        let point = Part::Point(point_of(&report));
        sender
            .send(Ok(pb::BackupResponse { part: Some(point) }))
            .await
            .map_err(|_| Status::cancelled("the client went away"))?;
        tokio::task::spawn_blocking(move || send_file(file, &sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn point_of(report: &BackupReport) -> pb::BackupPoint {
    pb::BackupPoint {
        store_id: report.store_id.clone(),
        revocation_head: report.head,
        audit_head: report.audit_head,
        entries: report.entries,
        bytes: report.bytes,
        writers_paused_us: u64::try_from(report.paused.as_micros()).unwrap_or(u64::MAX),
    }
}

/// Blocking: sends the spool file in chunks until it ends or the client goes away.
fn send_file(mut file: File, sender: &mpsc::Sender<Sent>) {
    loop {
        let mut chunk = vec![0; CHUNK_BYTES];
        let read = match file.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "reading a backup's spool file");
                let _ = sender
                    .blocking_send(Err(Status::internal("the backup could not be read back")));
                return;
            }
        };
        chunk.truncate(read);
        let part = Some(Part::Chunk(chunk));
        if sender
            .blocking_send(Ok(pb::BackupResponse { part }))
            .is_err()
        {
            return;
        }
    }
}
