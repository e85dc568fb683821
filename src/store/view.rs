//! The validation view: every live key by its hash, with what a successful ValidateKey
//! answers, held in memory so that a validation reads no storage at all.
//!
//! A key is live while its row is in the keys table: the rules delete it in the same
//! transaction that revokes, regenerates it or takes the right to hold it from its owner
//! (deactivation, demotion), and no rule stores a key for anyone but an active administrator
//! of its org (`keys.rs`). So the view is the keys table: each key's record carries what a
//! validation answers about its org (`KeyRecord::org`; records written before that are joined
//! with their org), and the property test below checks that it answers exactly what the
//! store's own reads answer.
//!
//! Fed by the same path that moves the durable head, always before it:
//! - sled: after each committed transaction, every key hash it wrote is looked up again in
//!   the trees ([`View::refresh`]), before the change is flushed and acknowledged. Refreshes
//!   are serialised and each reads after its own commit, so whatever order two of them run
//!   in, the last one for a hash leaves what the store holds.
//! - etcd: the replica's one watch applies each revision's writes ([`View::apply`]) before
//!   it announces the log head they carry.
//!
//! Architecture invariant: a revoked key leaves the view before the log head that records its
//! revocation is announced, so an answer read from the view after reading the head reflects
//! every revocation at or below that head.
//!
//! Compact: per key, one pointer in a hash set and one allocation holding its 32-byte hash,
//! the org's creation time and edition, the org id, the org's name, the key id and the
//! owner's email.

use std::{
    collections::HashSet,
    hash::{BuildHasherDefault, Hasher},
    sync::{Mutex, RwLock},
};

use prost::Message;

use super::records::{decode, from_micros, KeyRecord, OrgRecord};
use super::tables::Table;
use crate::domain::{Edition, Email, Error, KeyId, Org, OrgId, Result, SecretHash, Validation};

/// One live key: its hash and what a successful validation of it answers (but the head),
/// in one allocation: the hash (32 bytes), the org's creation time (8), its edition (1),
/// where the org name, the key id and the email start in the text (3 x 2), then the text:
/// org id, org name, key id, owner email.
struct Live(Box<[u8]>);

const TEXT: usize = 47;

impl Live {
    fn new(hash: &[u8], key: &KeyRecord, org: &OrgRecord) -> Result<Live> {
        let parts = [&key.org_id, &org.name, &key.key_id, &key.owner_email];
        let mut packed = Vec::with_capacity(TEXT + parts.iter().map(|p| p.len()).sum::<usize>());
        packed.extend_from_slice(&hash_of(hash)?);
        packed.extend_from_slice(&org.created_us.to_le_bytes());
        packed.push(u8::try_from(org.edition).map_err(Error::internal)?);
        let mut cut = 0;
        for part in &parts[..3] {
            cut += part.len();
            packed.extend_from_slice(&u16::try_from(cut).map_err(Error::internal)?.to_le_bytes());
        }
        for part in parts {
            packed.extend_from_slice(part.as_bytes());
        }
        Ok(Live(packed.into_boxed_slice()))
    }

    fn hash(&self) -> &[u8; 32] {
        self.0[..32]
            .try_into()
            .expect("a live key starts with its hash")
    }

    /// The org id, the org's name, the key id and the owner's email (the text is checked as
    /// UTF-8 once, and cut where they start).
    fn parts(&self) -> [&str; 4] {
        let cut = |i: usize| u16::from_le_bytes([self.0[41 + 2 * i], self.0[42 + 2 * i]]) as usize;
        let text = std::str::from_utf8(&self.0[TEXT..]).expect("packed from strings");
        let (a, b, c) = (cut(0), cut(1), cut(2));
        [&text[..a], &text[a..b], &text[b..c], &text[c..]]
    }

