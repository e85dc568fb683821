//! The data every row uses: an org with a key, a consumer account, and 64 orgs for the writers.

use super::*;

// The data the rows use

pub(crate) struct Fixture {
    pub(crate) url: String,
    pub(crate) operator: Bearer,
    pub(crate) consumer: Bearer,
    pub(crate) consumer_token: String,
    pub(crate) email: String,
    pub(crate) key: String,
    /// 64 orgs, each with an administrator and a key: (org_id, admin email).
    pub(crate) orgs: Vec<(String, String)>,
}

pub(crate) async fn org_with_key(
    channel: Channel,
    operator: Bearer,
    name: String,
) -> (String, String, String) {
    zsc::testkit::org_with_key(channel, operator, &name).await
}

pub(crate) async fn fixture(url: &str, operator_token: &str) -> Fixture {
    let operator = Bearer::new(operator_token).expect("operator token");
    let channel = connect(url).await;
    wait_serving(url).await;
    // Unique per fixture: the pinned pass (`--pin`) makes a second one on the same server.
    static MADE: AtomicU64 = AtomicU64::new(0);
    let run = format!(
        "{}-{}",
        std::process::id(),
        MADE.fetch_add(1, Ordering::Relaxed)
    );
    let (_, email, key) =
        org_with_key(channel.clone(), operator.clone(), format!("Bench {run}")).await;
    let name = format!("bench-{run}");
    let consumer_token =
        zsc::testkit::service_account(channel.clone(), operator.clone(), &name, Role::Consumer)
            .await;
    // The 64 orgs of rows 4 and 6, created at once (their writes share flushes).
    let made: Vec<_> = (0..64)
        .map(|i| {
            tokio::spawn(org_with_key(
                channel.clone(),
                operator.clone(),
                format!("Bench {run} writer {i}"),
            ))
        })
        .collect();
    let mut orgs = Vec::new();
    for task in made {
        let (org, admin, _) = task.await.expect("setup task");
        orgs.push((org, admin));
    }
    Fixture {
        url: url.to_owned(),
        operator,
        consumer: Bearer::new(&consumer_token).expect("consumer token"),
        consumer_token,
        email,
        key,
        orgs,
    }
}
