//! The sled trees, named once: the `Table` enum, its names on disk and the `Trees` handles all
//! come from the one list below, so a tree cannot exist without being in [`Table::ALL`] (which
//! backups walk) or be named differently in two places.

use crate::domain::{Error, Result};

macro_rules! tables {
    ($($variant:ident => $field:ident: $name:literal, $what:literal;)+) => {
        /// One sled tree of the store.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Table { $($variant),+ }

        impl Table {
            /// Every table, in the order backups write them.
            pub const ALL: &'static [Table] = &[$(Table::$variant),+];

            /// The tree's name on disk and in backups.
            pub fn name(self) -> &'static str {
                match self { $(Table::$variant => $name),+ }
            }

            pub fn from_name(name: &str) -> Option<Table> {
                Table::ALL.iter().copied().find(|t| t.name() == name)
            }

            /// Whether a write to this table changes who a token belongs to or what its
            /// account may do: such writes move the store's accounts generation.
            pub fn holds_accounts(self) -> bool {
                matches!(self, Table::Accounts | Table::Tokens)
            }

            /// Whether backups carry this table. Confirmations are telemetry of the fleet
            /// running against this store, not state: a restore starts a new store_id, which
            /// every Verifier's cursor leaves, so old reports would describe nothing.
            pub fn backed_up(self) -> bool {
                !matches!(self, Table::Confirmations)
            }
        }

        /// An open handle on every tree.
        pub(super) struct Trees { $(#[doc = $what] pub $field: sled::Tree,)+ }

        impl Trees {
            pub fn open(db: &sled::Db) -> Result<Trees> {
                Ok(Trees { $($field: db.open_tree($name).map_err(Error::internal)?,)+ })
            }

            pub fn get(&self, table: Table) -> &sled::Tree {
                match table { $(Table::$variant => &self.$field),+ }
            }
        }
    };
}

tables! {
    Meta => meta: "meta", "store id, log head, operator count, \"initialised\" marker";
    Orgs => orgs: "orgs", "org_id -> `OrgRecord` (including the hash of its active key)";
    OrgNames => org_names: "org_names", "folded name -> org_id (uniqueness)";
    Users => users: "users", "email -> `UserRecord`";
    OrgUsers => org_users: "org_users", "org_id \\0 email -> () (listing)";
    Keys => keys: "keys", "blake3(key) -> `KeyRecord`";
    Accounts => accounts: "accounts", "name -> `AccountRecord`";
    Tokens => tokens: "tokens", "blake3(token) -> name";
    Events => events: "events", "big-endian sequence -> `EventRecord`";
    Audit => audit: "audit", "the audit trail and its org index (`audit.rs`)";
    Usage => usage: "usage", "key_id -> `KeyUsageRecord`, saved validation counts (`usage.rs`)";
    Confirmations => confirmations: "confirmations", "what each Verifier reported applying (`confirmations.rs`); not backed up";
}

/// Keys of the `meta` table.
pub(in crate::store) const META_STORE_ID: &[u8] = b"store_id";
pub(in crate::store) const META_HEAD: &[u8] = b"head";
/// The audit trail's head, in the `audit` table: every audited change writes it, so its
/// `mod_revision` on etcd is a revision every such change has reached (`etcd/barrier.rs`).
pub(in crate::store) const AUDIT_HEAD: &[u8] = b"h";
pub(in crate::store) const META_OPERATORS: &[u8] = b"operators";
pub(in crate::store) const META_INITIALISED: &[u8] = b"initialised";
