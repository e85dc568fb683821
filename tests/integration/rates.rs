//! Per-caller rate limits: a consumer past its limit is refused with a RetryInfo and others
//! are not; failed authentications are limited per address, valid tokens never.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use zsc::api::RateLimits;
use zsc::proto::{key_service_client::KeyServiceClient, *};

use crate::common::*;
use crate::operations::{sample, scrape};

/// A server with metrics and these limits, and a key to validate: (server, admin email, key).
async fn limited(limits: RateLimits) -> (TestServer, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(dir, |d| {
        let mut config = test_config(d);
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        config.rate_limits = limits;
        config
    })
    .await;
    let (org_id, admin) = server.org_with_admin("Acme").await;
    let (key, _) = server.key(&org_id, &admin).await;
    (server, admin, key)
}

fn validation(email: &str, key: &str) -> ValidateKeyRequest {
    ValidateKeyRequest {
        email: email.into(),
        key: key.into(),
    }
}

/// `n` validations by the account with `token`; the first refusal, if any.
async fn validate_n(
    server: &TestServer,
    token: &str,
    n: usize,
    admin: &str,
    key: &str,
) -> Option<Status> {
    let mut keys = server.keys(token).await;
    for _ in 0..n {
        if let Err(status) = keys.validate_key(validation(admin, key)).await {
            return Some(status);
        }
    }
    None
}

/// The refusal is RESOURCE_EXHAUSTED and says, in a RetryInfo, to wait a while.
fn assert_retry_later(status: &Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(!delay.is_zero(), "{delay:?}");
}

async fn limited_total(server: &TestServer, limit: &str) -> f64 {
    let text = scrape(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        !text.contains("127.0.0.1"),
        "no metric names an address:\n{text}"
    );
    sample(
        &text,
        &format!("zsc_rate_limited_total{{limit=\"{limit}\"}}"),
    )
}

#[tokio::test]
async fn a_consumer_past_its_limit_is_told_when_to_retry_and_others_are_not_held_back() {
    // Five a minute: the sixth call within the test is over, whatever the machine's speed.
    let (server, admin, key) = limited(RateLimits {
        consumer: Some("5/m".parse().unwrap()),
        accounts: vec!["bulk=100/m".parse().unwrap()],
        auth_failures: None,
    })
    .await;
    let desk = server.account("desk", Role::Consumer).await;
    let helpdesk = server.account("helpdesk", Role::Consumer).await;
    let bulk = server.account("bulk", Role::Consumer).await;

    assert!(validate_n(&server, &desk, 5, &admin, &key).await.is_none());
    let refused = validate_n(&server, &desk, 1, &admin, &key)
        .await
        .expect("over");
    assert_retry_later(&refused);
    assert!(refused.message().contains("desk"), "{}", refused.message());
    // Another consumer has its own allowance, an account with its own limit its own, and the
    // operator (not a consumer) none.
    assert!(validate_n(&server, &helpdesk, 5, &admin, &key)
        .await
        .is_none());
    assert!(validate_n(&server, &bulk, 20, &admin, &key).await.is_none());
    assert!(
        validate_n(&server, &server.operator_token, 20, &admin, &key)
            .await
            .is_none()
    );
    assert_eq!(limited_total(&server, "account").await, 1.0);
}

#[tokio::test]
async fn bad_tokens_are_limited_per_address_and_a_valid_token_never_is() {
    let (server, admin, key) = limited(RateLimits {
        auth_failures: Some("3/m".parse().unwrap()),
        ..RateLimits::default()
    })
    .await;
    let mut anonymous = KeyServiceClient::new(server.channel().await);
    let bad = || {
        let mut request = tonic::Request::new(validation(&admin, &key));
        request.metadata_mut().insert(
            "authorization",
            "Bearer zsc_sa_not_a_token".parse().unwrap(),
        );
        request
    };
    for _ in 0..3 {
        let status = anonymous.validate_key(bad()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let refused = anonymous.validate_key(bad()).await.unwrap_err();
    assert_retry_later(&refused);
    // No token at all is a failed authentication too.
    let refused = anonymous
        .validate_key(validation(&admin, &key))
        .await
        .unwrap_err();
    assert_retry_later(&refused);
    // From the same address, a valid token is served: every time.
    let desk = server.account("desk", Role::Consumer).await;
    assert!(validate_n(&server, &desk, 20, &admin, &key).await.is_none());
    assert_eq!(limited_total(&server, "address").await, 2.0);
}
