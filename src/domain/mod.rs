//! Domain: the ZSC rules and the types requests are parsed into. No sled, no tonic.

mod error;
mod model;
mod names;
mod plain_email;
mod secret;
pub mod shown;
mod text;

pub use error::{Error, Result, INVALID_EMAIL_OR_KEY};
pub use model::*;
pub use names::{random_base62, AccountName, Email, KeyId, Name, OrgId};
pub use secret::{AccountToken, Key, Secret, SecretHash, SecretKind, Token, ZscKey};
