//! Revocation confirmations: who has dropped a revoked key. Each Verifier reports the log
//! sequence it has applied (`ReportApplied`); the reporting service is the caller's account and
//! the receipt time is this server's clock. Reports are buffered in memory and written once a
//! second by [`Store::flush_confirmations`] (one flush per replica per second, whatever the
//! number of Verifiers), so any replica answers [`Store::revocation_confirmations`].
//!
//! A service is *subscribed* while it reported, or held a revocation stream open on some
//! replica (a consumer's: `api/keys.rs` takes the [`Presence`]), within [`SUBSCRIBED_WINDOW`]:
//! an open stream's presence is written every [`PRESENCE_EVERY`], so a Verifier that follows
//! but never reports is named as not confirmed.
//!
//! `confirmations` table (not backed up: it describes the fleet running against this store):
//! - `a` + service -> `ConfirmationRecord`: the latest report (by receipt time) and when the
//!   service was last seen;
//! - `s` + service + `\0` + big-endian sequence -> receipt time (µs, big-endian): the first
//!   report that reached that sequence, so a revocation's confirmation time is the first row at
//!   or after its sequence. Rows below the log's oldest retained event are pruned with it.

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use prost::Message;

use crate::domain::{AccountName, Error, KeyId, Result, RevocationEvent};
use crate::store::handle::Store;
use crate::store::kv::{lift, prefix_end, read_u64, Range, Tx, TxResult};
use crate::store::records::{decode, from_micros, micros, now, ConfirmationRecord};
use crate::store::rules::events::EventLog;
use crate::store::tables::Table;

/// How long after its last report or open stream a service still counts as subscribed.
pub const SUBSCRIBED_WINDOW: Duration = Duration::from_secs(60);
/// How often a replica writes the presence of a service that holds a stream open on it.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(10);
/// Reports kept in memory at most while writes fail (the oldest go first): a replica whose store
/// refuses writes for long must not grow without bound.
const MAX_UNFLUSHED: usize = 100_000;
/// Writes per transaction (inside etcd's 128 operations, with the reads).
const FLUSH_CHUNK: usize = 40;

const LATEST: u8 = b'a';
const ROWS: u8 = b's';

fn latest_key(service: &AccountName) -> Vec<u8> {
    [&[LATEST], service.as_str().as_bytes()].concat()
}

fn rows_prefix(service: &AccountName) -> Vec<u8> {
    [&[ROWS], service.as_str().as_bytes(), b"\0"].concat()
}

fn row_key(service: &AccountName, sequence: u64) -> Vec<u8> {
    [rows_prefix(service), sequence.to_be_bytes().to_vec()].concat()
}

/// Which revocation a query is about.
#[derive(Clone, Debug)]
pub enum RevocationRef {
    Sequence(u64),
    KeyId(KeyId),
}

/// One subscribed service that applied a revocation.
#[derive(Clone, Debug)]
pub struct ConfirmedBy {
    pub service: AccountName,
    pub confirmed: SystemTime,
    /// `confirmed` minus the revocation's time, never negative.
    pub lag: Duration,
}

/// One subscribed service that has not applied it yet.
#[derive(Clone, Debug)]
pub struct NotYet {
    pub service: AccountName,
    pub applied: u64,
    pub last_report: Option<SystemTime>,
}

/// The answer to "who has dropped it".
#[derive(Clone, Debug)]
pub struct RevocationConfirmations {
    pub revocation: RevocationEvent,
    pub confirmed: Vec<ConfirmedBy>,
    pub pending: Vec<NotYet>,
}

/// A subscribed service's state: what it applied, when it last reported.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub service: AccountName,
    pub applied: u64,
    pub reported_us: i64,
}

/// Ends a service's stream presence on this replica when dropped.
pub struct Presence {
    store: Store,
    service: AccountName,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut unflushed = self.store.unflushed();
        if let Some(open) = unflushed.streams.get_mut(&self.service) {
            *open -= 1;
            if *open == 0 {
                unflushed.streams.remove(&self.service);
            }
        }
    }
}

