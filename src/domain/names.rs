//! Validated identifiers and names: requests are parsed into these at the edge, so a value
//! that exists is valid.

use std::fmt;

use rand::{distr::Alphanumeric, rngs::OsRng, Rng, TryRngCore};

use super::error::{Error, Result};
use super::text;

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest org, display or account name accepted, in characters.
pub const MAX_NAME_LEN: usize = 200;

/// A user's email, lower-cased so that comparisons are case-insensitive.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

impl Email {
    /// A plain `local@domain` address: an ASCII local part, lower-cased, and the domain in its
    /// IDNA ASCII form (A-labels: `bücher.example` is kept and returned as
    /// `xn--bcher-kva.example`), so that each mailbox has exactly one spelling.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        // Already in that spelling (the common case): what the full parse would return.
        if super::plain_email::is_canonical(raw, MAX_EMAIL_LEN) {
            return Ok(Email(raw.to_owned()));
        }
        Self::parse_in_full(field, raw)
    }

    /// [`Email::parse`]'s one definition of an email; `plain_email.rs` only skips it for
    /// addresses it returns unchanged.
    pub(super) fn parse_in_full(field: &str, raw: &str) -> Result<Self> {
        require_present(field, raw)?;
        let too_long =
            || Error::invalid(format!("{field} is longer than {MAX_EMAIL_LEN} characters"));
        if raw.len() > MAX_EMAIL_LEN {
            return Err(too_long());
        }
        if let Some(refused) = text::first_refused(raw, false) {
            return Err(Error::invalid(format!(
                "{field} must not contain {refused}"
            )));
        }
        let not_an_email = || Error::invalid(format!("{field} is not an email address"));
        let (local, domain) = raw.rsplit_once('@').ok_or_else(not_an_email)?;
        if !local.is_ascii() {
            return Err(Error::invalid(format!(
                "{field} must have an ASCII local part (before the '@')"
            )));
        }
        // UTS #46 with the STD3 rules: maps case and width, refuses what DNS cannot hold.
        let domain = idna::domain_to_ascii_strict(domain).map_err(|_| not_an_email())?;
        let address = format!("{}@{domain}", local.to_ascii_lowercase());
        if address.len() > MAX_EMAIL_LEN {
            return Err(too_long());
        }
        // The crate accepts RFC 5322 forms we do not want in an identity key: quoted local
        // parts, comments, display names and whitespace.
        let plain = !local.contains(['"', '(', ')', '<', '>', '\\', '@']);
        if !plain
            || local.is_empty()
            || !domain.contains('.')
            || !email_address::EmailAddress::is_valid(&address)
        {
            return Err(not_an_email());
        }
        Ok(Email(address))
    }

    /// For values read back from storage, which were parsed when they were written.
    pub fn from_trusted(stored: String) -> Self {
        Email(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The address itself, moved (no copy, unlike `to_string`).
impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
    }
}

