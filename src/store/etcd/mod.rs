//! The etcd backend (cargo feature `etcd`): replicas of zsc over one etcd cluster.
//!
//! Layout: every key of table `t` lives at `PREFIX/t/KEY`, so one prefix holds one store and
//! several stores can share a cluster.
//!
//! Transactions are optimistic (`tx.rs`): the rules' closure runs over values fetched with
//! their `mod_revision`; its writes are committed by one etcd Txn that compares every read key's
//! revision, and a failed compare re-runs the closure on the current values. The log head is a
//! key like any other, so the gapless append is part of the same Txn.
//!
//! Each replica runs one follower (`follow.rs`): a single etcd Watch on the prefix that keeps
//! this replica's copy of the accounts, tokens and revocation events and announces the log head
//! (etcd acknowledges a write only once a majority has it on disk, so committed is durable).
//! A health probe marks the store unavailable while the cluster cannot be reached.

mod follow;
mod tx;

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{Arc, RwLock},
    time::Duration,
};

use etcd_client::{
    Client, ConnectOptions, GetOptions, KvClient, SortOrder, SortTarget, Txn, TxnOp,
};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::kv::{prefix_end, Entry, Range};
use super::tables::Table;
use crate::domain::{Error, Result};

/// Where a store lives on etcd: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    /// Without a trailing slash, e.g. `/zsc`.
    pub prefix: String,
}

/// The prefix a URL without one gets.
pub const DEFAULT_PREFIX: &str = "/zsc";

impl std::str::FromStr for EtcdUrl {
    type Err = String;

    fn from_str(url: &str) -> std::result::Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?}: a store URL starts with etcd://"))?;
        let (hosts, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, DEFAULT_PREFIX),
        };
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|host| format!("http://{host}"))
            .collect();
        if hosts.is_empty() || hosts.split(',').any(|h| h.rsplit_once(':').is_none()) {
            return Err(format!(
                "{url:?}: give etcd endpoints as HOST:PORT[,HOST:PORT...]"
            ));
        }
        Ok(EtcdUrl {
            endpoints,
            prefix: prefix.to_owned(),
        })
    }
}

impl EtcdUrl {
    /// `PREFIX/`: every key of the store starts with it.
    fn root(&self) -> Vec<u8> {
        format!("{}/", self.prefix).into_bytes()
    }
}

async fn connect(url: &EtcdUrl) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
    Client::connect(&url.endpoints, Some(options))
        .await
        .map_err(|e| unreachable_cluster(&e))
}

/// Every key of the store at `url`, read at one revision, by table.
pub(in crate::store) async fn dump(url: &EtcdUrl) -> Result<Vec<(Table, Vec<u8>, Vec<u8>)>> {
    let client = connect(url).await?;
    let root = url.root();
    let end = prefix_end(&root).expect("the root ends in '/'");
    let mut start = root.clone();
    let mut revision = 0;
    let mut all = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(SCAN_PAGE as i64);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let page = retry_read(|| {
            let mut kv = client.kv_client();
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        for kv in page.kvs() {
            if let Some((table, key)) = split_key(&kv.key()[root.len()..]) {
                all.push((table, key.to_vec(), kv.value().to_vec()));
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => start = [last.key(), &[0]].concat(),
            _ => break,
        }
    }
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

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)
    }
}

/// How long one etcd request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the health probe asks the cluster.
const PROBE_INTERVAL: Duration = Duration::from_millis(1000);

/// Tables kept in memory on each replica, current through the watch: what authentication and
/// the revocation streams read without a round trip.
const MIRRORED: [Table; 3] = [Table::Accounts, Table::Tokens, Table::Events];

