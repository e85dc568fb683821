//! What each fuzz target does with its input, shared by the cargo-fuzz targets
//! (`fuzz_targets/`, nightly) and the corpus-free smoke test (`tests/smoke.rs`, stable).
//!
//! Each function panics only when zsc breaks a promise: a parser panics, a normal form is not
//! stable, a round trip loses something, or bad input gets INTERNAL.

use std::sync::OnceLock;

use prost::Message;
use tonic::{Code, Request};
use zsc::api::{fuzzing, AccessApi, KeyApi, UserApi, WatchConfig};
use zsc::domain::{AccountName, AccountToken, Email, Name, ZscKey};
use zsc::metrics::Metrics;
use zsc::proto::{
    self as pb, access_service_server::AccessService, codec::Decoded,
    key_service_server::KeyService, user_service_server::UserService,
};
use zsc::shutdown::Shutdown;
use zsc::store::{Store, StoreOptions};

/// ZscKey and AccountToken parsing: never panics; what parses is exactly its text, and a key
/// is never a token.
pub fn secrets(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = ZscKey::parse(&text) {
        assert_eq!(key.expose(), text);
        assert!(AccountToken::parse(&text).is_err());
    }
    if let Ok(token) = AccountToken::parse(&text) {
        assert_eq!(token.expose(), text);
    }
}

/// Name, AccountName and Email parsing: never panics, and what it returns parses to itself.
pub fn names(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = Name::parse("name", &text) {
        let again = Name::parse("name", name.as_str()).expect("a parsed name parses again");
        assert_eq!(again.as_str(), name.as_str());
        assert_eq!(again.folded(), name.folded());
    }
    if let Ok(email) = Email::parse("email", &text) {
        let again = Email::parse("email", email.as_str()).expect("a parsed email parses again");
        assert_eq!(again, email);
        assert!(email.as_str().is_ascii());
    }
    if let Ok(account) = AccountName::parse(&text) {
        assert_eq!(account.as_str(), text);
    }
}

/// Page tokens: any token text is parsed without a panic; any cursor round-trips in its own
/// listing and is refused by another.
pub fn page_tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = fuzzing::parse_page_token("orgs", &text);
    if !text.is_empty() {
        let token = fuzzing::page_token("users:org_x", Some(text.to_string()));
        let parsed = fuzzing::parse_page_token("users:org_x", &token).expect("own token");
        assert_eq!(parsed.as_deref(), Some(&*text));
        assert!(fuzzing::parse_page_token("orgs", &token).is_err());
    }
}

/// Stored records: any bytes decode to a record or an error, and a record to a domain value or
/// an error.
pub fn records(data: &[u8]) {
    zsc::store::decode_any_record(data);
}

/// The handlers, on a store of their own, with one runtime for every input.
struct Harness {
    runtime: tokio::runtime::Runtime,
    users: UserApi,
    keys: KeyApi,
    access: AccessApi,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // On tmpfs where there is one: successful mutations flush.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let options = StoreOptions {
            cache_bytes: 8 * 1024 * 1024,
        };
        let store = Store::open(dir.path(), &options).expect("store").store;
        let metrics = Metrics::default();
        let watch = WatchConfig {
            heartbeat: std::time::Duration::from_secs(1),
            stall_timeout: std::time::Duration::from_secs(1),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        Harness {
            runtime,
            users: UserApi::new(store.clone(), metrics.clone()),
            keys: KeyApi::new(store.clone(), watch, Shutdown::default(), metrics),
            access: AccessApi::new(store),
            _dir: dir,
        }
    })
}

macro_rules! rpcs {
    ($($n:literal => $api:ident.$method:ident($request:ident)),* $(,)?) => {
        /// How many zsc.v1 RPCs the `requests` target drives.
        pub const RPCS: u8 = [$($n),*].len() as u8;

        impl Harness {
            /// Decodes `body` as RPC `which`'s request, as the server's codec does, and handles
            /// it; the status code it ends with.
            async fn handle(&self, which: u8, body: &[u8]) -> Code {
                match which {
                    $($n => match pb::$request::decode(body) {
                        Ok(request) => self
                            .$api
                            .$method(Request::new(request))
                            .await
                            .map_or_else(|status| status.code(), |_| Code::Ok),
                        Err(error) => {
                            <pb::$request as Decoded>::undecodable(&error.to_string()).code()
                        }
                    },)*
                    _ => unreachable!("which < RPCS"),
                }
            }
        }
    };
}

rpcs!(
    0 => users.create_org(CreateOrgRequest),
    1 => users.get_org(GetOrgRequest),
    2 => users.list_orgs(ListOrgsRequest),
    3 => users.create_user(CreateUserRequest),
    4 => users.get_user(GetUserRequest),
    5 => users.list_users(ListUsersRequest),
    6 => users.update_user_profile(UpdateUserProfileRequest),
    7 => users.deactivate_user(DeactivateUserRequest),
    8 => users.reactivate_user(ReactivateUserRequest),
    9 => keys.generate_key(GenerateKeyRequest),
    10 => keys.regenerate_key(RegenerateKeyRequest),
    11 => keys.revoke_key(RevokeKeyRequest),
    12 => keys.get_key_info(GetKeyInfoRequest),
    13 => keys.validate_key(ValidateKeyRequest),
    14 => keys.watch_revocations(WatchRevocationsRequest),
    15 => access.create_service_account(CreateServiceAccountRequest),
    16 => access.list_service_accounts(ListServiceAccountsRequest),
    17 => access.delete_service_account(DeleteServiceAccountRequest),
);

/// Every zsc.v1 request: the first byte picks the RPC, the rest is its request's bytes, decoded
/// and handled in-process. Whatever the bytes, the answer is never INTERNAL or UNKNOWN, and
/// bytes that are not the request are INVALID_ARGUMENT.
pub fn requests(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let which = which % RPCS;
    let harness = harness();
    let code = harness.runtime.block_on(harness.handle(which, body));
    assert!(
        !matches!(code, Code::Internal | Code::Unknown),
        "RPC {which} answered {code:?} to {body:02x?}"
    );
}
