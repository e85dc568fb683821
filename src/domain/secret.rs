//! Secrets: ZSC keys and service-account tokens.
//!
//! Format (the GitHub token scheme): `<prefix><47 random base62 chars><6 base62 chars of CRC32>`.
//! 47 characters from the OS CSPRNG carry 279 bits, so even after `key_prefix` shows four of
//! them, 256 unknown bits remain. The checksum lets anyone reject a typo or a made-up key
//! offline, before any lookup. Only a blake3 hash of a secret is ever stored.
//!
//! A [`Secret`] redacts itself in `Debug`, has no `Display`, and is zeroed on drop, so logging
//! one takes a deliberate `expose()` that a reviewer will see.

use std::{fmt, marker::PhantomData, sync::LazyLock};

use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::names::random_base62;

const RANDOM_CHARS: usize = 47;
const CHECKSUM_CHARS: usize = 6;
/// How many characters of a key `KeyInfo.key_prefix` shows.
const DISPLAY_CHARS: usize = 8;
/// blake3 `derive_key` context: a hash made here means nothing to any other blake3 use.
const HASH_CONTEXT: &str = "zsc 2026-11-28 secret hash v1";

/// What kind of secret, fixed at compile time so a token can never be passed as a key.
pub trait SecretKind {
    const PREFIX: &'static str;
    /// For error messages: "key", "token".
    const NOUN: &'static str;
}

/// A ZSC key: `zsc_...`.
pub enum Key {}
/// A service-account bearer token: `zsct_...`.
pub enum Token {}

impl SecretKind for Key {
    const PREFIX: &'static str = "zsc_";
    const NOUN: &'static str = "key";
}

impl SecretKind for Token {
    const PREFIX: &'static str = "zsct_";
    const NOUN: &'static str = "token";
}

pub type ZscKey = Secret<Key>;
pub type AccountToken = Secret<Token>;

pub struct Secret<K: SecretKind> {
    text: Zeroizing<String>,
    kind: PhantomData<K>,
}

/// The stored form of a secret: blake3, 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl<K: SecretKind> Secret<K> {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut text = Zeroizing::new(String::with_capacity(Self::LEN));
        text.push_str(K::PREFIX);
        text.push_str(&Zeroizing::new(random_base62(RANDOM_CHARS)));
        let checksum = checksum(&text);
        text.push_str(&checksum);
        Secret {
            text,
            kind: PhantomData,
        }
    }

    pub const LEN: usize = K::PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;

    /// Checks prefix, length, alphabet and checksum; no lookup.
    pub fn parse(raw: &str) -> Result<Self> {
        Self::check(raw)?;
        Ok(Secret {
            text: Zeroizing::new(raw.to_owned()),
            kind: PhantomData,
        })
    }

    /// [`Secret::parse`] then [`Secret::hash`], without keeping a copy of the secret: what a
    /// lookup by hash needs (a bearer token, a key to validate), one allocation less per call.
    pub fn hash_of(raw: &str) -> Result<SecretHash> {
        Self::check(raw)?;
        Ok(hash_text(raw))
    }

    fn check(raw: &str) -> Result<()> {
        let malformed =
            || Error::invalid(format!("malformed {} (expected {}...)", K::NOUN, K::PREFIX));
        if raw.is_empty() {
            return Err(Error::invalid(format!("{} is required", K::NOUN)));
        }
        let body = raw.strip_prefix(K::PREFIX).ok_or_else(malformed)?;
        if raw.len() != Self::LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(malformed());
        }
        let (signed, sum) = raw.split_at(Self::LEN - CHECKSUM_CHARS);
        // The sum's digits read as a number: as strict as comparing with `checksum(signed)`
        // (6 digits, zero-padded, have one spelling per value), without building that string.
        if base62::decode(sum).ok() != Some(u128::from(crc32fast::hash(signed.as_bytes()))) {
            return Err(malformed());
        }
        Ok(())
    }

    pub fn hash(&self) -> SecretHash {
        hash_text(&self.text)
    }

    /// The first characters, for support ("which key is this?"); never enough to use.
    pub fn display_prefix(&self) -> String {
        self.text[..DISPLAY_CHARS].to_owned()
    }

    /// The secret itself: only for the one response that hands it out, or a token file.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl<K: SecretKind> fmt::Debug for Secret<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<redacted>", K::PREFIX)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// The stored form of a secret's text.
