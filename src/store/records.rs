//! How entities are laid out on disk: prost messages, so that a field can be added later
//! without a migration. Enum fields hold the domain's stable codes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::domain::{
    AccountName, AuditAction, AuditEvent, Edition, Email, Error, KeyId, KeyInfo, Org, OrgId,
    Profile, Result, RevocationEvent, RevocationReason, Role, ServiceAccount, User, UserStatus,
};

#[derive(Clone, PartialEq, Message)]
pub(super) struct OrgRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub edition: i32,
    #[prost(int64, tag = "3")]
    pub created_us: i64,
    /// Hash of the org's active key: an org has at most one.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub active_key: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct UserRecord {
    #[prost(string, tag = "1")]
    pub org_id: String,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(int32, tag = "3")]
    pub profile: i32,
    #[prost(int32, tag = "4")]
    pub status: i32,
    #[prost(int64, tag = "5")]
    pub created_us: i64,
    #[prost(int64, tag = "6")]
    pub updated_us: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct KeyRecord {
    #[prost(string, tag = "1")]
    pub key_id: String,
    #[prost(string, tag = "2")]
    pub org_id: String,
    #[prost(string, tag = "3")]
    pub owner_email: String,
    #[prost(string, tag = "4")]
    pub key_prefix: String,
    #[prost(int64, tag = "5")]
    pub created_us: i64,
    /// What a validation answers about the key's org. No rule changes an org's name, edition
    /// or creation time after CreateOrg, so the key can carry them, and the validation view
    /// is built from the keys table alone (issue 15). Absent in records written before this
    /// field: the view joins those with their org (`view.rs`), and a sled store rewrites them
    /// with it when it opens.
    /// Written by [`OrgRecord::carried`].
    #[prost(message, optional, tag = "6")]
    pub org: Option<OrgRecord>,
}

