//! Who may call what: bearer-token authentication and the authorization matrix, applied to
//! every zsc.v1 request before it reaches a service. Health and reflection stay open.
//!
//! Architecture invariant: this table is the only place a role is checked. A zsc.v1 method
//! missing from it is refused for every role.

use http::Request;
use tonic::{body::Body, Status};
use tower::Layer;

use super::caller_field::CallerField;
use super::layer::{Around, Called, Inner, Wrapped};
use super::rate::{peer_ip, Rates};
use crate::domain::{AccountToken, Caller, Error, OrgId, Role};
use crate::store::Store;

const OPERATOR: &[Role] = &[Role::Operator];
const STAFF: &[Role] = &[Role::Operator, Role::Console];
const ANY: &[Role] = &[Role::Operator, Role::Console, Role::Consumer];
const SUBSCRIBERS: &[Role] = &[Role::Operator, Role::Consumer];

pub const WATCH_REVOCATIONS: &str = "/zsc.v1.KeyService/WatchRevocations";

/// The authorization matrix, by gRPC method path.
const MATRIX: &[(&str, &[Role])] = &[
    ("/zsc.v1.UserService/CreateOrg", OPERATOR),
    ("/zsc.v1.UserService/ListOrgs", OPERATOR),
    ("/zsc.v1.UserService/GetOrg", STAFF),
    ("/zsc.v1.UserService/CreateUser", STAFF),
    ("/zsc.v1.UserService/GetUser", STAFF),
    ("/zsc.v1.UserService/ListUsers", STAFF),
    ("/zsc.v1.UserService/UpdateUserProfile", STAFF),
    ("/zsc.v1.UserService/DeactivateUser", STAFF),
    ("/zsc.v1.UserService/ReactivateUser", STAFF),
    ("/zsc.v1.KeyService/GenerateKey", STAFF),
    ("/zsc.v1.KeyService/RegenerateKey", STAFF),
    ("/zsc.v1.KeyService/RevokeKey", OPERATOR),
    ("/zsc.v1.KeyService/GetKeyInfo", ANY),
    ("/zsc.v1.KeyService/ValidateKey", ANY),
    (WATCH_REVOCATIONS, SUBSCRIBERS),
    ("/zsc.v1.AccessService/CreateServiceAccount", OPERATOR),
    ("/zsc.v1.AccessService/ListServiceAccounts", OPERATOR),
    ("/zsc.v1.AccessService/DeleteServiceAccount", OPERATOR),
    ("/zsc.v1.AuditService/ListAuditEvents", STAFF),
    ("/zsc.v1.OperationsService/Backup", OPERATOR),
    ("/zsc.v1.ConfirmationService/ReportApplied", SUBSCRIBERS),
    (
        "/zsc.v1.ConfirmationService/GetRevocationConfirmations",
        STAFF,
    ),
];

/// Paths served without a token.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// The open methods this server actually serves.
const OPEN_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// `path` as this server spells it, if it serves it. Metrics label anything else "unknown", so
/// a client cannot grow their label sets without bound by inventing paths (and the label is
/// static: no allocation per call).
pub fn known_method(path: &str) -> Option<&'static str> {
    OPEN_METHODS
        .iter()
        .copied()
        .chain(MATRIX.iter().map(|(p, _)| *p))
        .find(|p| *p == path)
}

/// Checks the caller of `path`; the [`Caller`] is what handlers and logs see.
pub fn authorize(store: &Store, path: &str, headers: &http::HeaderMap) -> Result<Caller, Status> {
    let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Status::unauthenticated("missing authorization metadata (Bearer <service-account token>)")
    })?;
    let token = header
        .to_str()
        .ok()
        // The scheme name is case-insensitive (RFC 9110, section 11.1).
        .and_then(|value| {
            value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token)
        .ok_or_else(|| {
            Status::unauthenticated("authorization metadata must be \"Bearer <token>\"")
        })?;
    let token = AccountToken::hash_of(token.trim())
        .map_err(|_| Status::unauthenticated("malformed token"))?;
    let caller = store.holder_of(token)?;
    permit(path, &caller)?;
    Ok(caller)
}

