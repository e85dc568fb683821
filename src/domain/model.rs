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
coded_enum!(
    /// What a change recorded in the audit trail did.
    AuditAction {
        OrgCreated = 1,
        UserCreated = 2,
        UserProfileChanged = 3,
        UserDeactivated = 4,
        UserReactivated = 5,
        KeyGenerated = 6,
        KeyRegenerated = 7,
        KeyRevoked = 8,
        ServiceAccountCreated = 9,
        ServiceAccountDeleted = 10,
        OperatorTokenRotated = 11,
        StoreRestored = 12,
    }
);

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

/// The caller the audit trail names for the offline commands (`zsc operator-token`,
/// `zsc restore`) and for the store's own first start. No service account may take the name.
pub const CLI_CALLER: &str = "zsc-cli";

impl Caller {
    /// The offline commands, acting with an operator's power.
    pub fn cli() -> Caller {
        Caller {
            name: AccountName::from_trusted(CLI_CALLER.to_owned()),
            role: Role::Operator,
            // No token hashes to all zeros: the offline commands hold no token.
            token: super::SecretHash([0; 32]),
        }
    }
}

/// One entry of the audit trail: who changed what, when. Never a secret.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub sequence: u64,
    pub time: SystemTime,
    pub caller: AccountName,
    pub caller_role: Role,
    /// The administrator the console acted for, when the request named one.
    pub actor: Option<Email>,
    pub action: AuditAction,
    pub org_id: Option<OrgId>,
    /// A user's email, a key_id or a service account's name.
    pub target: String,
    /// The revocation this change appended to the revocation log.
    pub revocation_sequence: Option<u64>,
}

/// Which audit entries a listing wants.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub org_id: Option<OrgId>,
    /// Any of these (all when empty).
    pub actions: Vec<AuditAction>,
    /// At or after.
    pub since: Option<SystemTime>,
    /// Before.
    pub until: Option<SystemTime>,
}

impl AuditFilter {
    pub fn matches(&self, event: &AuditEvent) -> bool {
        (self.actions.is_empty() || self.actions.contains(&event.action))
            && self.since.is_none_or(|since| event.time >= since)
            && self.until.is_none_or(|until| event.time < until)
    }
}

/// One service account's successful validations of a key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyUsage {
    pub consumer: AccountName,
    pub validations: u64,
    pub last_validated: SystemTime,
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