impl Store {
    fn unflushed(&self) -> std::sync::MutexGuard<'_, crate::store::handle::Unflushed> {
        // Nothing panics while holding it: a poisoned lock guards nothing broken.
        self.inner
            .confirmations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records `service`'s report that it applied the log up to `applied`; returns the receipt
    /// time. Refused (and nothing recorded) for another store's sequence or one past the head.
    pub fn report_applied(
        &self,
        service: &AccountName,
        applied: u64,
        store_id: &str,
    ) -> Result<SystemTime> {
        if store_id != self.store_id() {
            return Err(Error::FailedPrecondition(format!(
                "store_id `{store_id}` is not this store's ({}): report sequences of the store \
                 your revocation stream follows",
                self.store_id()
            )));
        }
        let head = self.backend().head().borrow().applied;
        if applied > head {
            return Err(Error::OutOfRange(format!(
                "applied_sequence {applied} is past the revocation log's head ({head})"
            )));
        }
        let received = now();
        self.unflushed()
            .reports
            .push((service.clone(), applied, micros(received)));
        Ok(received)
    }

    /// Counts `service` as subscribed while the returned guard lives (an open stream).
    pub fn stream_presence(&self, service: &AccountName) -> Presence {
        *self.unflushed().streams.entry(service.clone()).or_default() += 1;
        Presence {
            store: self.clone(),
            service: service.clone(),
        }
    }

    /// Writes the reports received since the last flush, and the presence of services streaming
    /// from this replica (each at most every [`PRESENCE_EVERY`]). On failure the reports are
    /// kept for the next flush.
    pub async fn flush_confirmations(&self) -> Result<()> {
        let now_us = micros(now());
        let (reports, present) = {
            let mut unflushed = self.unflushed();
            let reports = std::mem::take(&mut unflushed.reports);
            let due = PRESENCE_EVERY.as_micros() as i64;
            let streams: Vec<AccountName> = unflushed.streams.keys().cloned().collect();
            let present: Vec<AccountName> = streams
                .into_iter()
                .filter(|s| {
                    let last = unflushed.presence_written.get(s).copied().unwrap_or(0);
                    now_us - last >= due
                })
                .collect();
            for service in &present {
                unflushed.presence_written.insert(service.clone(), now_us);
            }
            (reports, present)
        };
        let updates = merge_updates(&reports, &present, now_us);
        if updates.is_empty() {
            return Ok(());
        }
        let written = self.write_updates(&updates).await;
        if written.is_err() {
            let mut unflushed = self.unflushed();
            let later = std::mem::replace(&mut unflushed.reports, reports);
            unflushed.reports.extend(later);
            let excess = unflushed.reports.len().saturating_sub(MAX_UNFLUSHED);
            unflushed.reports.drain(..excess);
        }
        written
    }

    async fn write_updates(&self, updates: &[Update]) -> Result<()> {
        self.backend().writable()?;
        for chunk in updates.chunks(FLUSH_CHUNK) {
            let prefetch = || {
                chunk
                    .iter()
                    .flat_map(|u| {
                        let rows = u.rows.iter().map(|(seq, _)| row_key(&u.service, *seq));
                        std::iter::once(latest_key(&u.service)).chain(rows)
                    })
                    .map(|key| (Table::Confirmations, key))
                    .collect()
            };
            self.backend()
                .transact(prefetch, |tx| {
                    chunk.iter().try_for_each(|update| apply_update(tx, update))
                })
                .await?;
        }
        self.sync().await
    }

    /// Every service seen within [`SUBSCRIBED_WINDOW`] (or streaming from this replica), with
    /// what it applied, including reports not flushed yet.
    pub async fn subscribed_services(&self) -> Result<Vec<ServiceState>> {
        let since = micros(now()) - SUBSCRIBED_WINDOW.as_micros() as i64;
        let saved = self
            .backend()
            .scan(Range::prefix(Table::Confirmations, &[LATEST]))
            .await?;
        let mut services = Vec::new();
        for (key, value) in saved {
            let record = decode::<ConfirmationRecord>(&value)?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            services.push((AccountName::from_trusted(name), record));
        }
        let updates = {
            let unflushed = self.unflushed();
            let streaming: Vec<AccountName> = unflushed.streams.keys().cloned().collect();
            merge_updates(&unflushed.reports, &streaming, micros(now()))
        };
        for update in updates {
            match services.iter_mut().find(|(s, _)| *s == update.service) {
                Some((_, record)) => merge_record(record, &update),
                None => services.push((update.service.clone(), new_record(&update))),
            }
        }
        let mut subscribed: Vec<ServiceState> = services
            .into_iter()
            .filter(|(_, r)| r.seen_us >= since)
            .map(|(service, r)| ServiceState {
                service,
                applied: r.applied,
                reported_us: r.reported_us,
            })
            .collect();
        subscribed.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(subscribed)
    }