fn hash_text(text: &str) -> SecretHash {
    // The context's key is derived once; each hash starts from a copy of that state.
    static START: LazyLock<blake3::Hasher> =
        LazyLock::new(|| blake3::Hasher::new_derive_key(HASH_CONTEXT));
    let mut hasher = START.clone();
    hasher.update(text.as_bytes());
    SecretHash(*hasher.finalize().as_bytes())
}

/// CRC32 of everything before it, as 6 base62 digits (62^6 > 2^32).
fn checksum(signed: &str) -> String {
    format!(
        "{:0>width$}",
        base62::encode(crc32fast::hash(signed.as_bytes())),
        width = CHECKSUM_CHARS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_of_a_secret_never_changes() {
        // Stores hold these hashes: a change here would lock out every key and token.
        let signed = format!("zsc_{}", "a".repeat(RANDOM_CHARS));
        let key = ZscKey::parse(&format!("{signed}{}", checksum(&signed))).unwrap();
        let mut fresh = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        fresh.update(key.expose().as_bytes());
        assert_eq!(key.hash().0, *fresh.finalize().as_bytes());
        assert_eq!(key.hash(), key.hash());
        assert_eq!(ZscKey::hash_of(key.expose()).unwrap(), key.hash());
    }

    #[test]
    fn a_checksum_off_by_one_digit_is_refused() {
        let key = ZscKey::generate();
        let text = key.expose();
        let (signed, sum) = text.split_at(ZscKey::LEN - CHECKSUM_CHARS);
        for at in 0..CHECKSUM_CHARS {
            let mut wrong = sum.as_bytes().to_vec();
            wrong[at] = if wrong[at] == b'0' { b'1' } else { b'0' };
            let wrong = format!("{signed}{}", String::from_utf8(wrong).unwrap());
            assert!(ZscKey::parse(&wrong).is_err(), "{at}");
        }
        assert!(ZscKey::parse(text).is_ok());
    }

    #[test]
    fn generated_secrets_parse_and_hash_stably() {
        let key = ZscKey::generate();
        assert_eq!(key.expose().len(), ZscKey::LEN);
        let parsed = ZscKey::parse(key.expose()).unwrap();
        assert_eq!(parsed.hash(), key.hash());
        assert_ne!(ZscKey::generate().hash(), key.hash());
        assert!(key.display_prefix().starts_with("zsc_"));
    }

    #[test]
    fn typos_and_fakes_are_rejected_offline() {
        let key = ZscKey::generate();
        let text = key.expose();
        // One changed character breaks the checksum.
        let mut typo = text.as_bytes().to_vec();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(ZscKey::parse(std::str::from_utf8(&typo).unwrap()).is_err());
        assert!(ZscKey::parse(&text[..text.len() - 1]).is_err());
        assert!(ZscKey::parse("").is_err());
        // A token is not a key, even with a valid checksum of its own.
        assert!(ZscKey::parse(AccountToken::generate().expose()).is_err());
        assert!(ZscKey::hash_of(AccountToken::generate().expose()).is_err());
        assert!(ZscKey::hash_of(&text[..text.len() - 1]).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ZscKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[4..]), "{shown}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parsing_any_text_never_panics(raw in "\\PC{0,80}", key_like in "zsc_[0-9A-Za-z]{53}") {
                let _ = ZscKey::parse(&raw);
                let _ = AccountToken::parse(&raw);
                let _ = ZscKey::parse(&key_like);
            }

            #[test]
            fn a_generated_secret_parses_to_itself(_seed in any::<u8>()) {
                let key = ZscKey::generate();
                let parsed = ZscKey::parse(key.expose()).unwrap();
                prop_assert_eq!(parsed.expose(), key.expose());
                prop_assert_eq!(parsed.hash(), key.hash());
                let token = AccountToken::generate();
                let parsed = AccountToken::parse(token.expose()).unwrap();
                prop_assert_eq!(parsed.expose(), token.expose());
            }

            /// CRC32 catches every single-byte change, so one mistyped character never passes.
            #[test]
            fn one_changed_character_is_always_caught(at in 4usize..ZscKey::LEN, with in "[0-9A-Za-z]") {
                let key = ZscKey::generate();
                let mut text = key.expose().to_owned();
                prop_assume!(text[at..at + 1] != with);
                text.replace_range(at..at + 1, &with);
                prop_assert!(ZscKey::parse(&text).is_err());
            }
        }
    }
}
