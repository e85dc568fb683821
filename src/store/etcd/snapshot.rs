//! The store on etcd read at one revision and written into an empty prefix, both streaming:
//! the etcd side of a backup and of a restore (`store/snapshot.rs`, `store/restore.rs`).

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

use super::backend::MAX_TXN_OPS;
use super::errors::ambiguous;
use super::read::{retry_read, SCAN_PAGE};
use super::url::{split_key, table_key, EtcdUrl};
use crate::domain::{Error, Result};
use crate::store::kv::prefix_end;
use crate::store::kv::{Each, NextWrite};
use crate::store::tables::Table;

/// Calls `each` with every key under `root`, all read at the revision of the first page, a
/// page at a time (a compaction past that revision while the read runs fails it). Returns
/// how many keys there were.
pub(in crate::store) async fn each_at_one_revision(
    kv: &KvClient,
    root: &[u8],
    each: &mut Each<'_>,
) -> Result<u64> {
    let end = prefix_end(root).expect("the root ends in '/'");
    let mut start = root.to_vec();
    let (mut revision, mut count) = (0, 0);
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(SCAN_PAGE as i64);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let page = retry_read(|| {
            let mut kv = kv.clone();
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for item in page.kvs() {
            if let Some((table, key)) = split_key(&item.key()[root.len()..]) {
                each(table, key, item.value())?;
                count += 1;
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => start = [last.key(), &[0]].concat(),
            _ => return Ok(count),
        }
    }
}

/// Applies `writes` to the empty prefix of `url`, in Txns of at most [`MAX_TXN_OPS`] writes,
/// each guarded by the absence of `marker` (the last write: so nothing is written over a store
/// that was initialised meanwhile, and a replica refuses a prefix whose restore stopped short).
/// Holds one Txn's writes at a time.
pub(in crate::store) async fn load_empty(
    url: &EtcdUrl,
    next_write: &mut NextWrite<'_>,
    marker: (Table, &[u8]),
) -> Result<()> {
    let client = super::url::connect(url).await?;
    let root = url.root();
    let mut kv = client.kv_client();
    let existing = kv
        .get(
            root.clone(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    if existing.count() > 0 {
        return Err(Error::FailedPrecondition(format!(
            "{url} is not empty: restore into an unused prefix (or delete this one with \
             etcdctl del --prefix {}/ once no replica uses it)",
            url.prefix
        )));
    }
    let guard_key = table_key(&root, marker.0, marker.1);
    let mut ops = Vec::with_capacity(MAX_TXN_OPS);
    loop {
        let next = next_write()?;
        let last = next.is_none();
        if let Some((table, key, value)) = next {
            ops.push(TxnOp::put(table_key(&root, table, &key), value, None));
        }
        if ops.len() == MAX_TXN_OPS || (last && !ops.is_empty()) {
            let guard = Compare::create_revision(guard_key.clone(), CompareOp::Equal, 0);
            let txn = Txn::new()
                .when(vec![guard])
                .and_then(std::mem::take(&mut ops));
            let response = kv.txn(txn).await.map_err(|e| ambiguous(&e))?;
            if !response.succeeded() {
                return Err(Error::FailedPrecondition(format!(
                    "{url} was initialised while the restore ran: stop the replicas on it"
                )));
            }
        }
        if last {
            return Ok(());
        }
    }
}

impl super::backend::EtcdBackend {
    /// Every key of this replica's store at one revision.
    pub async fn snapshot(&self, each: &mut Each<'_>) -> Result<u64> {
        each_at_one_revision(&self.kv, &self.root, each).await
    }
}

/// Every key of the store at `url` at one revision, without starting a replica (the offline
/// `zsc backup --store`); NOT_FOUND if the prefix is empty.
pub(in crate::store) async fn snapshot_of(url: &EtcdUrl, each: &mut Each<'_>) -> Result<u64> {
    let client = super::url::connect(url).await?;
    let count = each_at_one_revision(&client.kv_client(), &url.root(), each).await?;
    if count == 0 {
        return Err(Error::not_found(format!("no zsc store at {url}")));
    }
    Ok(count)
}
