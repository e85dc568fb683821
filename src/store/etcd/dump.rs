//! The whole store at once, for backup and restore: read at one revision, written into an
//! empty prefix.

use etcd_client::{Txn, TxnOp};

use super::backend::MAX_TXN_OPS;
use super::errors::ambiguous;
use super::read::read_range;
use super::url::{connect, split_key, table_key, EtcdUrl};
use crate::domain::{Error, Result};
use crate::store::kv::prefix_end;
use crate::store::tables::Table;

/// Every key of the store at `url`, read at one revision, by table.
pub(in crate::store) async fn dump(url: &EtcdUrl) -> Result<Vec<(Table, Vec<u8>, Vec<u8>)>> {
    let client = connect(url).await?;
    let root = url.root();
    let end = prefix_end(&root).expect("the root ends in '/'");
    let read = read_range(&client.kv_client(), root.clone(), end, 0, usize::MAX, false).await?;
    let all: Vec<_> = read
        .into_iter()
        .filter_map(|(key, value)| {
            let (table, key) = split_key(&key[root.len()..])?;
            Some((table, key.to_vec(), value))
        })
        .collect();
    if all.is_empty() {
        return Err(Error::not_found(format!("no zsc store at {url}")));
    }
    Ok(all)
}

/// Writes `all` into the empty prefix of `url`, in Txns of at most [`MAX_TXN_OPS`] writes each
/// guarded by `last`'s absence (so nothing is written over a store that was initialised
/// meanwhile), then `last`.
pub(in crate::store) async fn load_empty(
    url: &EtcdUrl,
    mut all: Vec<(Table, Vec<u8>, Vec<u8>)>,
    last: (Table, Vec<u8>, Vec<u8>),
) -> Result<()> {
    let client = connect(url).await?;
    let root = url.root();
    let mut kv = client.kv_client();
    let existing = kv
        .get(
            root.clone(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    if existing.count() > 0 {
        return Err(Error::FailedPrecondition(format!(
            "{url} is not empty: restore into an unused prefix (or delete this one with \
             etcdctl del --prefix {}/ once no replica uses it)",
            url.prefix
        )));
    }
    let guard_key = table_key(&root, last.0, &last.1);
    all.push(last);
    for chunk in all.chunks(MAX_TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(table, key, value)| {
                TxnOp::put(table_key(&root, *table, key), value.clone(), None)
            })
            .collect();
        let guard = etcd_client::Compare::create_revision(
            guard_key.clone(),
            etcd_client::CompareOp::Equal,
            0,
        );
        let response = kv
            .txn(Txn::new().when(vec![guard]).and_then(ops))
            .await
            .map_err(|e| ambiguous(&e))?;
        if !response.succeeded() {
            return Err(Error::FailedPrecondition(format!(
                "{url} was initialised while the restore ran: stop the replicas on it"
            )));
        }
    }
    Ok(())
}