    fn validation(
        &self,
        [org_id, name, key_id, owner]: [&str; 4],
        sequence: u64,
    ) -> Result<Validation> {
        let edition = Edition::from_code(self.0[40].into())
            .ok_or_else(|| Error::internal("corrupt edition code in storage"))?;
        let created_us = i64::from_le_bytes(self.0[32..40].try_into().expect("8 bytes"));
        Ok(Validation {
            org: Org {
                id: OrgId::from_trusted(org_id.to_owned()),
                name: name.to_owned(),
                edition,
                created: from_micros(created_us),
            },
            key_id: KeyId::from_trusted(key_id.to_owned()),
            owner: Email::from_trusted(owner.to_owned()),
            sequence,
        })
    }
}

/// A live key is found by its hash, which it holds: the set's buckets are one pointer each.
impl std::borrow::Borrow<[u8; 32]> for Live {
    fn borrow(&self) -> &[u8; 32] {
        self.hash()
    }
}

impl std::hash::Hash for Live {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash().hash(state);
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Live) -> bool {
        self.hash() == other.hash()
    }
}

impl Eq for Live {}

/// The keys are blake3 hashes already: their first eight bytes are as good a hash as any.
#[derive(Default)]
struct TakeBytes(u64);

impl Hasher for TakeBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
}

type Keys = HashSet<Live, BuildHasherDefault<TakeBytes>>;

/// One write of a revision, as a watch delivers it: table, key, value (None: deleted).
pub(super) type Write<'a> = (Table, &'a [u8], Option<&'a [u8]>);

/// The live keys of one store, in memory. See the module docs for how it stays current.
#[derive(Default)]
pub(super) struct View {
    keys: RwLock<Keys>,
    /// Held by whoever reads the store to change the view, so that changes apply in the order
    /// they were read.
    refreshing: Mutex<()>,
}

impl View {
    /// Builds the view from every key, read in `parts` ([`Scanned`]). A record that carries
    /// its org goes straight in; the others (written before keys carried it) are joined with
    /// their org and handed to `completed` with it, one by one, for the store to write back.
    ///
    /// `org` is called in org id order: keys come in hash order and name their orgs at random,
    /// and on sled each such lookup paged a node of the orgs tree in and out of the cache
    /// (38 s to SERVING at 1,000,000 keys); in org id order the lookups walk the tree once.
    pub fn build(
        parts: impl IntoIterator<Item = Scanned>,
        mut org: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
        mut completed: impl FnMut([u8; 32], KeyRecord) -> Result<()>,
    ) -> Result<View> {
        let (mut live, mut lacking) = (Vec::new(), Vec::new());
        for mut part in parts {
            live.append(&mut part.live);
            lacking.append(&mut part.lacking);
        }
        lacking.sort_unstable_by(|(_, a), (_, b)| a.org_id.cmp(&b.org_id));
        for (hash, mut key) in lacking {
            if let Some(bytes) = org(&key.org_id)? {
                let carried = decode::<OrgRecord>(&bytes)?.carried();
                live.push(Live::new(&hash, &key, &carried)?);
                key.org = Some(carried);
                completed(hash, key)?;
            }
        }
        let mut map = Keys::with_capacity_and_hasher(live.len(), Default::default());
        map.extend(live);
        Ok(View {
            keys: RwLock::new(map),
            refreshing: Mutex::new(()),
        })
    }

    /// How many live keys it holds.
    pub fn len(&self) -> usize {
        self.keys.read().expect("view lock is never poisoned").len()
    }

    /// Whether `hash` is a live key held by `email`, and what validating it answers.
    /// `sequence` is the log head the caller read before this call.
    pub fn validate(&self, hash: &SecretHash, email: &Email, sequence: u64) -> Result<Validation> {
        let denied = || Error::Unauthenticated(crate::domain::INVALID_EMAIL_OR_KEY);
        let keys = self.keys.read().expect("view lock is never poisoned");
        let live = keys.get(&hash.0).ok_or_else(denied)?;
        let parts = live.parts();
        if parts[3] != email.as_str() {
            return Err(denied());
        }
        live.validation(parts, sequence)
    }

