//! zsc.v1.KeyService: keys, validation and the revocation stream.

use tonic::{Request, Response, Status};

use super::auth::{caller, caller_of, Standing, WATCH_REVOCATIONS};
use super::stall::Stalls;
use super::subscribers::Subscribers;
use super::tail::Tail;
use super::watch::{self, WatchConfig, WatchStream};
use crate::domain::{Caller, Email, Error, OrgId, RevocationEvent, Role, ZscKey};
use crate::metrics::{Metrics, ValidationOutcome};
use crate::proto::{self as pb, key_service_server::KeyService};
use crate::shutdown::Shutdown;
use crate::store::{Fresh, KeyMode, Store};

pub struct KeyApi {
    store: Store,
    /// The revocation log's shared tail, which every stream follows.
    tail: Tail,
    watch: WatchConfig,
    /// The subscriber caps.
    subscribers: Subscribers,
    /// The clock that ends stalled streams.
    stalls: Stalls,
    /// Every revocation stream ends when shutdown begins, and shutdown waits for it.
    shutdown: Shutdown,
    metrics: Metrics,
}

impl KeyApi {
    pub fn new(
        store: Store,
        tail: Tail,
        watch: WatchConfig,
        shutdown: Shutdown,
        metrics: Metrics,
    ) -> Self {
        KeyApi {
            subscribers: Subscribers::new(watch.max_subscribers, watch.max_subscribers_per_account),
            stalls: Stalls::start(watch.stall_timeout, metrics.clone(), &shutdown),
            tail,
            store,
            watch,
            shutdown,
            metrics,
        }
    }

    async fn generate(
        &self,
        by: &Caller,
        org_id: &str,
        actor_email: &str,
        mode: KeyMode,
    ) -> Result<pb::GenerateKeyResponse, Status> {
        let org_id = OrgId::parse("org_id", org_id)?;
        let actor = Email::parse("actor_email", actor_email)?;
        let generated = self.store.generate_key(by, &org_id, &actor, mode).await?;
        if let Some(event) = &generated.replaced {
            revoked(&self.metrics, event);
        }
        tracing::info!(key_id = %generated.info.key_id, org_id = %org_id, owner = %actor, "key generated");
        Ok(pb::GenerateKeyResponse {
            key: generated.key.expose().to_owned(),
            info: Some(generated.info.into()),
        })
    }
}

/// Logs and counts a revocation.
pub(super) fn revoked(metrics: &Metrics, event: &RevocationEvent) {
    metrics.revocation(super::convert::reason_name(event.reason));
    tracing::info!(
        sequence = event.sequence,
        key_id = %event.key_id,
        org_id = %event.org_id,
        reason = ?event.reason,
        "key revoked"
    );
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_key(
        &self,
        request: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        let by = caller(&request)?;
        let req = request.get_ref();
        Ok(Response::new(
            self.generate(&by, &req.org_id, &req.actor_email, KeyMode::New)
                .await?,
        ))
    }

    async fn regenerate_key(
        &self,
        request: Request<pb::RegenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        let by = caller(&request)?;
        let req = request.get_ref();
        Ok(Response::new(
            self.generate(&by, &req.org_id, &req.actor_email, KeyMode::Replace)
                .await?,
        ))
    }

    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let by = caller(&request)?;
        let org_id = OrgId::parse("org_id", &request.get_ref().org_id)?;
        let event = self.store.revoke_key(&by, &org_id).await?;
        revoked(&self.metrics, &event);
        Ok(Response::new(pb::RevokeKeyResponse {
            event: Some(event.into()),
        }))
    }

    async fn get_key_info(
        &self,
        request: Request<pb::GetKeyInfoRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let org_id = OrgId::parse("org_id", &request.get_ref().org_id)?;
        let info = self.store.key_info(&org_id).await?;
        let usage = self.store.key_usage(&info.key_id).await?;
        let mut info = pb::KeyInfo::from(info);
        info.usage = usage.into_iter().map(Into::into).collect();
        Ok(Response::new(info))
    }

    async fn validate_key(
        &self,
        request: Request<pb::ValidateKeyRequest>,
    ) -> Result<Response<pb::ValidateKeyResponse>, Status> {
        let consumer = &caller_of(&request)?.name;
        let fresh = match request.extensions().get::<Fresh>() {
            Some(fresh) => fresh.clone(),
            None => self.store.barrier().await?,
        };
        let req = request.get_ref();
        // The key's shape is checked first, offline: a typo never reaches the database.
        let parsed =
            ZscKey::hash_of(&req.key).and_then(|key| Ok((key, Email::parse("email", &req.email)?)));
        let outcome = match parsed {
            Ok((key, email)) => self
                .store
                .validate_key_after(&fresh, &email, &key, consumer),
            Err(error) => Err(error),
        };
        self.metrics.validation(match &outcome {
            Ok(_) => ValidationOutcome::Ok,
            Err(Error::InvalidArgument(_)) => ValidationOutcome::Malformed,
            Err(_) => ValidationOutcome::Failed,
        });
        let validation = outcome?;
        Ok(Response::new(pb::ValidateKeyResponse {
            org: Some(validation.org.into()),
            key_id: validation.key_id.into(),
            owner_email: validation.owner.into(),
            sequence: validation.sequence,
            store_id: self.store.store_id().to_owned(),
        }))
    }

    type WatchRevocationsStream =
        futures_util::stream::Empty<Result<pb::WatchRevocationsResponse, Status>>;

    /// Never called: `watch_route` serves WatchRevocations with messages encoded once for
    /// every stream ([`KeyApi::watch`]), which the generated signature cannot carry.
    async fn watch_revocations(
        &self,
        _request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(Status::internal(
            "WatchRevocations is served by api::watch_route",
        ))
    }
}

impl KeyApi {
    /// WatchRevocations: the subscriber's standing and slot, then the stream of encoded messages.
    pub async fn watch(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let standing = Standing::new(self.store.clone(), WATCH_REVOCATIONS, caller(&request)?);
        let connection = request.remote_addr();
        let request = watch::parse_request(request.into_inner())?;
        let mut slot = self
            .subscribers
            .admit(&standing.caller().name, self.metrics.subscriber())?;
        // A consuming service's stream makes it "subscribed" for revocation confirmations; an
        // operator's is a tool reading the log.
        if standing.caller().role == Role::Consumer {
            slot = slot.with_presence(self.store.stream_presence(&standing.caller().name));
        }
        let stream = watch::subscribe(
            self.tail.clone(),
            connection,
            request,
            self.watch.clone(),
            self.shutdown.clone(),
            standing,
            self.stalls.watch(slot, connection),
        )?;
        Ok(Response::new(stream))
    }
}
