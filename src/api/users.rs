//! zsc.v1.UserService: orgs and users.

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::{enum_field, page_token, parse_page_token};
use super::keys::revoked;
use crate::domain::{page_limit, Edition, Email, Name, OrgId, Profile, RevocationEvent, User};
use crate::metrics::Metrics;
use crate::proto::{self as pb, user_service_server::UserService};
use crate::store::Store;

pub struct UserApi {
    store: Store,
    metrics: Metrics,
}

impl UserApi {
    pub fn new(store: Store, metrics: Metrics) -> Self {
        UserApi { store, metrics }
    }

    /// A user change that revoked a key is logged and counted.
    fn changed(&self, (user, event): (User, Option<RevocationEvent>)) -> Response<pb::User> {
        if let Some(event) = &event {
            revoked(&self.metrics, event);
        }
        Response::new(user.into())
    }
}

const ORGS_SCOPE: &str = "orgs";

fn users_scope(org_id: &OrgId) -> String {
    format!("users:{org_id}")
}

fn email(raw: &str) -> Result<Email, Status> {
    Ok(Email::parse("email", raw)?)
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_org(
        &self,
        request: Request<pb::CreateOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let by = caller(&request)?;
        let req = request.into_inner();
        let name = Name::parse("name", &req.name)?;
        let edition = enum_field("edition", req.edition, Edition::from_code)?;
        let org = self.store.create_org(&by, name, edition).await?;
        tracing::info!(org_id = %org.id, "org created");
        Ok(Response::new(org.into()))
    }

    async fn get_org(
        &self,
        request: Request<pb::GetOrgRequest>,
    ) -> Result<Response<pb::Org>, Status> {
        let org_id = OrgId::parse("org_id", &request.get_ref().org_id)?;
        Ok(Response::new(self.store.get_org(&org_id).await?.into()))
    }

    async fn list_orgs(
        &self,
        request: Request<pb::ListOrgsRequest>,
    ) -> Result<Response<pb::ListOrgsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_limit(req.page_size)?;
        let after = parse_page_token(ORGS_SCOPE, &req.page_token)?;
        let page = self.store.list_orgs(after.as_deref(), limit).await?;
        Ok(Response::new(pb::ListOrgsResponse {
            orgs: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(ORGS_SCOPE, page.next_after),
        }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let by = caller(&request)?;
        let req = request.into_inner();
        let org_id = OrgId::parse("org_id", &req.org_id)?;
        let email = email(&req.email)?;
        let display_name = Name::parse("display_name", &req.display_name)?;
        let profile = enum_field("profile", req.profile, Profile::from_code)?;
        let user = self
            .store
            .create_user(&by, org_id, email, display_name, profile)
            .await?;
        Ok(Response::new(user.into()))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let email = email(&request.get_ref().email)?;
        Ok(Response::new(self.store.get_user(&email).await?.into()))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let req = request.into_inner();
        let org_id = OrgId::parse("org_id", &req.org_id)?;
        let limit = page_limit(req.page_size)?;
        let scope = users_scope(&org_id);
        let after = parse_page_token(&scope, &req.page_token)?;
        let page = self
            .store
            .list_users(&org_id, after.as_deref(), limit)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page_token(&scope, page.next_after),
        }))
    }

    async fn update_user_profile(
        &self,
        request: Request<pb::UpdateUserProfileRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let by = caller(&request)?;
        let req = request.into_inner();
        let email = email(&req.email)?;
        let profile = enum_field("profile", req.profile, Profile::from_code)?;
        Ok(self.changed(self.store.update_user_profile(&by, &email, profile).await?))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let by = caller(&request)?;
        let email = email(&request.get_ref().email)?;
        Ok(self.changed(self.store.deactivate_user(&by, &email).await?))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let by = caller(&request)?;
        let email = email(&request.get_ref().email)?;
        Ok(self.changed(self.store.reactivate_user(&by, &email).await?))
    }
}