    /// Sets each of `hashes` to what the store holds now (sled, after a commit): `read` reads
    /// a table's row as committed.
    pub fn refresh<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a [u8]>,
        read: impl Fn(Table, &[u8]) -> Result<Option<Vec<u8>>>,
    ) -> Result<()> {
        let _turn = self.refreshing.lock().expect("view lock is never poisoned");
        let mut changes = Vec::new();
        for hash in hashes {
            let live = match read(Table::Keys, hash)? {
                Some(record) => {
                    let key = decode::<KeyRecord>(&record)?;
                    org_of(&key, |id| read(Table::Orgs, id.as_bytes()))?
                        .map(|org| Live::new(hash, &key, &org))
                        .transpose()?
                }
                None => None,
            };
            changes.push((hash_of(hash)?, live));
        }
        self.set(changes);
        Ok(())
    }

    /// Applies one revision's writes, in order (etcd's watch). A key whose record does not
    /// carry its org (written by an older replica) is joined with the org the same
    /// transaction wrote (every rule that stores a key writes its org); if that is not among
    /// them, the key is left out: it fails closed, and says so.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn apply(&self, writes: &[Write<'_>]) -> Result<()> {
        let _turn = self.refreshing.lock().expect("view lock is never poisoned");
        let written_org = |id: &str| {
            Ok(writes.iter().rev().find_map(|(table, key, value)| {
                (*table == Table::Orgs && *key == id.as_bytes())
                    .then(|| value.map(<[u8]>::to_vec))?
            }))
        };
        let mut changes = Vec::new();
        for (table, key, value) in writes {
            if *table != Table::Keys {
                continue;
            }
            let live = match value {
                Some(record) => {
                    let record = decode::<KeyRecord>(record)?;
                    match org_of(&record, written_org)? {
                        Some(org) => Some(Live::new(key, &record, &org)?),
                        None => {
                            tracing::error!(key_id = record.key_id, "a key stored without its org");
                            None
                        }
                    }
                }
                None => None,
            };
            changes.push((hash_of(key)?, live));
        }
        self.set(changes);
        Ok(())
    }

    fn set(&self, changes: Vec<([u8; 32], Option<Live>)>) {
        if changes.is_empty() {
            return;
        }
        let mut keys = self.keys.write().expect("view lock is never poisoned");
        for (hash, live) in changes {
            match live {
                Some(live) => keys.replace(live).is_some(),
                None => keys.remove(&hash),
            };
        }
    }

    /// Replaces everything (etcd, after reloading past a compaction).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn replace(&self, other: View) {
        let _turn = self.refreshing.lock().expect("view lock is never poisoned");
        let map = other
            .keys
            .into_inner()
            .expect("view lock is never poisoned");
        *self.keys.write().expect("view lock is never poisoned") = map;
    }
}

/// Rows of the keys table read for [`View::build`]: the live keys, and the records that do
/// not carry their org yet. Parts of the table may be read on threads of their own.
#[derive(Default)]
pub(super) struct Scanned {
    live: Vec<Live>,
    lacking: Vec<([u8; 32], KeyRecord)>,
}

impl Scanned {
    /// Reads `keys`, rows of the keys table (hash, record).
    pub fn read(
        keys: impl IntoIterator<Item = Result<(impl AsRef<[u8]>, impl AsRef<[u8]>)>>,
    ) -> Result<Scanned> {
        let mut scanned = Scanned::default();
        // One record decoded into again and again: its strings keep their buffers.
        let mut key = KeyRecord::default();
        for row in keys {
            let (hash, record) = row?;
            key.clear();
            key.merge(record.as_ref())
                .map_err(|_| Error::internal("corrupt record in storage"))?;
            match &key.org {
                Some(org) => scanned.live.push(Live::new(hash.as_ref(), &key, org)?),
                None => scanned.lacking.push((hash_of(hash.as_ref())?, key.clone())),
            }
        }
        Ok(scanned)
    }

    /// Whether some records read do not carry their org, so that building needs the orgs.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub fn lacks_orgs(&self) -> bool {
        !self.lacking.is_empty()
    }
}

