//! The audit trail: one entry per successful change, appended inside the change's own
//! transaction (so nothing is audited that did not happen, and nothing happens unaudited), with
//! a gapless sequence of its own. Nothing but retention ever removes an entry.
//!
//! Layout of the `audit` tree:
//! - `h` -> the head sequence (big-endian u64)
//! - `s` + sequence -> `AuditRecord`
//! - `o` + org_id + `\0` + sequence -> () (an org's entries, for the console's listing)

use std::time::SystemTime;

use std::ops::Bound;

use prost::Message;

use crate::domain::{
    AuditAction, AuditEvent, AuditFilter, Caller, Email, Error, OrgId, Page, Result,
    RevocationEvent,
};
use crate::store::handle::{Store, PRUNE_BATCH};
use crate::store::kv::{get_u64, read_u64, Entry, Range, Tx, TxResult};
use crate::store::records::{decode, now, AuditRecord};
use crate::store::tables::{Table, AUDIT_HEAD as HEAD};

const BY_SEQUENCE: u8 = b's';
const BY_ORG: u8 = b'o';
/// Entries one listing call may scan, whatever its filters: a page may come back short (even
/// empty) with a token to go on.
const SCAN_LIMIT: usize = 10_000;

/// A new entry for a change `by` made; the trail gives it its sequence when appended.
pub(in crate::store) fn entry(
    by: &Caller,
    action: AuditAction,
    org_id: Option<&OrgId>,
    target: impl Into<String>,
) -> AuditEvent {
    AuditEvent {
        sequence: 0,
        time: now(),
        caller: by.name.clone(),
        caller_role: by.role,
        actor: None,
        action,
        org_id: org_id.cloned(),
        target: target.into(),
        revocation_sequence: None,
    }
}

impl AuditEvent {
    pub(super) fn acting_for(mut self, actor: &Email) -> Self {
        self.actor = Some(actor.clone());
        self
    }

    pub(super) fn revoking(mut self, event: Option<&RevocationEvent>) -> Self {
        self.revocation_sequence = event.map(|e| e.sequence);
        self
    }
}

/// Appends `event` with the next audit sequence, inside the caller's transaction.
pub(in crate::store) fn append(tx: &mut dyn Tx, mut event: AuditEvent) -> TxResult<u64> {
    event.sequence = get_u64(tx, Table::Audit, HEAD)? + 1;
    tx.insert(Table::Audit, HEAD, &event.sequence.to_be_bytes())?;
    for (key, value) in entries(&event) {
        tx.insert(Table::Audit, &key, &value)?;
    }
    Ok(event.sequence)
}

/// The keys and values that store `event` (its sequence set).
fn entries(event: &AuditEvent) -> Vec<(Vec<u8>, Vec<u8>)> {
    let record = AuditRecord::from_event(event).encode_to_vec();
    let mut entries = vec![(sequence_key(event.sequence), record)];
    if let Some(org_id) = &event.org_id {
        entries.push((org_key(org_id, event.sequence), Vec::new()));
    }
    entries
}

/// What a restore adds to the restored `audit` tree, whose head was `head`: one
/// STORE_RESTORED entry and the new head.
pub(in crate::store) fn restored(head: u64, from_store: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut event = entry(
        &Caller::cli(),
        AuditAction::StoreRestored,
        None,
        format!("from a backup of store {from_store}"),
    );
    event.sequence = head + 1;
    let mut all = entries(&event);
    all.push((HEAD.to_vec(), event.sequence.to_be_bytes().to_vec()));
    all
}

/// Whether `key` is the audit head's key.
pub(in crate::store) fn is_head(key: &[u8]) -> bool {
    key == HEAD
}

fn sequence_key(sequence: u64) -> Vec<u8> {
    [&[BY_SEQUENCE][..], &sequence.to_be_bytes()].concat()
}

fn org_prefix(org_id: &OrgId) -> Vec<u8> {
    [&[BY_ORG][..], org_id.as_str().as_bytes(), b"\0"].concat()
}

fn org_key(org_id: &OrgId, sequence: u64) -> Vec<u8> {
    [org_prefix(org_id), sequence.to_be_bytes().to_vec()].concat()
}

/// The sequence at the end of a `s` or `o` key.
fn sequence_of(key: &[u8]) -> u64 {
    read_u64(key.get(key.len().saturating_sub(8)..))
}

/// The audit head key, for a transaction that appends to fetch ahead.
pub(in crate::store) fn head_key() -> (Table, Vec<u8>) {
    (Table::Audit, HEAD.to_vec())
}