    /// When `service` first reported applying `sequence` or later, if it did (and the row is
    /// retained).
    pub async fn first_confirmation(
        &self,
        service: &AccountName,
        sequence: u64,
    ) -> Result<Option<SystemTime>> {
        let prefix = rows_prefix(service);
        let range = Range::new(
            Table::Confirmations,
            Bound::Included(row_key(service, sequence)),
            prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        )
        .limit(1);
        let saved = self.backend().scan(range).await?;
        let saved = saved.first().map(|(_, v)| read_u64(Some(v)) as i64);
        let unflushed = self
            .unflushed()
            .reports
            .iter()
            .filter(|(s, applied, _)| s == service && *applied >= sequence)
            .map(|(_, _, at)| *at)
            .min();
        Ok(saved.into_iter().chain(unflushed).min().map(from_micros))
    }

    /// Who has applied the revocation `which`, and who has not.
    pub async fn revocation_confirmations(
        &self,
        which: &RevocationRef,
    ) -> Result<RevocationConfirmations> {
        let revocation = self.find_revocation(which)?;
        let mut answer = RevocationConfirmations {
            confirmed: Vec::new(),
            pending: Vec::new(),
            revocation,
        };
        let sequence = answer.revocation.sequence;
        for state in self.subscribed_services().await? {
            let first = match state.applied >= sequence {
                true => self.first_confirmation(&state.service, sequence).await?,
                false => None,
            };
            match (state.applied >= sequence, first) {
                (true, first) => {
                    // A row pruned away: the latest report is an upper bound.
                    let confirmed = first.unwrap_or_else(|| from_micros(state.reported_us));
                    answer.confirmed.push(ConfirmedBy {
                        lag: lag_after(&answer.revocation, confirmed),
                        service: state.service,
                        confirmed,
                    })
                }
                (false, _) => answer.pending.push(NotYet {
                    last_report: (state.reported_us > 0).then(|| from_micros(state.reported_us)),
                    service: state.service,
                    applied: state.applied,
                }),
            }
        }
        answer.confirmed.sort_by_key(|c| c.confirmed);
        Ok(answer)
    }

    /// The revocation with this sequence or of this key, from the retained log.
    pub fn find_revocation(&self, which: &RevocationRef) -> Result<RevocationEvent> {
        let log = EventLog::new(self.clone());
        let head = log.head().borrow().applied;
        let found = match which {
            RevocationRef::Sequence(sequence) => log
                .read(sequence.saturating_sub(1), (*sequence).min(head), 1)?
                .into_iter()
                .next(),
            RevocationRef::KeyId(key_id) => log.find_key(key_id, head)?,
        };
        found.ok_or_else(|| {
            let retained = log.first_retained().ok().flatten();
            Error::not_found(match (which, retained) {
                (RevocationRef::KeyId(key_id), _) => format!(
                    "no revocation of key {key_id} in the retained log (the key is live, unknown, \
                     or its revocation was pruned)"
                ),
                (RevocationRef::Sequence(s), Some(first)) => {
                    format!("no revocation with sequence {s}: the log holds {first}..={head}")
                }
                (RevocationRef::Sequence(s), None) => {
                    format!("no revocation with sequence {s}: the log is empty")
                }
            })
        })
    }

    /// Deletes confirmation rows of sequences below `below` (the oldest retained event).
    pub async fn prune_confirmations(&self, below: u64) -> Result<u64> {
        let rows = self
            .backend()
            .scan(Range::prefix(Table::Confirmations, &[ROWS]))
            .await?;
        let removals: Vec<(Vec<u8>, Option<Vec<u8>>)> = rows
            .into_iter()
            .filter(|(key, _)| key.len() >= 8 && read_u64(Some(&key[key.len() - 8..])) < below)
            .map(|(key, _)| (key, None))
            .take(crate::store::handle::PRUNE_BATCH)
            .collect();
        let count = removals.len() as u64;
        if count > 0 {
            self.backend().apply(Table::Confirmations, removals).await?;
            self.sync().await?;
        }
        Ok(count)
    }
}

/// The time from `revocation` to `confirmed`, never negative.
pub fn lag_after(revocation: &RevocationEvent, confirmed: SystemTime) -> Duration {
    confirmed
        .duration_since(revocation.revoked)
        .unwrap_or_default()
}