impl OrgRecord {
    /// What a key of this org carries (`KeyRecord::org`): all but the active key's hash.
    pub fn carried(&self) -> OrgRecord {
        OrgRecord {
            active_key: None,
            ..self.clone()
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct AccountRecord {
    #[prost(int32, tag = "1")]
    pub role: i32,
    #[prost(int64, tag = "2")]
    pub created_us: i64,
    #[prost(bytes = "vec", tag = "3")]
    pub token_hash: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct EventRecord {
    #[prost(string, tag = "1")]
    pub key_id: String,
    #[prost(string, tag = "2")]
    pub org_id: String,
    #[prost(string, tag = "3")]
    pub owner_email: String,
    #[prost(int32, tag = "4")]
    pub reason: i32,
    #[prost(int64, tag = "5")]
    pub revoked_us: i64,
}

pub(super) fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(Error::internal)
}

pub(super) fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub(super) fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// A stored code this build does not know means the data dir was written by something else.
fn code<T>(what: &str, decoded: Option<T>) -> Result<T> {
    decoded.ok_or_else(|| Error::internal(format!("corrupt {what} code in storage")))
}

impl OrgRecord {
    pub fn to_org(&self, id: OrgId) -> Result<Org> {
        Ok(Org {
            id,
            name: self.name.clone(),
            edition: code("edition", Edition::from_code(self.edition))?,
            created: from_micros(self.created_us),
        })
    }
}

impl UserRecord {
    pub fn from_user(user: &User) -> Self {
        UserRecord {
            org_id: user.org_id.to_string(),
            display_name: user.display_name.clone(),
            profile: user.profile.code(),
            status: user.status.code(),
            created_us: micros(user.created),
            updated_us: micros(user.updated),
        }
    }

    pub fn to_user(&self, email: Email) -> Result<User> {
        Ok(User {
            email,
            org_id: OrgId::from_trusted(self.org_id.clone()),
            display_name: self.display_name.clone(),
            profile: code("profile", Profile::from_code(self.profile))?,
            status: code("status", UserStatus::from_code(self.status))?,
            created: from_micros(self.created_us),
            updated: from_micros(self.updated_us),
        })
    }
}

impl KeyRecord {
    /// The record of a key of `org`.
    pub fn new(info: &KeyInfo, org: &OrgRecord) -> Self {
        KeyRecord {
            key_id: info.key_id.to_string(),
            org_id: info.org_id.to_string(),
            owner_email: info.owner.to_string(),
            key_prefix: info.key_prefix.clone(),
            created_us: micros(info.created),
            org: Some(org.carried()),
        }
    }

    pub fn to_info(&self) -> KeyInfo {
        KeyInfo {
            key_id: KeyId::from_trusted(self.key_id.clone()),
            org_id: OrgId::from_trusted(self.org_id.clone()),
            owner: Email::from_trusted(self.owner_email.clone()),
            key_prefix: self.key_prefix.clone(),
            created: from_micros(self.created_us),
        }
    }
}

impl AccountRecord {
    pub fn to_account(&self, name: AccountName) -> Result<ServiceAccount> {
        Ok(ServiceAccount {
            name,
            role: code("role", Role::from_code(self.role))?,
            created: from_micros(self.created_us),
        })
    }
}

impl EventRecord {
    pub fn from_event(event: &RevocationEvent) -> Self {
        EventRecord {
            key_id: event.key_id.to_string(),
            org_id: event.org_id.to_string(),
            owner_email: event.owner.to_string(),
            reason: event.reason.code(),
            revoked_us: micros(event.revoked),
        }
    }

    pub fn to_event(&self, sequence: u64) -> Result<RevocationEvent> {
        Ok(RevocationEvent {
            sequence,
            key_id: KeyId::from_trusted(self.key_id.clone()),
            org_id: OrgId::from_trusted(self.org_id.clone()),
            owner: Email::from_trusted(self.owner_email.clone()),
            reason: code("reason", RevocationReason::from_code(self.reason))?,
            revoked: from_micros(self.revoked_us),
        })
    }
}

/// The current time at the precision storage keeps (microseconds), so that what a mutation
/// returns equals what a later read returns.
pub(super) fn now() -> SystemTime {
    from_micros(micros(SystemTime::now()))
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct AuditRecord {
    #[prost(int64, tag = "1")]
    pub time_us: i64,
    #[prost(string, tag = "2")]
    pub caller: String,
    #[prost(int32, tag = "3")]
    pub caller_role: i32,
    #[prost(string, optional, tag = "4")]
    pub actor_email: Option<String>,
    #[prost(int32, tag = "5")]
    pub action: i32,
    #[prost(string, optional, tag = "6")]
    pub org_id: Option<String>,
    #[prost(string, tag = "7")]
    pub target: String,
    #[prost(uint64, optional, tag = "8")]
    pub revocation_sequence: Option<u64>,
}

impl AuditRecord {
    pub fn from_event(event: &AuditEvent) -> Self {
        AuditRecord {
            time_us: micros(event.time),
            caller: event.caller.to_string(),
            caller_role: event.caller_role.code(),
            actor_email: event.actor.as_ref().map(ToString::to_string),
            action: event.action.code(),
            org_id: event.org_id.as_ref().map(ToString::to_string),
            target: event.target.clone(),
            revocation_sequence: event.revocation_sequence,
        }
    }

    pub fn to_event(&self, sequence: u64) -> Result<AuditEvent> {
        Ok(AuditEvent {
            sequence,
            time: from_micros(self.time_us),
            caller: AccountName::from_trusted(self.caller.clone()),
            caller_role: code("role", Role::from_code(self.caller_role))?,
            actor: self.actor_email.clone().map(Email::from_trusted),
            action: code("audit action", AuditAction::from_code(self.action))?,
            org_id: self.org_id.clone().map(OrgId::from_trusted),
            target: self.target.clone(),
            revocation_sequence: self.revocation_sequence,
        })
    }
}

/// One key's saved validation counts: an entry per service account (`usage.rs`).
#[derive(Clone, PartialEq, Message)]
pub(super) struct KeyUsageRecord {
    #[prost(message, repeated, tag = "1")]
    pub consumers: Vec<ConsumerUsageRecord>,
}

/// One service account's validations of one key, as last saved.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ConsumerUsageRecord {
    #[prost(string, tag = "1")]
    pub consumer: String,
    #[prost(uint64, tag = "2")]
    pub validations: u64,
    #[prost(int64, tag = "3")]
    pub last_us: i64,
}

/// One service account's validations of one key, as stores made before [`KeyUsageRecord`]
/// saved them: a row per (key, account).
#[derive(Clone, PartialEq, Message)]
pub(super) struct UsageRecord {
    #[prost(uint64, tag = "1")]
    pub validations: u64,
    #[prost(int64, tag = "2")]
    pub last_us: i64,
}

/// A service's latest confirmation state, as merged from every replica's flushes.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ConfirmationRecord {
    /// The sequence its latest report (by receipt time) said it had applied.
    #[prost(uint64, tag = "1")]
    pub applied: u64,
    /// When that report was received (0: it never reported, only streamed).
    #[prost(int64, tag = "2")]
    pub reported_us: i64,
    /// The last time it reported or held a revocation stream open on some replica.
    #[prost(int64, tag = "3")]
    pub seen_us: i64,
}

/// Every record type decoded from `bytes` and turned into its domain value: an error at worst,
/// never a panic. For the property tests and the `records` fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_any(bytes: &[u8]) {
    if let Ok(org) = decode::<OrgRecord>(bytes) {
        let _ = org.to_org(OrgId::from_trusted("org_x".into()));
    }
    if let Ok(user) = decode::<UserRecord>(bytes) {
        let _ = user.to_user(Email::from_trusted("a@b.c".into()));
    }
    if let Ok(key) = decode::<KeyRecord>(bytes) {
        let _ = key.to_info();
    }
    if let Ok(account) = decode::<AccountRecord>(bytes) {
        let _ = account.to_account(AccountName::from_trusted("a".into()));
    }
    if let Ok(event) = decode::<EventRecord>(bytes) {
        let _ = event.to_event(1);
    }
    if let Ok(entry) = decode::<AuditRecord>(bytes) {
        let _ = entry.to_event(1);
    }
    let _ = decode::<UsageRecord>(bytes);
    let _ = decode::<KeyUsageRecord>(bytes);
    let _ = decode::<ConfirmationRecord>(bytes);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn org_record() -> impl Strategy<Value = OrgRecord> {
        (
            "\\PC{0,40}",
            any::<i32>(),
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        )
            .prop_map(|(name, edition, created_us, active_key)| OrgRecord {
                name,
                edition,
                created_us,
                active_key,
            })
    }

    fn user_record() -> impl Strategy<Value = UserRecord> {
        (
            "\\PC{0,30}",
            "\\PC{0,30}",
            any::<i32>(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(
                |(org_id, display_name, profile, status, created_us, updated_us)| UserRecord {
                    org_id,
                    display_name,
                    profile,
                    status,
                    created_us,
                    updated_us,
                },
            )
    }

    fn event_record() -> impl Strategy<Value = EventRecord> {
        (
            "\\PC{0,30}",
            "\\PC{0,30}",
            "\\PC{0,30}",
            any::<i32>(),
            any::<i64>(),
        )
            .prop_map(
                |(key_id, org_id, owner_email, reason, revoked_us)| EventRecord {
                    key_id,
                    org_id,
                    owner_email,
                    reason,
                    revoked_us,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            decode_any(&bytes);
        }

        #[test]
        fn records_decode_to_what_was_encoded(org in org_record(), user in user_record(), event in event_record()) {
            prop_assert_eq!(decode::<OrgRecord>(&org.encode_to_vec()).unwrap(), org.clone());
            prop_assert_eq!(decode::<UserRecord>(&user.encode_to_vec()).unwrap(), user.clone());
            prop_assert_eq!(decode::<EventRecord>(&event.encode_to_vec()).unwrap(), event.clone());
            decode_any(&org.encode_to_vec());
            decode_any(&user.encode_to_vec());
        }

        /// A stored code this build does not know is reported as corrupt storage, not guessed at.
        #[test]
        fn unknown_codes_are_errors(org in org_record()) {
            let known = Edition::from_code(org.edition).is_some();
            prop_assert_eq!(org.to_org(OrgId::from_trusted("org_x".into())).is_ok(), known);
        }

        #[test]
        fn times_round_trip_at_microseconds(us in 0i64..i64::MAX / 2) {
            prop_assert_eq!(micros(from_micros(us)), us);
        }
    }
}