/// A human-readable name: an org's, a user's display name, or a service account's.
#[derive(Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Refuses invisible, separator, private-use, unassigned and control characters and
    /// surrounding spaces; keeps the name in NFC.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        require_present(field, raw)?;
        if let Some(refused) = text::first_refused(raw, true) {
            return Err(Error::invalid(format!(
                "{field} must not contain {refused}"
            )));
        }
        let name = text::nfc(raw);
        if name.chars().count() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "{field} is longer than {MAX_NAME_LEN} characters"
            )));
        }
        if name.trim() != name {
            return Err(Error::invalid(format!(
                "{field} must not have surrounding spaces"
            )));
        }
        Ok(Name(name))
    }

    /// The form uniqueness is checked on: org names are unique whatever their case or their
    /// Unicode composition (the name is NFC already; lower-casing can decompose, so again).
    pub fn folded(&self) -> String {
        text::nfc(&self.0.to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A service account's name: also what logs show as the caller, so kept to a safe alphabet.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(raw: &str) -> Result<Self> {
        let name = Name::parse("name", raw)?;
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(Error::invalid(
                "name may only have letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(AccountName(name.into_string()))
    }

    pub fn from_trusted(stored: String) -> Self {
        AccountName(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server-assigned public ids: `org_...` for orgs, `zk_...` for keys.
macro_rules! public_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, random_base62(ID_RANDOM_CHARS)))
            }

            /// Any well-formed id; whether it exists is the store's question.
            pub fn parse(field: &str, raw: &str) -> Result<Self> {
                require_present(field, raw)?;
                let ok = raw.strip_prefix($prefix).is_some_and(|rest| {
                    rest.len() == ID_RANDOM_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                });
                if !ok {
                    return Err(Error::invalid(format!("{field} is not {}", $what)));
                }
                Ok($name(raw.to_owned()))
            }

            pub fn from_trusted(stored: String) -> Self {
                $name(stored)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// The text itself, moved (no copy, unlike `to_string`).
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

/// 16 base62 characters: 95 bits, ample for ids that are public and never guessed at.
const ID_RANDOM_CHARS: usize = 16;

public_id!(OrgId, "org_", "an org id (org_...)");
public_id!(KeyId, "zk_", "a key id (zk_...)");

/// Characters from the OS CSPRNG, uniformly over [0-9A-Za-z].
pub fn random_base62(len: usize) -> String {
    OsRng
        .unwrap_err()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn require_present(field: &str, raw: &str) -> Result<()> {
    if raw.is_empty() {
        Err(Error::invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Debug for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_fast_path_has_the_same_length_limit() {
        let local = "a".repeat(64);
        let domain = format!(
            "{}.{}.{}.example",
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(MAX_EMAIL_LEN - 64 - 1 - 122 - 8)
        );
        let longest = format!("{local}@{domain}");
        assert_eq!(longest.len(), MAX_EMAIL_LEN);
        assert!(super::super::plain_email::is_canonical(
            &longest,
            MAX_EMAIL_LEN
        ));
        assert_eq!(
            Email::parse_in_full("email", &longest).unwrap().as_str(),
            longest
        );
        let over = format!("{local}@e{domain}");
        assert!(!super::super::plain_email::is_canonical(
            &over,
            MAX_EMAIL_LEN
        ));
        assert!(Email::parse("email", &over).is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("email", "Ada@Example.COM").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "\"a\"@example.com",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(
            matches!(Email::parse("email", &long), Err(Error::InvalidArgument(m)) if m.contains("254"))
        );
    }

    #[test]
    fn names_are_bounded() {
        assert!(Name::parse("name", &"x".repeat(200)).is_ok());
        assert!(Name::parse("name", &"x".repeat(201)).is_err());
        assert!(Name::parse("name", " padded").is_err());
        assert!(AccountName::parse("desk-prod_1.eu").is_ok());
        assert!(AccountName::parse("desk prod").is_err());
    }

    #[test]
    fn invisible_and_bidirectional_characters_are_refused_in_names() {
        for bad in [
            "Acme\u{200B}",
            "Ac\u{200D}me",
            "\u{202E}emcA",
            "Acme\u{2066}",
            "Acme\u{E000}",
            "Acme\u{0378}",
            "Acme\u{2028}Corp",
            "Acme\u{00A0}Corp",
            "Acme\u{3000}Corp",
            "Acme\tCorp",
        ] {
            let error = Name::parse("name", bad).unwrap_err().to_string();
            assert!(error.contains("must not contain U+"), "{bad:?}: {error}");
        }
        assert!(Name::parse("name", "Acme Corp").is_ok());
        assert!(Name::parse("name", "Zoë & Søn 株式会社").is_ok());
    }

    #[test]
    fn names_are_kept_in_nfc_and_fold_across_compositions() {
        let composed = Name::parse("name", "Caf\u{00E9}").unwrap();
        let decomposed = Name::parse("name", "Cafe\u{0301}").unwrap();
        assert_eq!(decomposed.as_str(), "Caf\u{00E9}");
        assert_eq!(composed.folded(), decomposed.folded());
        assert_eq!(
            Name::parse("name", "CAFE\u{0301}").unwrap().folded(),
            composed.folded()
        );
        // 200 characters once composed: the limit counts what is stored.
        let long = format!("{}{}", "e\u{0301}".repeat(100), "x".repeat(100));
        assert!(Name::parse("name", &long).is_ok());
    }

    #[test]
    fn invisible_characters_are_refused_in_emails() {
        for bad in [
            "ada\u{200B}@acme.example",
            "ada@acme\u{200B}.example",
            "\u{202E}ada@acme.example",
            "ada@acme.example\u{FEFF}",
            "ada\u{E000}@acme.example",
            "ada@acme.exa\u{0378}mple",
            "ada\u{00A0}@acme.example",
            "ada@acme.example\n",
        ] {
            let error = Email::parse("email", bad).unwrap_err().to_string();
            assert!(error.contains("must not contain U+"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn email_local_parts_are_ascii_and_domains_idna() {
        let error = Email::parse("email", "zoë@acme.example").unwrap_err();
        assert!(error.to_string().contains("ASCII local part"), "{error}");
        assert_eq!(
            Email::parse("email", "Ada@Bücher.Example")
                .unwrap()
                .as_str(),
            "ada@xn--bcher-kva.example"
        );
        // Composed or not, in A-label or U-label form: one mailbox, one spelling.
        assert_eq!(
            Email::parse("email", "ada@bu\u{0308}cher.example").unwrap(),
            Email::parse("email", "ada@xn--bcher-kva.example").unwrap()
        );
        for bad in ["ada@ex_ample.com", "ada@-acme.example", "ada@acme..example"] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_round_trip() {
        let id = OrgId::generate();
        assert_eq!(OrgId::parse("org_id", id.as_str()).unwrap(), id);
        assert!(OrgId::parse("org_id", "org_short").is_err());
        assert!(OrgId::parse("org_id", KeyId::generate().as_str()).is_err());
    }

    mod properties {
        use proptest::prelude::*;
        use unicode_normalization::UnicodeNormalization;

        use super::super::*;

        /// Names made of what people type, plus the characters the rules are about.
        fn name_like() -> impl Strategy<Value = String> {
            "[A-Za-z0-9 éÉüß中\u{0301}\u{0308}\u{200B}\u{202E}\u{00A0}\u{E000}\u{0378}.&-]{0,24}"
        }

        fn email_like() -> impl Strategy<Value = String> {
            "[A-Za-z0-9._+-]{0,12}[@]?[A-Za-z0-9.ü\u{0308}\u{200B}-]{0,16}(\\.[a-zA-Z]{2,4})?"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parsing_never_panics(raw in "\\PC{0,64}", name in name_like(), email in email_like()) {
                for text in [&raw, &name, &email] {
                    let _ = Name::parse("name", text);
                    let _ = AccountName::parse(text);
                    let _ = Email::parse("email", text);
                }
            }

            #[test]
            fn name_normalisation_is_idempotent(raw in name_like()) {
                if let Ok(name) = Name::parse("name", &raw) {
                    let again = Name::parse("name", name.as_str()).unwrap();
                    prop_assert_eq!(again.as_str(), name.as_str());
                    prop_assert_eq!(again.folded(), name.folded());
                    prop_assert!(name.as_str().chars().all(|c| crate::domain::text::refused(c, true).is_none()));
                }
            }

            #[test]
            fn nfc_and_nfd_spellings_fold_alike(raw in name_like()) {
                let nfd: String = raw.nfd().collect();
                match (Name::parse("name", &raw), Name::parse("name", &nfd)) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a.folded(), b.folded()),
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
                }
            }

            #[test]
            fn email_normalisation_is_idempotent(raw in email_like()) {
                if let Ok(email) = Email::parse("email", &raw) {
                    let again = Email::parse("email", email.as_str()).unwrap();
                    prop_assert_eq!(&again, &email);
                    prop_assert!(email.as_str().is_ascii());
                    prop_assert!(email.as_str().len() <= MAX_EMAIL_LEN);
                }
            }
        }
    }
}
