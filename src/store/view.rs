//! The validation view: every live key by its hash, with what a successful ValidateKey
//! answers, held in memory so that a validation reads no storage at all.
//!
//! A key is live while its row is in the keys table: the rules delete it in the same
//! transaction that revokes, regenerates it or takes the right to hold it from its owner
//! (deactivation, demotion), and no rule stores a key for anyone but an active administrator
//! of its org (`keys.rs`). So the view is the keys table joined with the orgs it names, and
//! the property test below checks that it answers exactly what the store's own reads answer.
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
//! Compact: per key, its 32-byte hash, the org's creation time and edition, and one heap
//! string holding the org id, the org's name, the key id and the owner's email.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{Mutex, RwLock},
};

use super::records::{decode, from_micros, KeyRecord, OrgRecord};
use super::tables::Table;
use crate::domain::{Edition, Email, Error, KeyId, Org, OrgId, Result, SecretHash, Validation};

/// What a successful validation of one key answers (but the head), packed.
struct Live {
    org_created_us: i64,
    /// `org_id`, org name, `key_id`, owner email, one after the other.
    text: Box<str>,
    /// Where the org name, the key id and the email start in `text`.
    cuts: [u16; 3],
    edition: i8,
}

impl Live {
    fn new(key: &KeyRecord, org: &OrgRecord) -> Result<Live> {
        let parts = [&key.org_id, &org.name, &key.key_id, &key.owner_email];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut cuts = [0u16; 3];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                cuts[i - 1] = u16::try_from(text.len()).map_err(Error::internal)?;
            }
            text.push_str(part);
        }
        u16::try_from(text.len()).map_err(Error::internal)?;
        Ok(Live {
            org_created_us: org.created_us,
            text: text.into_boxed_str(),
            cuts,
            edition: i8::try_from(org.edition).map_err(Error::internal)?,
        })
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.cuts[i - 1] as usize };
        let end = self.cuts.get(i).map_or(self.text.len(), |&c| c as usize);
        &self.text[start..end]
    }

    fn validation(&self, sequence: u64) -> Result<Validation> {
        let edition = Edition::from_code(self.edition.into())
            .ok_or_else(|| Error::internal("corrupt edition code in storage"))?;
        Ok(Validation {
            org: Org {
                id: OrgId::from_trusted(self.part(0).to_owned()),
                name: self.part(1).to_owned(),
                edition,
                created: from_micros(self.org_created_us),
            },
            key_id: KeyId::from_trusted(self.part(2).to_owned()),
            owner: Email::from_trusted(self.part(3).to_owned()),
            sequence,
        })
    }
}

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

type Keys = HashMap<[u8; 32], Live, BuildHasherDefault<TakeBytes>>;

/// The live keys of one store, in memory. See the module docs for how it stays current.
#[derive(Default)]
pub(super) struct View {
    keys: RwLock<Keys>,
    /// Held by whoever reads the store to change the view, so that changes apply in the order
    /// they were read.
    refreshing: Mutex<()>,
}

impl View {
    /// Builds the view from every key and the orgs they name.
    pub fn build(
        keys: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        mut org: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
    ) -> Result<View> {
        let mut map = Keys::default();
        for (hash, record) in keys {
            let key = decode::<KeyRecord>(&record)?;
            if let Some(org_bytes) = org(&key.org_id)? {
                let live = Live::new(&key, &decode::<OrgRecord>(&org_bytes)?)?;
                map.insert(hash_of(&hash)?, live);
            }
        }
        map.shrink_to_fit();
        Ok(View {
            keys: RwLock::new(map),
            refreshing: Mutex::new(()),
        })
    }

    /// Whether `hash` is a live key held by `email`, and what validating it answers.
    /// `sequence` is the log head the caller read before this call.
    pub fn validate(&self, hash: &SecretHash, email: &Email, sequence: u64) -> Result<Validation> {
        let denied = || Error::Unauthenticated(crate::domain::INVALID_EMAIL_OR_KEY);
        let keys = self.keys.read().expect("view lock is never poisoned");
        let live = keys.get(&hash.0).ok_or_else(denied)?;
        if live.part(3) != email.as_str() {
            return Err(denied());
        }
        live.validation(sequence)
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
                    match read(Table::Orgs, key.org_id.as_bytes())? {
                        Some(org) => Some(Live::new(&key, &decode::<OrgRecord>(&org)?)?),
                        None => None,
                    }
                }
                None => None,
            };
            changes.push((hash_of(hash)?, live));
        }
        self.set(changes);
        Ok(())
    }

    /// Applies one revision's writes, in order (etcd's watch): a key stored in it is joined
    /// with its org, which the same transaction wrote (every rule that stores a key writes
    /// its org). A key whose org is not among them is left out: it fails closed, and says so.
    pub fn apply(&self, writes: &[(Table, &[u8], Option<&[u8]>)]) -> Result<()> {
        let _turn = self.refreshing.lock().expect("view lock is never poisoned");
        let org = |id: &str| {
            writes.iter().rev().find_map(|(table, key, value)| {
                (*table == Table::Orgs && *key == id.as_bytes()).then_some(*value)?
            })
        };
        let mut changes = Vec::new();
        for (table, key, value) in writes {
            if *table != Table::Keys {
                continue;
            }
            let live = match value {
                Some(record) => {
                    let record = decode::<KeyRecord>(record)?;
                    match org(&record.org_id) {
                        Some(org) => Some(Live::new(&record, &decode::<OrgRecord>(org)?)?),
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
                Some(live) => keys.insert(hash, live),
                None => keys.remove(&hash),
            };
        }
    }

    /// Replaces everything (etcd, after reloading past a compaction).
    pub fn replace(&self, other: View) {
        let _turn = self.refreshing.lock().expect("view lock is never poisoned");
        let map = other
            .keys
            .into_inner()
            .expect("view lock is never poisoned");
        *self.keys.write().expect("view lock is never poisoned") = map;
    }
}

fn hash_of(bytes: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| Error::internal("a key row is not a 32-byte hash"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::{Email, KeyId, OrgId};

    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Not a check but a measurement (`cargo test --lib view::tests -- --ignored
    /// --nocapture`): the resident memory 100,000 live keys add, records shaped as the
    /// service makes them, generated on the fly so that only the view stays.
    #[test]
    #[ignore]
    fn bytes_per_live_key() {
        const KEYS: usize = 100_000;
        let before = resident_bytes();
        let org = |n: usize| OrgRecord {
            name: format!("Org number {n}"),
            edition: 3,
            created_us: 1_700_000_000_000_000,
            active_key: None,
        };
        let keys = (0..KEYS).map(|n| {
            let record = KeyRecord {
                key_id: KeyId::generate().to_string(),
                org_id: format!("{n:0>20}"),
                owner_email: Email::from_trusted(format!("admin@org-{n}.example.com")).to_string(),
                key_prefix: "zsc_abcd".into(),
                created_us: 1_700_000_000_000_000,
            };
            let hash = *blake3::hash(&n.to_be_bytes()).as_bytes();
            (hash.to_vec(), record.encode_to_vec())
        });
        let view = View::build(keys, |id| {
            let n: usize = id.parse().unwrap();
            Ok(Some(org(n).encode_to_vec()))
        })
        .unwrap();
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
