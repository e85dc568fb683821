//! zsc.v1.ConfirmationService: Verifiers report what they applied; the console asks who has
//! dropped a revoked key (`store/rules/confirmations.rs` keeps the reports).

use prost_types::{Duration as PbDuration, Timestamp};
use tonic::{Request, Response, Status};

use super::auth::caller;
use crate::domain::{Error, KeyId};
use crate::proto::{self as pb, confirmation_service_server::ConfirmationService};
use crate::store::{RevocationConfirmations, RevocationRef, Store, SUBSCRIBED_WINDOW};

pub struct ConfirmationApi {
    store: Store,
}

impl ConfirmationApi {
    pub fn new(store: Store) -> Self {
        ConfirmationApi { store }
    }
}

/// Exactly one selector: a sequence (> 0) or a key_id.
fn parse_selector(req: &pb::GetRevocationConfirmationsRequest) -> Result<RevocationRef, Error> {
    match (req.sequence, req.key_id.is_empty()) {
        (0, true) => Err(Error::invalid(
            "name the revocation: set sequence or key_id",
        )),
        (0, false) => Ok(RevocationRef::KeyId(KeyId::parse("key_id", &req.key_id)?)),
        (sequence, true) => Ok(RevocationRef::Sequence(sequence)),
        (_, false) => Err(Error::invalid("set sequence or key_id, not both")),
    }
}

fn duration(d: std::time::Duration) -> PbDuration {
    PbDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl From<RevocationConfirmations> for pb::GetRevocationConfirmationsResponse {
    fn from(answer: RevocationConfirmations) -> Self {
        let confirmed = answer
            .confirmed
            .into_iter()
            .map(|c| pb::RevocationConfirmation {
                service: c.service.as_str().to_owned(),
                confirm_time: Some(Timestamp::from(c.confirmed)),
                lag: Some(duration(c.lag)),
            })
            .collect();
        let pending = answer
            .pending
            .into_iter()
            .map(|p| pb::PendingConfirmation {
                service: p.service.as_str().to_owned(),
                applied_sequence: p.applied,
                last_report_time: p.last_report.map(Timestamp::from),
            })
            .collect();
        pb::GetRevocationConfirmationsResponse {
            revocation: Some(answer.revocation.into()),
            confirmed,
            pending,
            subscribed_window: Some(duration(SUBSCRIBED_WINDOW)),
        }
    }
}

#[tonic::async_trait]
impl ConfirmationService for ConfirmationApi {
    async fn report_applied(
        &self,
        request: Request<pb::ReportAppliedRequest>,
    ) -> Result<Response<pb::ReportAppliedResponse>, Status> {
        // The reporting service is the token's account, never a field of the request.
        let service = caller(&request)?.name;
        let req = request.into_inner();
        if req.store_id.is_empty() {
            return Err(Error::invalid(
                "store_id is required: the store_id of the checkpoint the sequence came from",
            )
            .into());
        }
        let received = self
            .store
            .report_applied(&service, req.applied_sequence, &req.store_id)?;
        Ok(Response::new(pb::ReportAppliedResponse {
            receive_time: Some(Timestamp::from(received)),
        }))
    }

    async fn get_revocation_confirmations(
        &self,
        request: Request<pb::GetRevocationConfirmationsRequest>,
    ) -> Result<Response<pb::GetRevocationConfirmationsResponse>, Status> {
        let which = parse_selector(request.get_ref())?;
        let answer = self.store.revocation_confirmations(&which).await?;
        Ok(Response::new(answer.into()))
    }
}