/// The matrix's answer for `caller` on `path`.
fn permit(path: &str, caller: &Caller) -> Result<(), Status> {
    let allowed = MATRIX
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&[][..], |(_, roles)| *roles);
    if !allowed.contains(&caller.role) {
        return Err(Error::PermissionDenied(format!(
            "service account {} ({}) may not call {path}",
            caller.name,
            super::convert::role_name(caller.role)
        ))
        .into());
    }
    Ok(())
}

/// A caller's right to a call that outlives its request (a revocation stream), checked again
/// while the call lasts: deleting the account or replacing its token ends it UNAUTHENTICATED,
/// a role that no longer allows the method PERMISSION_DENIED.
#[derive(Clone)]
pub struct Standing {
    store: Store,
    path: &'static str,
    caller: Caller,
    /// The store's accounts generation at the last check that passed; `None` before the first.
    checked: Option<u64>,
}

impl Standing {
    pub fn new(store: Store, path: &'static str, caller: Caller) -> Self {
        Standing {
            store,
            path,
            caller,
            checked: None,
        }
    }

    /// [`Standing::check`], but only when an account or token has changed since the last check
    /// that passed (the store's accounts generation moved): a long call re-checked often costs
    /// an atomic load until then, not two store reads.
    pub fn recheck(&mut self) -> Result<(), Status> {
        // Read before the check: a change that lands during it moves the generation again.
        let generation = self.store.accounts_generation();
        if self.checked == Some(generation) {
            return Ok(());
        }
        self.check()?;
        self.checked = Some(generation);
        Ok(())
    }

    /// The caller as it was authenticated when the call began.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether the caller may still make this call, by the same matrix as at its start.
    pub fn check(&self) -> Result<(), Status> {
        let now = match self.store.holder_of(self.caller.token) {
            Ok(now) => now,
            Err(Error::Unauthenticated(_)) => {
                return Err(Status::unauthenticated(format!(
                    "service account {} was deleted or its token replaced; this call ends",
                    self.caller.name
                )))
            }
            Err(other) => return Err(other.into()),
        };
        permit(self.path, &now)
    }
}

/// The caller the auth layer admitted. Every zsc.v1 request has one: a handler reached without
/// it is a wiring bug, answered INTERNAL.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    caller_of(request).cloned()
}

/// [`caller`], borrowed from the request (no copy of the name, for the hot path).
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| {
        Error::internal("a zsc.v1 request reached its handler without passing the auth layer")
            .into()
    })
}

/// Whose audit entries `caller` may list: an operator's listing may span every org; the
/// console's must name one org (so that the CRM shows each org its own history).
pub fn audit_scope(caller: &Caller, org_id: Option<OrgId>) -> Result<Option<OrgId>, Status> {
    match (caller.role, org_id) {
        (Role::Operator, org_id) => Ok(org_id),
        (Role::Console, Some(org_id)) => Ok(Some(org_id)),
        (Role::Console, None) => Err(Error::invalid(
            "org_id is required: the console lists one org's audit entries at a time",
        )
        .into()),
        (Role::Consumer, _) => Err(Error::PermissionDenied(format!(
            "service account {} (consumer) may not read the audit trail",
            caller.name
        ))
        .into()),
    }
}

/// The tower layer that runs `authorize` on every request, and the rate limits (`rate.rs`).
#[derive(Clone)]
pub struct AuthLayer {
    store: Store,
    rates: Option<Rates>,
    /// `--log-reads`: whether a successful read writes a line (`caller_field.rs`).
    log_reads: bool,
}

impl AuthLayer {
    pub fn new(store: Store) -> Self {
        AuthLayer {
            store,
            rates: None,
            log_reads: false,
        }
    }

    /// Whether successful reads are logged (`--log-reads`), which puts their caller on their span.
    pub fn with_log_reads(self, log_reads: bool) -> Self {
        AuthLayer { log_reads, ..self }
    }

