//! Reading from etcd: every read is retried a few times (a read is safe to repeat), and a
//! range comes in pages, all at the revision of the first, so the whole range is one state.

use std::time::Duration;

use etcd_client::{GetOptions, KvClient, SortOrder, SortTarget};

use super::errors::unreachable_cluster;
use crate::domain::Result;

/// Keys per page of a range read.
pub(super) const SCAN_PAGE: usize = 1000;
/// Up to `limit` keys in `[start, end)` at `revision` (0: the current one, linearizable), in
/// key order or its reverse, read in pages of [`SCAN_PAGE`]: full etcd keys and their values.
pub(super) async fn read_range(
    kv: &KvClient,
    mut start: Vec<u8>,
    mut end: Vec<u8>,
    mut revision: i64,
    limit: usize,
    reverse: bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut entries = Vec::new();
    let order = if reverse {
        SortOrder::Descend
    } else {
        SortOrder::Ascend
    };
    while entries.len() < limit && start < end {
        let page = (limit - entries.len()).min(SCAN_PAGE);
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page as i64)
            .with_sort(SortTarget::Key, order);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let response = retry_read(|| {
            let mut kv = kv.clone();
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        let kvs = response.kvs();
        entries.extend(
            kvs.iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
        );
        match kvs.last() {
            Some(last) if response.more() && reverse => end = last.key().to_vec(),
            Some(last) if response.more() => start = [last.key(), &[0]].concat(),
            _ => break,
        }
    }
    Ok(entries)
}

/// Reads are safe to repeat: a few quick attempts (a dead endpoint the client still thinks
/// ready fails at once), then UNAVAILABLE.
pub(super) async fn retry_read<T, F, Fut>(mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut last = None;
    for attempt in 0..4u32 {
        // One etcd round trip: a child span of the RPC when traces are exported (`trace.rs`).
        let round_trip = tracing::debug_span!("etcd.read", attempt);
        match tracing::Instrument::instrument(read(), round_trip).await {
            Ok(value) => return Ok(value),
            Err(error) => {
                tracing::debug!(%error, attempt, "etcd read failed; trying again");
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
        }
    }
    Err(unreachable_cluster(&last.expect("at least one attempt")))
}
