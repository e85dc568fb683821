//! The email fast path: an address already in the one spelling [`Email::parse`] keeps needs
//! none of its work (IDNA, RFC 5322), and nearly every ValidateKey carries one, since clients
//! send back the address zsc gave them.
//!
//! [`is_canonical`] only says yes to a narrow, plain form whose full parse returns it unchanged:
//! ASCII; one `@`; a local part of dot-separated RFC 5322 atoms in lower case, at most 64
//! bytes; a domain of at least two LDH labels (lower-case letters, digits, inner hyphens), none
//! in the IDNA `??--` form, each at most 63 bytes; at most `max_len` bytes in all.
//! Anything else goes through the full parse, which stays the one definition of an email. The
//! property test below checks the fast path against it.
//!
//! [`Email::parse`]: super::Email::parse

/// RFC 5322 `atext` in ASCII, with upper case left out (the full parse lower-cases it).
fn is_local_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn is_plain_local(local: &[u8]) -> bool {
    (1..=64).contains(&local.len())
        && local
            .split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| is_local_byte(b)))
}

fn is_plain_label(label: &[u8]) -> bool {
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&label.len())
        && label.first().is_some_and(alphanumeric)
        && label.last().is_some_and(alphanumeric)
        && label.iter().all(|b| alphanumeric(b) || *b == b'-')
        && label.get(2..4) != Some(b"--")
}

fn is_plain_domain(domain: &[u8]) -> bool {
    domain.contains(&b'.') && domain.split(|&b| b == b'.').all(is_plain_label)
}

/// Whether `raw` is an email in the plain form that `Email::parse` returns unchanged, given
/// the longest email it accepts (`MAX_EMAIL_LEN`).
pub(super) fn is_canonical(raw: &str, max_len: usize) -> bool {
    let bytes = raw.as_bytes();
    if bytes.len() > max_len {
        return false;
    }
    let mut parts = bytes.splitn(3, |&b| b == b'@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => is_plain_local(local) && is_plain_domain(domain),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::domain::Email;

    /// `MAX_EMAIL_LEN`, spelled here too: the fast path takes it from `names.rs`.
    const MAX: usize = 254;

    fn is_canonical(raw: &str) -> bool {
        super::is_canonical(raw, MAX)
    }

    #[test]
    fn the_addresses_clients_send_take_the_fast_path() {
        for plain in [
            "ada@acme.example",
            "ada.lovelace+crm@mail.acme-corp.example",
            "o'brien@x1.example.co.uk",
            "ada@buecher.example",
        ] {
            assert!(is_canonical(plain), "{plain}");
        }
        for other in [
            "Ada@acme.example",
            "ada@Acme.example",
            "ada@xn--bcher-kva.example",
            "ada@acme",
            "ada@acme.example.",
            ".ada@acme.example",
            "ada..b@acme.example",
            "ada@-acme.example",
            "ada@acme-.example",
            "a@b@acme.example",
            "\"ada\"@acme.example",
            "zoë@acme.example",
            // What the property test found when the fast path was wrong on purpose.
            "0@0.0a--a",
            "-A@0.aa",
        ] {
            assert!(!is_canonical(other), "{other}");
        }
    }

    /// Addresses near the fast path's edges: the characters it decides on, in every position.
    fn near_plain() -> impl Strategy<Value = String> {
        let local = "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~\"(),<>\\\\ @ü-]{0,70}";
        let label = "[a-zA-Z0-9_ü-]{0,66}";
        (local, prop::collection::vec(label, 0..5), any::<bool>()).prop_map(
            |(local, labels, trailing_dot)| {
                let dot = if trailing_dot { "." } else { "" };
                format!("{local}@{}{dot}", labels.join("."))
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The fast path never disagrees with the full parse: what it accepts, the full parse
        /// accepts and returns unchanged.
        #[test]
        fn the_fast_path_answers_what_the_full_parse_answers(
            raw in prop_oneof![near_plain(), "[a-z0-9.-]{1,12}@[a-z0-9.-]{1,20}", "\\PC{0,40}"],
        ) {
            if is_canonical(&raw) {
                let full = Email::parse_in_full("email", &raw);
                prop_assert_eq!(full.as_ref().map(Email::as_str).ok(), Some(raw.as_str()));
            }
        }

        /// Whatever the full parse returns in the plain character set, the fast path takes, so
        /// that it is not dead code for the common case.
        #[test]
        fn plain_results_of_the_full_parse_take_the_fast_path(
            raw in "[a-zA-Z0-9._+-]{1,20}@[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}",
        ) {
            // `??--` labels (IDNA's A-labels among them) are left to the full parse.
            let full = Email::parse_in_full("email", &raw).ok().filter(|e| !e.as_str().contains("--"));
            if let Some(email) = full {
                prop_assert!(is_canonical(email.as_str()), "{}", email.as_str());
                prop_assert_eq!(Email::parse("email", &raw).unwrap(), email);
            }
        }
    }
}