    /// Holds callers to `rates` too.
    pub fn with_rates(self, rates: Rates) -> Self {
        AuthLayer {
            rates: Some(rates),
            ..self
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Wrapped<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(inner, self.clone())
    }
}

impl Around for AuthLayer {
    fn call<S: Inner>(&self, mut inner: S, mut request: Request<Body>) -> Called<S::Error> {
        let path = request.uri().path().to_owned();
        if is_open(&path) {
            return Box::pin(inner.call(request));
        }
        let store = self.store.clone();
        let rates = self.rates.clone();
        let span = tracing::Span::current();
        let quiet = super::lines::quiet_on_success(&path, self.log_reads);
        Box::pin(async move {
            // On etcd, first catch up with every change acknowledged before this call (a
            // deleted account's token is refused everywhere once its deletion is OK); the
            // proof rides along for handlers that read memory (ValidateKey).
            let authorized = match store.barrier().await {
                Ok(fresh) => authorize(&store, &path, request.headers()).map(|c| (c, fresh)),
                Err(error) => Err(error.into()),
            };
            let field = match authorized {
                Ok((caller, fresh)) => {
                    let field = if quiet {
                        Some(CallerField::later(span, store, caller.token))
                    } else {
                        span.record("caller", caller.name.as_str());
                        None
                    };
                    if let Some(Err(status)) = rates.as_ref().map(|r| r.admit(&caller)) {
                        return Ok(status.into_http());
                    }
                    request.extensions_mut().insert(caller);
                    request.extensions_mut().insert(fresh);
                    field
                }
                // Logged (at a bounded rate) and counted by the observe layer around this one.
                // Only a call without a valid token counts against its address's limit.
                Err(status) => {
                    let status = match &rates {
                        Some(rates) => rates.failed(peer_ip(request.extensions()), status),
                        None => status,
                    };
                    return Ok(status.into_http());
                }
            };
            let response = inner.call(request).await;
            if let Some(field) = field {
                field.settle(&response);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_in_the_proto_is_in_the_matrix() {
        use prost::Message as _;
        let fds =
            prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/zsc.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
        assert_eq!(methods.len(), MATRIX.len());
        for method in methods {
            assert!(
                MATRIX.iter().any(|(p, _)| *p == method),
                "{method} has no row"
            );
        }
    }

    /// A fresh store with a consumer account "desk", authenticated by its token.
    async fn store_with_consumer_desk(
    ) -> (tempfile::TempDir, Store, crate::domain::AccountName, Caller) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::store::StoreOptions::default())
            .unwrap()
            .store;
        let name = crate::domain::AccountName::parse("desk").unwrap();
        let (_, token) = store
            .create_account(&Caller::cli(), name.clone(), Role::Consumer)
            .await
            .unwrap();
        let caller = store.authenticate(&token).unwrap();
        (dir, store, name, caller)
    }

    #[tokio::test]
    async fn a_standing_follows_the_account_it_was_granted_to() {
        use tonic::Code;

        let (_dir, store, name, caller) = store_with_consumer_desk().await;
        let watching = Standing::new(store.clone(), WATCH_REVOCATIONS, caller.clone());
        assert!(watching.check().is_ok());
        // The role the account has now is checked against the matrix, as at the start.
        let creating = Standing::new(store.clone(), "/zsc.v1.UserService/CreateOrg", caller);
        assert_eq!(creating.check().unwrap_err().code(), Code::PermissionDenied);

        store.delete_account(&Caller::cli(), &name).await.unwrap();
        let ended = watching.check().unwrap_err();
        assert_eq!(ended.code(), Code::Unauthenticated);
        assert!(ended.message().contains("desk"), "{}", ended.message());
        // A new account of the same name has a new token: the old standing stays ended.
        store
            .create_account(&Caller::cli(), name, Role::Consumer)
            .await
            .unwrap();
        assert_eq!(watching.check().unwrap_err().code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_recheck_reads_the_account_again_only_after_an_account_changed() {
        use tonic::Code;

        let (_dir, store, name, caller) = store_with_consumer_desk().await;
        let mut standing = Standing::new(store.clone(), WATCH_REVOCATIONS, caller);
        assert_eq!(standing.checked, None);
        standing.recheck().unwrap();
        let generation = store.accounts_generation();
        assert_eq!(standing.checked, Some(generation));
        // Nothing changed: no read, and still allowed.
        standing.recheck().unwrap();
        assert_eq!(standing.checked, Some(generation));
        // Deleting the account moves the generation, so the re-check reads and ends the call.
        store.delete_account(&Caller::cli(), &name).await.unwrap();
        assert_ne!(store.accounts_generation(), generation);
        assert_eq!(
            standing.recheck().unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            standing.recheck().unwrap_err().code(),
            Code::Unauthenticated
        );
    }
}