pub(in crate::store) struct EtcdBackend {
    kv: KvClient,
    /// `PREFIX/`.
    root: Vec<u8>,
    mirror: Arc<Mirror>,
    head: Arc<Head>,
    /// Set while the cluster cannot be reached; cleared when it can again.
    fault: Arc<watch::Sender<Option<String>>>,
    /// One change of this replica at a time: nearly every change appends to the audit trail,
    /// so concurrent ones would only conflict on its head and re-run (measured: 16 at once
    /// made fewer changes per second than one at a time).
    writer: tokio::sync::Mutex<()>,
    /// The revision of this replica's latest write, and the revision its watched copy (and so
    /// the durable head its streams follow) reflects: `sync` waits for the one to reach the
    /// other, so a change is announced to this replica's subscribers before it is answered.
    written: std::sync::atomic::AtomicI64,
    applied: watch::Receiver<i64>,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

/// The durable head and the channel that announces it. While the cluster cannot be reached
/// the sender is dropped, which ends every revocation stream of this replica (a stream that
/// went on sending checkpoints would vouch for a freshness the replica cannot see); a new
/// channel is made when the cluster answers again.
pub(super) struct Head {
    inner: std::sync::Mutex<HeadInner>,
}

struct HeadInner {
    value: u64,
    sender: Option<watch::Sender<u64>>,
    receiver: watch::Receiver<u64>,
}

impl Head {
    fn new() -> Head {
        let (sender, receiver) = watch::channel(0);
        Head {
            inner: std::sync::Mutex::new(HeadInner {
                value: 0,
                sender: Some(sender),
                receiver,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeadInner> {
        self.inner.lock().expect("head lock is never poisoned")
    }

    /// Moves the head forward (never back) and wakes the streams.
    pub fn advance(&self, head: u64) {
        let mut inner = self.lock();
        inner.value = inner.value.max(head);
        let value = inner.value;
        if let Some(sender) = &inner.sender {
            sender.send_if_modified(|durable| {
                let advanced = value > *durable;
                *durable = value;
                advanced
            });
        }
    }

    fn receiver(&self) -> watch::Receiver<u64> {
        self.lock().receiver.clone()
    }

    /// Ends every stream following the head (the cluster is out of reach).
    fn stop(&self) {
        self.lock().sender.take();
    }

    /// A new channel, from the current head (the cluster answers again).
    fn restart(&self) {
        let mut inner = self.lock();
        if inner.sender.is_none() {
            let (sender, receiver) = watch::channel(inner.value);
            inner.sender = Some(sender);
            inner.receiver = receiver;
        }
    }
}

/// This replica's copy of the mirrored tables.
#[derive(Default)]
pub(super) struct Mirror {
    tables: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Moves after each change to the mirrored accounts or tokens is in `tables`.
    accounts: std::sync::atomic::AtomicU64,
}

impl Mirror {
    fn accounts_changed(&self) {
        self.accounts
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl EtcdBackend {
    /// Connects and starts the follower and the health probe. Fails if no endpoint answers.
    pub async fn connect(url: &EtcdUrl) -> Result<EtcdBackend> {
        let client = connect(url).await?;
        let root = url.root();
        let mirror = Arc::new(Mirror::default());
        let fault = Arc::new(watch::Sender::new(None));
        let head = Arc::new(Head::new());
        let applied = Arc::new(watch::Sender::new(0));
        let follower = follow::Follower {
            client: client.clone(),
            root: root.clone(),
            mirror: mirror.clone(),
            head: head.clone(),
            applied: applied.clone(),
        };
        let loaded = follower.load().await?;
        let backend = EtcdBackend {
            kv: client.kv_client(),
            root: root.clone(),
            mirror,
            head: head.clone(),
            fault: fault.clone(),
            writer: tokio::sync::Mutex::new(()),
            written: std::sync::atomic::AtomicI64::new(0),
            applied: applied.subscribe(),
            _tasks: vec![
                AbortOnDropHandle::new(tokio::spawn(follower.run(loaded))),
                AbortOnDropHandle::new(tokio::spawn(probe_forever(
                    client.kv_client(),
                    root,
                    fault,
                    head,
                ))),
            ],
        };
        Ok(backend)
    }

    fn key(&self, table: Table, key: &[u8]) -> Vec<u8> {
        table_key(&self.root, table, key)
    }

    /// Notes a write of this replica, committed at `revision`.
    pub(super) fn wrote(&self, revision: i64) {
        self.written
            .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
    }

    /// Returns once this replica's copy reflects every write it made before the call (etcd
    /// already has them on a majority's disks). Bounded: if the watch is down, the probe
    /// takes the replica out of service, and the write stands.
    pub async fn sync(&self) -> Result<()> {
        let written = self.written.load(std::sync::atomic::Ordering::SeqCst);
        let mut applied = self.applied.clone();
        let caught_up = applied.wait_for(|applied| *applied >= written);
        if tokio::time::timeout(REQUEST_TIMEOUT, caught_up)
            .await
            .is_err()
        {
            tracing::warn!(written, "this replica's watch is behind its own writes");
        }
        Ok(())
    }

    pub fn writable(&self) -> Result<()> {
        match &*self.fault.borrow() {
            None => Ok(()),
            Some(_) => Err(unavailable()),
        }
    }

    pub fn fault(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }

    pub fn durable_head(&self) -> watch::Receiver<u64> {
        self.head.receiver()
    }

    /// A range read, linearizable; long ranges come in pages.
    pub async fn scan(&self, range: &Range) -> Result<Vec<Entry>> {
        let base = table_key(&self.root, range.table, b"");
        let start = match &range.start {
            Bound::Included(k) => table_key(&self.root, range.table, k),
            Bound::Excluded(k) => [table_key(&self.root, range.table, k), vec![0]].concat(),
            Bound::Unbounded => base.clone(),
        };
        let end = match &range.end {
            Bound::Included(k) => [table_key(&self.root, range.table, k), vec![0]].concat(),
            Bound::Excluded(k) => table_key(&self.root, range.table, k),
            Bound::Unbounded => prefix_end(&base).expect("a table prefix ends in '/'"),
        };
        if start >= end || range.limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let (mut start, mut end) = (start, end);
        let mut revision = 0;
        loop {
            let page = (range.limit - out.len()).min(SCAN_PAGE);
            let order = if range.reverse {
                SortOrder::Descend
            } else {
                SortOrder::Ascend
            };
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page as i64)
                .with_sort(SortTarget::Key, order);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let response = retry_read(|| {
                let mut kv = self.kv.clone();
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.kvs();
            for item in kvs {
                out.push((item.key()[base.len()..].to_vec(), item.value().to_vec()));
            }
            if !more || out.len() >= range.limit || kvs.is_empty() {
                return Ok(out);
            }
            let last = kvs.last().expect("not empty").key().to_vec();
            if range.reverse {
                end = last;
            } else {
                start = [last, vec![0]].concat();
            }
        }
    }

    /// Writes to one table outside the rules, in Txns of at most [`MAX_TXN_OPS`].
    pub async fn apply(&self, table: Table, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.writable()?;
        for chunk in writes.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(key, value)| match value {
                    Some(value) => TxnOp::put(self.key(table, key), value.clone(), None),
                    None => TxnOp::delete(self.key(table, key), None),
                })
                .collect();
            let mut kv = self.kv.clone();
            let response = kv
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| ambiguous(&e))?;
            self.wrote(response.header().map_or(0, |h| h.revision()));
        }
        Ok(())
    }

    pub fn accounts_generation(&self) -> u64 {
        self.mirror
            .accounts
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn get_local(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        debug_assert!(MIRRORED.contains(&table), "{table:?} is not mirrored");
        let tables = self
            .mirror
            .tables
            .read()
            .expect("mirror lock is never poisoned");
        Ok(tables.get(&table_key(b"", table, key)).cloned())
    }

    pub fn scan_local(&self, range: &Range) -> Result<Vec<Entry>> {
        debug_assert!(
            MIRRORED.contains(&range.table),
            "{:?} is not mirrored",
            range.table
        );
        let base = table_key(b"", range.table, b"");
        let bound = |b: &Bound<Vec<u8>>| match b {
            Bound::Included(k) => Bound::Included(table_key(b"", range.table, k)),
            Bound::Excluded(k) => Bound::Excluded(table_key(b"", range.table, k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let start = match bound(&range.start) {
            Bound::Unbounded => Bound::Included(base.clone()),
            other => other,
        };
        let end = match bound(&range.end) {
            Bound::Unbounded => Bound::Excluded(prefix_end(&base).expect("ends in '/'")),
            other => other,
        };
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&start, &end)
        {
            if s > e {
                return Ok(Vec::new());
            }
        }
        let tables = self
            .mirror
            .tables
            .read()
            .expect("mirror lock is never poisoned");
        let entries = tables.range((start, end));
        let item = |(k, v): (&Vec<u8>, &Vec<u8>)| (k[base.len()..].to_vec(), v.clone());
        Ok(if range.reverse {
            entries.rev().take(range.limit).map(item).collect()
        } else {
            entries.take(range.limit).map(item).collect()
        })
    }
}

/// Keys per page of a range read.
const SCAN_PAGE: usize = 1000;
/// etcd's default `--max-txn-ops`.
pub(super) const MAX_TXN_OPS: usize = 128;

/// `root` + table name + `/` + key.
pub(super) fn table_key(root: &[u8], table: Table, key: &[u8]) -> Vec<u8> {
    [root, table.name().as_bytes(), b"/", key].concat()
}

/// The table and key an etcd key (without the root) names, if it is in a table.
pub(super) fn split_key(relative: &[u8]) -> Option<(Table, &[u8])> {
    let slash = relative.iter().position(|&b| b == b'/')?;
    let table = Table::from_name(std::str::from_utf8(&relative[..slash]).ok()?)?;
    Some((table, &relative[slash + 1..]))
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

/// A request that never left this process (the connection to that member was already dead):
/// safe to send again at once, whatever it was.
pub(super) fn never_sent(error: &etcd_client::Error) -> bool {
    let text = format!("{error:?}");
    text.contains("tcp connect error") || text.contains("Connection refused")
}

pub(super) fn unavailable() -> Error {
    Error::Unavailable("the etcd cluster cannot be reached: try again shortly")
}

pub(super) fn unreachable_cluster(error: &etcd_client::Error) -> Error {
    tracing::warn!(%error, "etcd request failed");
    unavailable()
}

/// A write whose outcome is unknown (sent, then the connection or leader failed): it may have
/// committed. The caller is told so rather than the change being applied twice.
pub(super) fn ambiguous(error: &etcd_client::Error) -> Error {
    tracing::warn!(%error, "etcd write failed after it was sent; its outcome is unknown");
    Error::Unavailable(
        "the etcd cluster failed while committing this change: it may or may not have been \
         applied; read the state before retrying",
    )
}

/// Marks the store unavailable while the cluster does not answer a linearizable read, and
/// available again once it does. Two failed probes (or one after a slow one) stay well
/// inside the 5 s a replica has to go NOT_SERVING.
async fn probe_forever(
    kv: KvClient,
    root: Vec<u8>,
    fault: Arc<watch::Sender<Option<String>>>,
    head: Arc<Head>,
) {
    let key = table_key(&root, Table::Meta, super::META_INITIALISED);
    loop {
        let probe = tokio::time::timeout(REQUEST_TIMEOUT, async {
            // A dead member the client still thinks ready fails at once without sending:
            // that says nothing about the cluster, so ask again (another member).
            let mut last = None;
            for _ in 0..4 {
                match kv.clone().get(key.clone(), None).await {
                    Ok(_) => return Ok(()),
                    Err(error) if never_sent(&error) => last = Some(error),
                    Err(error) => return Err(error),
                }
            }
            Err(last.expect("at least one attempt"))
        })
        .await;
        let failure = match probe {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        fault.send_if_modified(|current| {
            let changed = current.is_some() != failure.is_some();
            if changed {
                match &failure {
                    Some(cause) => {
                        tracing::error!(%cause, "etcd unreachable: not serving");
                        head.stop();
                    }
                    None => {
                        tracing::info!("etcd reachable again: serving");
                        head.restart();
                    }
                }
                *current = failure.clone();
            }
            changed
        });
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

impl From<etcd_client::Error> for Error {
    fn from(error: etcd_client::Error) -> Self {
        unreachable_cluster(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_endpoints_and_a_prefix() {
        let url: EtcdUrl = "etcd://10.0.0.1:2379,10.0.0.2:2379/teams/zsc/"
            .parse()
            .unwrap();
        assert_eq!(
            url.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(url.prefix, "/teams/zsc");
        assert_eq!(
            url.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379/teams/zsc"
        );
        let url: EtcdUrl = "etcd://localhost:2379".parse().unwrap();
        assert_eq!(url.prefix, DEFAULT_PREFIX);
        for bad in [
            "http://localhost:2379",
            "etcd://",
            "etcd:///zsc",
            "etcd://host/zsc",
            "etcd://a:1,,b:2",
        ] {
            assert!(bad.parse::<EtcdUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_split_back_into_their_table() {
        let key = table_key(b"/zsc/", Table::Keys, b"\x00/\xff");
        assert_eq!(
            split_key(&key[b"/zsc/".len()..]),
            Some((Table::Keys, &b"\x00/\xff"[..]))
        );
        assert_eq!(split_key(b"nosuchtable/x"), None);
    }
}