impl Store {
    /// Audit entries matching `filter`, newest first, with sequences below `before`.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<AuditEvent>> {
        let before = before.unwrap_or(u64::MAX);
        let (start, mut end) = match &filter.org_id {
            Some(org_id) => (org_prefix(org_id), org_key(org_id, before)),
            None => (vec![BY_SEQUENCE], sequence_key(before)),
        };
        let mut items = Vec::new();
        let mut last = None;
        let mut scanned = 0;
        loop {
            // A chunk at a time, newest first: a page of `limit` needs a little over `limit`
            // entries when the filters match, and never more than SCAN_LIMIT.
            let chunk = limit
                .saturating_add(1)
                .clamp(16, 1000)
                .min(SCAN_LIMIT + 1 - scanned);
            let range = Range::new(
                Table::Audit,
                Bound::Included(start.clone()),
                Bound::Excluded(end.clone()),
            )
            .reverse()
            .limit(chunk);
            let entries = self.backend().scan(range).await?;
            let Some((oldest, _)) = entries.last() else {
                return Ok(Page {
                    items,
                    next_after: None,
                });
            };
            end = oldest.clone();
            let more = entries.len() == chunk;
            for event in self.audit_events(entries, filter.org_id.is_some()).await? {
                if items.len() == limit || scanned == SCAN_LIMIT {
                    return Ok(Page {
                        items,
                        next_after: last.map(|s: u64| s.to_string()),
                    });
                }
                scanned += 1;
                last = Some(event.sequence);
                if filter.matches(&event) {
                    items.push(event);
                }
            }
            if !more {
                return Ok(Page {
                    items,
                    next_after: None,
                });
            }
        }
    }

    /// The events of scanned `s` entries, or (`by_org`) of scanned org index entries, whose
    /// records are then read together.
    async fn audit_events(&self, entries: Vec<Entry>, by_org: bool) -> Result<Vec<AuditEvent>> {
        if !by_org {
            return entries
                .iter()
                .map(|(key, value)| decode::<AuditRecord>(value)?.to_event(sequence_of(key)))
                .collect();
        }
        let keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|(key, _)| sequence_key(sequence_of(key)))
            .collect();
        let prefetch = || keys.iter().map(|k| (Table::Audit, k.clone())).collect();
        let records = self
            .backend()
            .read(prefetch, |tx| {
                keys.iter()
                    .map(|key| tx.get(Table::Audit, key))
                    .collect::<TxResult<Vec<_>>>()
            })
            .await?;
        keys.iter()
            .zip(records)
            .map(|(key, record)| {
                let sequence = sequence_of(key);
                let record = record.ok_or_else(|| {
                    Error::internal(format!("audit index names a missing entry {sequence}"))
                })?;
                decode::<AuditRecord>(&record)?.to_event(sequence)
            })
            .collect()
    }

    /// Deletes audit entries beyond both retention bounds (more than `keep_count` behind the
    /// head *and* older than `keep_since`), a batch at a time.
    pub async fn prune_audit(&self, keep_count: u64, keep_since: SystemTime) -> Result<u64> {
        let head = self
            .backend()
            .read(|| vec![head_key()], |tx| get_u64(tx, Table::Audit, HEAD))
            .await?;
        let below = head.saturating_sub(keep_count);
        let mut removed = 0;
        loop {
            let batch = self
                .off_the_runtime(move |store| async move {
                    store.prune_audit_batch(below, keep_since).await
                })
                .await?;
            if batch == 0 {
                return Ok(removed);
            }
            self.sync().await?;
            removed += batch;
        }
    }

    async fn prune_audit_batch(&self, below: u64, keep_since: SystemTime) -> Result<u64> {
        self.backend().writable()?;
        let range = Range::new(
            Table::Audit,
            Bound::Included(vec![BY_SEQUENCE]),
            Bound::Included(sequence_key(below)),
        )
        .limit(PRUNE_BATCH);
        let mut removals = Vec::new();
        let mut count = 0;
        for (key, value) in self.backend().scan(range).await? {
            let event = decode::<AuditRecord>(&value)?.to_event(sequence_of(&key))?;
            if event.time >= keep_since {
                break;
            }
            if let Some(org_id) = &event.org_id {
                removals.push((org_key(org_id, event.sequence), None));
            }
            removals.push((key, None));
            count += 1;
        }
        if count > 0 {
            self.backend().apply(Table::Audit, removals).await?;
        }
        Ok(count)
    }
}