/// What one flush writes for one service.
#[derive(Debug)]
struct Update {
    service: AccountName,
    /// The latest report: (applied, received µs).
    latest: Option<(u64, i64)>,
    seen_us: i64,
    /// (sequence, received µs): the first report of each sequence in this flush.
    rows: Vec<(u64, i64)>,
}

/// The reports and presences of one flush, one update per service.
fn merge_updates(
    reports: &[(AccountName, u64, i64)],
    present: &[AccountName],
    now_us: i64,
) -> Vec<Update> {
    let mut updates: Vec<Update> = Vec::new();
    let mut of = |service: &AccountName| -> usize {
        match updates.iter().position(|u| &u.service == service) {
            Some(index) => index,
            None => {
                updates.push(Update {
                    service: service.clone(),
                    latest: None,
                    seen_us: 0,
                    rows: Vec::new(),
                });
                updates.len() - 1
            }
        }
    };
    let mut indexed = Vec::new();
    for service in present {
        indexed.push((of(service), None));
    }
    for (service, applied, at) in reports {
        indexed.push((of(service), Some((*applied, *at))));
    }
    for (index, report) in indexed {
        let update = &mut updates[index];
        let Some((applied, at)) = report else {
            update.seen_us = update.seen_us.max(now_us);
            continue;
        };
        update.seen_us = update.seen_us.max(at);
        if update.latest.is_none_or(|(_, last)| at >= last) {
            update.latest = Some((applied, at));
        }
        if !update.rows.iter().any(|(seq, _)| *seq == applied) {
            update.rows.push((applied, at));
        }
    }
    updates
}

fn new_record(update: &Update) -> ConfirmationRecord {
    let mut record = ConfirmationRecord::default();
    merge_record(&mut record, update);
    record
}

/// The newer report wins (by receipt time, whichever replica received it).
fn merge_record(record: &mut ConfirmationRecord, update: &Update) {
    if let Some((applied, at)) = update.latest {
        if at >= record.reported_us {
            record.applied = applied;
            record.reported_us = at;
        }
    }
    record.seen_us = record.seen_us.max(update.seen_us);
}

fn apply_update(tx: &mut dyn Tx, update: &Update) -> TxResult<()> {
    let key = latest_key(&update.service);
    let mut record = match tx.get(Table::Confirmations, &key)? {
        Some(bytes) => lift(decode::<ConfirmationRecord>(&bytes))?,
        None => ConfirmationRecord::default(),
    };
    merge_record(&mut record, update);
    tx.insert(Table::Confirmations, &key, &record.encode_to_vec())?;
    for (sequence, at) in &update.rows {
        let row = row_key(&update.service, *sequence);
        // The first report of a sequence is its confirmation time: keep the earliest.
        let earlier = tx
            .get(Table::Confirmations, &row)?
            .map(|v| read_u64(Some(&v)) as i64);
        if earlier.is_none_or(|earlier| *at < earlier) {
            tx.insert(Table::Confirmations, &row, &(*at as u64).to_be_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::domain::AccountName;
    use crate::store::{backup, restore, Store, StoreOptions};

    /// Confirmations describe the fleet running against one store: a backup leaves them out,
    /// so a restored store (a new store_id) starts with none.
    #[tokio::test]
    async fn confirmations_are_left_out_of_backups() {
        let (dir, restored, spool) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let store = Store::open(dir.path(), &StoreOptions::default())
            .unwrap()
            .store;
        let desk = AccountName::parse("desk").unwrap();
        store.report_applied(&desk, 0, store.store_id()).unwrap();
        store.flush_confirmations().await.unwrap();
        assert!(store.unflushed().reports.is_empty());
        assert_eq!(store.subscribed_services().await.unwrap().len(), 1);
        drop(store);

        let file = spool.path().join("zsc.backup");
        let written = backup(dir.path(), &file).unwrap();
        let reopened = Store::open(dir.path(), &StoreOptions::default())
            .unwrap()
            .store;
        assert_eq!(
            reopened.subscribed_services().await.unwrap().len(),
            1,
            "kept across a restart"
        );
        drop(reopened);
        let read = restore(&file, &restored.path().join("data")).unwrap();
        assert_eq!(read.entries, written.entries);
        let restored = Store::open(&restored.path().join("data"), &StoreOptions::default())
            .unwrap()
            .store;
        assert!(restored.subscribed_services().await.unwrap().is_empty());
    }
}
