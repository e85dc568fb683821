//! zsc.v1.AuditService: the audit trail, read-only (no RPC edits or deletes an entry).

use tonic::{Request, Response, Status};

use super::auth::{audit_scope, caller};
use super::convert::{enum_field, page_token, parse_page_token, time_field};
use crate::domain::{page_limit, AuditAction, AuditFilter, Error, OrgId};
use crate::proto::{self as pb, audit_service_server::AuditService};
use crate::store::Store;

pub struct AuditApi {
    store: Store,
}

impl AuditApi {
    pub fn new(store: Store) -> Self {
        AuditApi { store }
    }
}

/// The request's filter, checked against what the caller may see.
fn filter(
    caller: &crate::domain::Caller,
    req: &pb::ListAuditEventsRequest,
) -> Result<AuditFilter, Status> {
    let org_id = match req.org_id.as_str() {
        "" => None,
        raw => Some(OrgId::parse("org_id", raw)?),
    };
    let actions = req
        .actions
        .iter()
        .map(|&code| enum_field("actions", code, AuditAction::from_code))
        .collect::<Result<_, _>>()?;
    Ok(AuditFilter {
        org_id: audit_scope(caller, org_id)?,
        actions,
        since: time_field("start_time", req.start_time)?,
        until: time_field("end_time", req.end_time)?,
    })
}

/// Page tokens are scoped to the org listed, so a token cannot move a listing to another org.
fn scope(filter: &AuditFilter) -> String {
    match &filter.org_id {
        Some(org_id) => format!("audit:{org_id}"),
        None => "audit".to_owned(),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let filter = filter(&caller, &req)?;
        let limit = page_limit(req.page_size)?;
        let scope = scope(&filter);
        let before = parse_page_token(&scope, &req.page_token)?
            .map(|s| s.parse::<u64>())
            .transpose()
            .map_err(|_| Error::invalid("page_token is not a token this listing returned"))?;
        let page = self.store.list_audit(&filter, before, limit).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(&scope, page.next_after),
        }))
    }
}
