//! Between the wire and the domain: requests are parsed into domain types here, and domain
//! values are turned into proto messages.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use prost_types::Timestamp;

use crate::domain::{self, Error, Result};
use crate::proto as pb;

/// A proto enum field: 0 (UNSPECIFIED) and unknown numbers are INVALID_ARGUMENT.
pub fn enum_field<E>(field: &str, code: i32, from_code: fn(i32) -> Option<E>) -> Result<E> {
    match from_code(code) {
        Some(value) => Ok(value),
        None if code == 0 => Err(Error::invalid(format!("{field} is required"))),
        None => Err(Error::invalid(format!("{field} has unknown value {code}"))),
    }
}

/// Page tokens are opaque to clients: the kind of listing, its scope, and the last item sent.
pub fn page_token(scope: &str, after: Option<String>) -> String {
    after.map_or_else(String::new, |after| {
        URL_SAFE_NO_PAD.encode(format!("{scope}\n{after}"))
    })
}

/// Where the page a token asks for starts; a token from another listing is INVALID_ARGUMENT.
pub fn parse_page_token(scope: &str, token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token is not a token this listing returned");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    match text.split_once('\n') {
        Some((s, after)) if s == scope && !after.is_empty() => Ok(Some(after.to_owned())),
        _ => Err(invalid()),
    }
}

/// A role as the proto names it (domain codes are the proto's numbers), for messages.
pub fn role_name(role: domain::Role) -> &'static str {
    pb::Role::try_from(role.code()).map_or("ROLE_UNSPECIFIED", |r| r.as_str_name())
}

/// A revocation reason as the proto names it, for metric labels.
pub fn reason_name(reason: domain::RevocationReason) -> &'static str {
    pb::RevocationReason::try_from(reason.code())
        .map_or("REVOCATION_REASON_UNSPECIFIED", |r| r.as_str_name())
}

fn ts(t: std::time::SystemTime) -> Option<Timestamp> {
    Some(Timestamp::from(t))
}

impl From<domain::Org> for pb::Org {
    fn from(org: domain::Org) -> Self {
        pb::Org {
            org_id: org.id.into(),
            name: org.name,
            edition: org.edition.code(),
            create_time: ts(org.created),
        }
    }
}

impl From<domain::User> for pb::User {
    fn from(user: domain::User) -> Self {
        pb::User {
            email: user.email.to_string(),
            org_id: user.org_id.to_string(),
            display_name: user.display_name,
            profile: user.profile.code(),
            status: user.status.code(),
            create_time: ts(user.created),
            update_time: ts(user.updated),
        }
    }
}

impl From<domain::KeyInfo> for pb::KeyInfo {
    fn from(info: domain::KeyInfo) -> Self {
        pb::KeyInfo {
            key_id: info.key_id.to_string(),
            org_id: info.org_id.to_string(),
            owner_email: info.owner.to_string(),
            key_prefix: info.key_prefix,
            create_time: ts(info.created),
            usage: Vec::new(),
        }
    }
}

impl From<domain::KeyUsage> for pb::KeyUsage {
    fn from(usage: domain::KeyUsage) -> Self {
        pb::KeyUsage {
            consumer: usage.consumer.to_string(),
            validations: usage.validations,
            last_validated_time: ts(usage.last_validated),
        }
    }
}

impl From<domain::AuditEvent> for pb::AuditEvent {
    fn from(event: domain::AuditEvent) -> Self {
        pb::AuditEvent {
            sequence: event.sequence,
            time: ts(event.time),
            caller: event.caller.to_string(),
            caller_role: event.caller_role.code(),
            actor_email: event.actor.map(|a| a.to_string()).unwrap_or_default(),
            action: event.action.code(),
            org_id: event.org_id.map(|o| o.to_string()).unwrap_or_default(),
            target: event.target,
            revocation_sequence: event.revocation_sequence.unwrap_or(0),
        }
    }
}

/// A request's optional time bound: unset is None. A timestamp outside the range
/// google.protobuf.Timestamp defines (years 1 to 9999, nanos below one second) is
/// INVALID_ARGUMENT.
pub fn time_field(field: &str, value: Option<Timestamp>) -> Result<Option<std::time::SystemTime>> {
    const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let Some(t) = value else { return Ok(None) };
    let invalid = || Error::invalid(format!("{field} is not a valid timestamp"));
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid());
    }
    std::time::SystemTime::try_from(t)
        .map(Some)
        .map_err(|_| invalid())
}

impl From<domain::ServiceAccount> for pb::ServiceAccount {
    fn from(account: domain::ServiceAccount) -> Self {
        pb::ServiceAccount {
            name: account.name.to_string(),
            role: account.role.code(),
            create_time: ts(account.created),
        }
    }
}

impl From<domain::RevocationEvent> for pb::RevocationEvent {
    fn from(event: domain::RevocationEvent) -> Self {
        pb::RevocationEvent {
            sequence: event.sequence,
            key_id: event.key_id.to_string(),
            org_id: event.org_id.to_string(),
            owner_email: event.owner.to_string(),
            reason: event.reason.code(),
            revoke_time: ts(event.revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_are_scoped() {
        let token = page_token("orgs", Some("org_abc".into()));
        assert_eq!(
            parse_page_token("orgs", &token).unwrap().as_deref(),
            Some("org_abc")
        );
        assert!(parse_page_token("users:org_x", &token).is_err());
        assert!(parse_page_token("orgs", "!!not base64").is_err());
        assert_eq!(page_token("orgs", None), "");
        assert_eq!(parse_page_token("orgs", "").unwrap(), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parsing_any_token_never_panics(token in "\\PC{0,64}", b64 in "[A-Za-z0-9_-]{0,64}") {
                let _ = parse_page_token("orgs", &token);
                let _ = parse_page_token("orgs", &b64);
            }

            #[test]
            fn a_token_parses_to_where_it_was_made(scope in "[a-z:_0-9]{1,30}", after in "\\PC{1,80}") {
                let token = page_token(&scope, Some(after.clone()));
                prop_assert_eq!(parse_page_token(&scope, &token).unwrap(), Some(after));
            }

            #[test]
            fn a_token_is_refused_by_any_other_listing(scope in "[a-z:_0-9]{1,30}", other in "[a-z:_0-9]{1,30}", after in "\\PC{1,80}") {
                prop_assume!(scope != other);
                let token = page_token(&scope, Some(after));
                prop_assert!(parse_page_token(&other, &token).is_err());
            }
        }
    }
}