/// What a validation of `key` answers about its org: what the record carries, or else (a
/// record written before keys carried it) its org's record, which `read_org` reads. None: no
/// such org, so the key is not live.
fn org_of(
    key: &KeyRecord,
    read_org: impl FnOnce(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Option<OrgRecord>> {
    if let Some(org) = &key.org {
        return Ok(Some(org.clone()));
    }
    read_org(&key.org_id)?
        .map(|bytes| Ok(decode::<OrgRecord>(&bytes)?.carried()))
        .transpose()
}

fn hash_of(bytes: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| Error::internal("a key row is not a 32-byte hash"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::{Email, KeyId, OrgId, SecretHash};

    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    fn org(n: usize) -> OrgRecord {
        OrgRecord {
            name: format!("Org number {n}"),
            edition: 3,
            created_us: 1_700_000_000_000_000,
            active_key: None,
        }
    }

    /// Key `n` of org `n`, as the service stores it (`carried`: with its org, as this
    /// version writes it; without, as versions before it did).
    fn key(n: usize, carried: bool) -> (Vec<u8>, Vec<u8>) {
        let record = KeyRecord {
            key_id: KeyId::generate().to_string(),
            org_id: format!("{n:0>20}"),
            owner_email: format!("admin@org-{n}.example.com"),
            key_prefix: "zsc_abcd".into(),
            created_us: 1_700_000_000_000_000,
            org: carried.then(|| org(n).carried()),
        };
        let hash = *blake3::hash(&n.to_be_bytes()).as_bytes();
        (hash.to_vec(), record.encode_to_vec())
    }

    fn validate(view: &View, n: usize) -> Result<Validation> {
        let hash = SecretHash(*blake3::hash(&n.to_be_bytes()).as_bytes());
        let owner = Email::from_trusted(format!("admin@org-{n}.example.com"));
        view.validate(&hash, &owner, 7)
    }

    /// A view built from records that carry their org answers the same as one built from
    /// records that do not (joined with their org); only the latter come back completed, and
    /// a key whose org is gone is not live.
    #[test]
    fn records_without_their_org_are_joined_with_it_and_come_back_completed() {
        let keys = [key(1, true), key(2, false), key(3, false), key(4, true)];
        let mut asked = Vec::new();
        let scanned = Scanned::read(keys.iter().cloned().map(Ok)).unwrap();
        let mut completed = Vec::new();
        let view = View::build(
            [scanned],
            |id| {
                asked.push(id.to_owned());
                let n: usize = id.parse().unwrap();
                Ok((n != 3).then(|| org(n).encode_to_vec()))
            },
            |hash, record| {
                completed.push((hash, record));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(asked, [format!("{:0>20}", 2), format!("{:0>20}", 3)]);
        for n in [1, 2, 4] {
            let validation = validate(&view, n).unwrap();
            assert_eq!(validation.org.name, format!("Org number {n}"));
            assert_eq!(validation.org.id.as_str(), format!("{n:0>20}"));
            assert_eq!(validation.sequence, 7);
        }
        assert!(matches!(validate(&view, 3), Err(Error::Unauthenticated(_))));
        assert_eq!(completed.len(), 1);
        let (hash, record) = &completed[0];
        assert_eq!(&hash[..], &key(2, false).0[..]);
        assert_eq!(record.org, Some(org(2).carried()));
        assert_eq!(record.owner_email, "admin@org-2.example.com");
    }

    /// Not a check but a measurement (`cargo test --lib view::tests -- --ignored
    /// --nocapture`): the resident memory 100,000 live keys add, records shaped as the
    /// service makes them, generated on the fly so that only the view stays.
    #[test]
    #[ignore]
    fn bytes_per_live_key() {
        const KEYS: usize = 100_000;
        let before = resident_bytes();
        let keys = (0..KEYS).map(|n| Ok(key(n, true)));
        let view =
            View::build([Scanned::read(keys).unwrap()], |_| Ok(None), |_, _| Ok(())).unwrap();
        let after = resident_bytes();
        let sample = OrgId::generate().to_string().len();
        println!(
            "{KEYS} live keys: {} bytes of RSS, {} bytes per key (org ids here are 20 \
             characters; generated ones are {sample})",
            after - before,
            (after - before) / KEYS as u64
        );
        assert_eq!(view.keys.read().unwrap().len(), KEYS);
    }
}
