//! zsc.v1.AccessService: service accounts.

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::convert::enum_field;
use crate::domain::{AccountName, Role};
use crate::proto::{self as pb, access_service_server::AccessService};
use crate::store::Store;

pub struct AccessApi {
    store: Store,
}

impl AccessApi {
    pub fn new(store: Store) -> Self {
        AccessApi { store }
    }
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let by = caller(&request)?;
        let req = request.into_inner();
        let name = AccountName::parse(&req.name)?;
        let role = enum_field("role", req.role, Role::from_code)?;
        let (account, token) = self.store.create_account(&by, name, role).await?;
        tracing::info!(account = %account.name, role = ?account.role, "service account created");
        Ok(Response::new(pb::CreateServiceAccountResponse {
            account: Some(account.into()),
            token: token.expose().to_owned(),
        }))
    }

    async fn list_service_accounts(
        &self,
        _request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let accounts = self.store.list_accounts().await?;
        Ok(Response::new(pb::ListServiceAccountsResponse {
            accounts: accounts.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let by = caller(&request)?;
        let name = AccountName::parse(&request.get_ref().name)?;
        self.store.delete_account(&by, &name).await?;
        tracing::info!(account = %name, "service account deleted");
        Ok(Response::new(pb::DeleteServiceAccountResponse {}))
    }
}
