//! Setup that tests and benches share (hidden from the docs): an org with an administrator
//! and a key made over gRPC exactly as a console would, a service account, and the operator
//! token a new data dir holds. Written once here so the integration tests, the load bench,
//! the micro benches and the replica bench build the same thing the same way.

use std::path::Path;

use tonic::transport::Channel;

use crate::client::Bearer;
use crate::proto::{
    access_service_client::AccessServiceClient, key_service_client::KeyServiceClient,
    user_service_client::UserServiceClient, CreateOrgRequest, CreateServiceAccountRequest,
    CreateUserRequest, Edition, GenerateKeyRequest, Profile, Role,
};
use crate::store::OPERATOR_TOKEN_FILE;

/// The operator token the first start wrote to `data_dir`.
pub fn operator_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join(OPERATOR_TOKEN_FILE))
        .expect("the data dir holds operator.token")
        .trim()
        .to_owned()
}

/// The email of the administrator [`org_with_admin`] makes for the org `name`.
pub fn admin_email(name: &str) -> String {
    format!(
        "admin@{}.example.com",
        name.to_lowercase().replace(' ', "-")
    )
}

/// An org (enterprise) with one active administrator; returns (org_id, admin email).
pub async fn org_with_admin(channel: Channel, operator: Bearer, name: &str) -> (String, String) {
    let mut users = UserServiceClient::with_interceptor(channel, operator);
    let org = users
        .create_org(CreateOrgRequest {
            name: name.into(),
            edition: Edition::Enterprise as i32,
        })
        .await
        .expect("create org")
        .into_inner();
    let email = admin_email(name);
    users
        .create_user(CreateUserRequest {
            org_id: org.org_id.clone(),
            email: email.clone(),
            display_name: "Admin".into(),
            profile: Profile::Administrator as i32,
        })
        .await
        .expect("create user");
    (org.org_id, email)
}

/// An org, its administrator and its key; returns (org_id, admin email, key).
pub async fn org_with_key(
    channel: Channel,
    operator: Bearer,
    name: &str,
) -> (String, String, String) {
    let (org_id, email) = org_with_admin(channel.clone(), operator.clone(), name).await;
    let key = KeyServiceClient::with_interceptor(channel, operator)
        .generate_key(GenerateKeyRequest {
            org_id: org_id.clone(),
            actor_email: email.clone(),
        })
        .await
        .expect("generate key")
        .into_inner()
        .key;
    (org_id, email, key)
}

/// A new service account; returns its token.
pub async fn service_account(channel: Channel, operator: Bearer, name: &str, role: Role) -> String {
    AccessServiceClient::with_interceptor(channel, operator)
        .create_service_account(CreateServiceAccountRequest {
            name: name.into(),
            role: role as i32,
        })
        .await
        .expect("create account")
        .into_inner()
        .token
}
