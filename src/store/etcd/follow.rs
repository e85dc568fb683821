//! The one follower a replica runs: a single etcd Watch on the store's prefix, from the
//! revision its copy was loaded at, resumed from the last revision it applied after a
//! disconnect, and re-loaded by range when etcd has compacted past it. It keeps the mirrored
//! tables current and moves the durable head only once the events up to it are in the mirror.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use etcd_client::{Client, EventType, WatchOptions};

use super::mirror::{Mirror, MIRRORED};
use super::read::{read_range, retry_read};
use super::url::{split_key, table_key};
use crate::domain::Result;
use crate::store::head::Announcer;
use crate::store::kv::{prefix_end, read_u64};
use crate::store::tables::Table;
use crate::store::tables::META_HEAD;
use crate::store::view::{Scanned, View};

pub(super) struct Follower {
    pub client: Client,
    pub root: Vec<u8>,
    pub mirror: Arc<Mirror>,
    pub view: Arc<View>,
    pub head: Arc<Announcer>,
    /// The highest etcd revision this replica's copy reflects.
    pub applied: Arc<tokio::sync::watch::Sender<i64>>,
}

enum Stopped {
    /// etcd compacted past the revision to resume from: load again by range.
    Compacted,
    Failed(String),
}

impl Follower {
    /// Loads the mirrored tables and the head, all at one revision; returns it.
    pub async fn load(&self) -> Result<i64> {
        let head_key = table_key(&self.root, Table::Meta, META_HEAD);
        let first = retry_read(|| {
            let mut kv = self.client.kv_client();
            let key = head_key.clone();
            async move { kv.get(key, None).await }
        })
        .await?;
        let revision = first.header().map_or(0, |h| h.revision());
        let head = read_u64(first.kvs().first().map(|kv| kv.value()));
        let mut tables = BTreeMap::new();
        for table in MIRRORED {
            tables.extend(self.range_at(table, revision).await?);
        }
        let view = self.load_view(revision).await?;
        self.view.replace(view);
        *self
            .mirror
            .tables
            .write()
            .expect("mirror lock is never poisoned") = tables;
        self.mirror.accounts_changed();
        self.head.advance(head);
        self.applied.send_if_modified(|applied| {
            let moved = revision > *applied;
            *applied = (*applied).max(revision);
            moved
        });
        Ok(revision)
    }

    /// Every key of `table` at `revision`, relative to the root.
    async fn range_at(&self, table: Table, revision: i64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let base = table_key(&self.root, table, b"");
        let end = prefix_end(&base).expect("a table prefix ends in '/'");
        let kv = self.client.kv_client();
        let read = read_range(&kv, base, end, revision, usize::MAX, false).await?;
        let root = self.root.len();
        Ok(read
            .into_iter()
            .map(|(k, v)| (k[root..].to_vec(), v))
            .collect())
    }

    /// The validation view at `revision`: every key, and the orgs of those whose records do
    /// not carry theirs. Such records, which an older replica wrote, stay as they are: every
    /// load joins them again (writing back is sled's, at open, where nothing else writes).
    async fn load_view(&self, revision: i64) -> Result<View> {
        let in_table = |table: Table, rows: Vec<(Vec<u8>, Vec<u8>)>| {
            let skip = table.name().len() + 1;
            rows.into_iter()
                .map(move |(key, value)| (key[skip..].to_vec(), value))
        };
        let keys = in_table(Table::Keys, self.range_at(Table::Keys, revision).await?);
        let scanned = Scanned::read(keys.map(Ok))?;
        let orgs: HashMap<Vec<u8>, Vec<u8>> = if scanned.lacks_orgs() {
            in_table(Table::Orgs, self.range_at(Table::Orgs, revision).await?).collect()
        } else {
            HashMap::new()
        };
        let org = |org_id: &str| Ok(orgs.get(org_id.as_bytes()).cloned());
        View::build([scanned], org, |_, _| Ok(()))
    }

    /// Follows the prefix forever (the task is aborted when the store is dropped).
    pub async fn run(self, mut revision: i64) {
        loop {
            match self.follow(&mut revision).await {
                Stopped::Compacted => {
                    tracing::warn!(
                        revision,
                        "etcd compacted past this replica's watch: reloading"
                    );
                    loop {
                        match self.load().await {
                            Ok(loaded) => {
                                revision = loaded;
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                }
                Stopped::Failed(cause) => {
                    tracing::debug!(%cause, revision, "etcd watch ended; resuming");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Applies events after `revision`, moving it forward, until the watch ends.
    async fn follow(&self, revision: &mut i64) -> Stopped {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1);
        let mut watcher = self.client.watch_client();
        let mut stream = match watcher.watch(self.root.clone(), Some(options)).await {
            Ok(stream) => stream,
            Err(error) => return Stopped::Failed(error.to_string()),
        };
        loop {
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return Stopped::Failed("watch closed".into()),
                Err(error) => return Stopped::Failed(error.to_string()),
            };
            if response.canceled() {
                return match response.compact_revision() {
                    0 => Stopped::Failed(response.cancel_reason().to_owned()),
                    _ => Stopped::Compacted,
                };
            }
            let mut new_head = None;
            let mut accounts_changed = false;
            let mut keys_and_orgs = Vec::new();
            {
                let mut tables = self
                    .mirror
                    .tables
                    .write()
                    .expect("mirror lock is never poisoned");
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    *revision = (*revision).max(kv.mod_revision());
                    let relative = &kv.key()[self.root.len()..];
                    let Some((table, key)) = split_key(relative) else {
                        continue;
                    };
                    let put = event.event_type() == EventType::Put;
                    if matches!(table, Table::Keys | Table::Orgs) {
                        keys_and_orgs.push((table, key, put.then(|| kv.value())));
                    }
                    if MIRRORED.contains(&table) {
                        accounts_changed |= table.holds_accounts();
                        if put {
                            tables.insert(relative.to_vec(), kv.value().to_vec());
                        } else {
                            tables.remove(relative);
                        }
                    } else if table == Table::Meta && key == META_HEAD && put {
                        new_head = Some(read_u64(Some(kv.value())));
                    }
                }
            }
            // Before the head moves: a revoked key leaves the view first (`view.rs`).
            if let Err(error) = self.view.apply(&keys_and_orgs) {
                tracing::error!(%error, "a key or org from etcd does not decode");
            }
            if accounts_changed {
                self.mirror.accounts_changed();
            }
            if let Some(head) = new_head {
                self.head.advance(head);
            }
            let revision = *revision;
            self.applied.send_if_modified(|applied| {
                let moved = revision > *applied;
                *applied = (*applied).max(revision);
                moved
            });
        }
    }
}
