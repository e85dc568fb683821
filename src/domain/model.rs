//! The entities and enums of the ZSC rules, and the rules that are pure functions of them.

use std::time::SystemTime;

use super::names::{AccountName, Email, KeyId, OrgId};
use super::secret::SecretHash;

/// Enums with stable numeric codes. The codes equal the proto enum numbers, and storage keeps
/// them too, so they must never be renumbered; 0 is always "unspecified" and never a value.
macro_rules! coded_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn code(self) -> i32 {
                match self { $($name::$variant => $code),+ }
            }

            /// None for 0 (unspecified) and for codes this build does not know.
            pub fn from_code(code: i32) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

coded_enum!(Edition { Free = 1, Standard = 2, Professional = 3, Enterprise = 4 });
coded_enum!(Profile { Administrator = 1, Standard = 2 });
coded_enum!(UserStatus { Active = 1, Deactivated = 2 });
coded_enum!(Role { Operator = 1, Console = 2, Consumer = 3 });
coded_enum!(RevocationReason { Regenerated = 1, OwnerDeactivated = 2, OwnerDemoted = 3, Revoked = 4 });

#[derive(Clone, Debug, PartialEq)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub edition: Edition,
    pub created: SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub email: Email,
    pub org_id: OrgId,
    pub display_name: String,
    pub profile: Profile,
    pub status: UserStatus,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl User {
    /// The ZSC rule: only an active administrator may generate, own or use an org's key.
    pub fn may_hold_key_of(&self, org: &OrgId) -> bool {
        self.org_id == *org
            && self.status == UserStatus::Active
            && self.profile == Profile::Administrator
    }
}

/// Public facts about a key; the secret itself is never kept.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyInfo {
    pub key_id: KeyId,
    pub org_id: OrgId,
    pub owner: Email,
    pub key_prefix: String,
    pub created: SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceAccount {
    pub name: AccountName,
    pub role: Role,
    pub created: SystemTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RevocationEvent {
    pub sequence: u64,
    pub key_id: KeyId,
    pub org_id: OrgId,
    pub owner: Email,
    pub reason: RevocationReason,
    pub revoked: SystemTime,
}

/// An authenticated service account making a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: AccountName,
    pub role: Role,
    /// The hash of the token it authenticated with: a stream that outlives its request checks
    /// that the token still belongs to the account (not deleted, not replaced).
    pub token: SecretHash,
}

/// A successful key validation, and the log head it was read at.
#[derive(Clone, Debug)]
pub struct Validation {
    pub org: Org,
    pub key_id: KeyId,
    pub owner: Email,
    pub sequence: u64,
}

/// What ListOrgs/ListUsers return: a page and, unless it is the last, where the next starts.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The last item's sort key, when more items may follow.
    pub next_after: Option<String>,
}

/// page_size 0 means 100; above 1000 is clamped to 1000.
pub fn page_limit(page_size: i32) -> Result<usize, super::Error> {
    match page_size {
        0 => Ok(100),
        n if n < 0 => Err(super::Error::invalid("page_size must not be negative")),
        n => Ok((n as usize).min(1000)),
    }
}
