//! A real zsc server on 127.0.0.1:0 with a fresh temp data dir, and generated clients.

use std::{path::Path, time::Duration};

use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel, Code, Status};
use zsc::client::Bearer;
use zsc::proto::{
    access_service_client::AccessServiceClient, key_service_client::KeyServiceClient,
    user_service_client::UserServiceClient, *,
};
use zsc::server::{Config, Server};

pub type Authed = InterceptedService<Channel, Bearer>;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub dir: TempDir,
    pub operator_token: String,
    /// Set when the config asked for a metrics listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Set when the config asked for a plaintext health listener.
    pub health_addr: Option<std::net::SocketAddr>,
    /// The CA to trust, when the server serves TLS: clients then use https.
    pub tls_ca: Option<Vec<u8>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<zsc::domain::Result<()>>>,
    /// On the etcd backend: the store's URL, and the cluster, which lives as long as the server.
    store_url: Option<String>,
    cluster: Option<Box<dyn std::any::Any + Send>>,
}

/// The backend `TestServer::start` runs on: sled, or etcd with `ZSC_TEST_BACKEND=etcd` (and the
/// `etcd` feature), so the same integration tests run against both.
fn on_etcd() -> bool {
    cfg!(feature = "etcd") && std::env::var("ZSC_TEST_BACKEND").as_deref() == Ok("etcd")
}

/// Test-speed settings; everything else is production's.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.store.cache_bytes = 8 * 1024 * 1024;
    config.shutdown_grace = Duration::from_secs(5);
    config
}

/// The test config, on the store at `url` if one is given.
fn with_store(dir: &Path, url: Option<&str>) -> Config {
    let mut config = test_config(dir);
    config.store_url = url.map(str::to_owned);
    config
}

/// Runs `server` on `listener` until the returned sender is used (or dropped).
fn run_until_stopped(
    server: Server,
    listener: TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<zsc::domain::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        if on_etcd() {
            return Self::start_on_etcd(dir).await;
        }
        Self::start_with(dir, test_config).await
    }

    /// A replica on a one-member etcd cluster of its own.
    #[cfg(feature = "etcd")]
    async fn start_on_etcd(dir: TempDir) -> Self {
        let cluster = tokio::task::spawn_blocking(|| zsc::testing::EtcdCluster::start(1))
            .await
            .unwrap();
        let url = cluster.url("/zsc");
        let mut server = Self::start_on(dir, "127.0.0.1:0", |d| with_store(d, Some(&url))).await;
        server.store_url = Some(url);
        server.cluster = Some(Box::new(cluster));
        server
    }

    #[cfg(not(feature = "etcd"))]
    async fn start_on_etcd(_: TempDir) -> Self {
        unreachable!("on_etcd() is false without the etcd feature")
    }

    pub async fn start_with(dir: TempDir, configure: impl FnOnce(&Path) -> Config) -> Self {
        Self::start_on(dir, "127.0.0.1:0", configure).await
    }

    /// Starts on a given address (a restart reuses its port so clients can reconnect).
    pub async fn start_on(
        dir: TempDir,
        addr: &str,
        configure: impl FnOnce(&Path) -> Config,
    ) -> Self {
        let server = Server::connect(configure(dir.path()))
            .await
            .expect("server opens");
        let metrics_addr = server.metrics_addr();
        let health_addr = server.health_addr();
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let operator_token = zsc::testkit::operator_token(dir.path());
        let (stop, task) = run_until_stopped(server, listener);
        TestServer {
            addr,
            dir,
            operator_token,
            metrics_addr,
            health_addr,
            tls_ca: None,
            stop: Some(stop),
            task: Some(task),
            store_url: None,
            cluster: None,
        }
    }

    /// A server whose streams send a checkpoint every 100 ms (not every second), for tests
    /// that wait for heartbeats.
    pub async fn start_fast_heartbeat() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        TestServer::start_with(dir, |d| {
            let mut config = test_config(d);
            config.watch.heartbeat = Duration::from_millis(100);
            config
        })
        .await
    }

    /// A server that also serves Prometheus metrics, on a port of its own.
    pub async fn start_with_metrics() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        TestServer::start_with(dir, |d| {
            let mut config = test_config(d);
            config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            config
        })
        .await
    }

    /// A replica on a store on etcd (`url`), in a fresh data dir. The replica that initialised
    /// the store finds its token in operator.token; the others are given it.
    #[cfg(feature = "etcd")]
    pub async fn start_replica(url: &str, operator_token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        config.store_url = Some(url.to_owned());
        let server = Server::connect(config).await.expect("replica connects");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let written = std::fs::read_to_string(dir.path().join("operator.token")).ok();
        let operator_token = match (written, operator_token) {
            (Some(token), None) => token.trim().to_owned(),
            (None, Some(token)) => token.to_owned(),
            (written, given) => panic!(
                "only the initialising replica writes operator.token: written {}, given {}",
                written.is_some(),
                given.is_some()
            ),
        };
        let (stop, task) = run_until_stopped(server, listener);
        TestServer {
            addr,
            dir,
            operator_token,
            metrics_addr: None,
            health_addr: None,
            tls_ca: None,
            stop: Some(stop),
            task: Some(task),
            store_url: None,
            cluster: None,
        }
    }

    /// Stops the server (as SIGTERM would) and returns its data dir.
    pub async fn stop(mut self) -> TempDir {
        self.shutdown().await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    /// Stops and starts again on the same data dir and port.
    pub async fn restart(mut self) -> Self {
        let addr = self.addr.to_string();
        let (url, cluster) = (self.store_url.take(), self.cluster.take());
        let dir = self.stop().await;
        let mut server = Self::start_on(dir, &addr, |d| with_store(d, url.as_deref())).await;
        server.store_url = url;
        server.cluster = cluster;
        server
    }

    pub fn url(&self) -> String {
        match self.tls_ca {
            Some(_) => format!("https://127.0.0.1:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = zsc::client::endpoint(&self.url(), self.tls_ca.as_deref()).unwrap();
        endpoint.connect().await.expect("connect")
    }

    pub async fn users(&self, token: &str) -> UserServiceClient<Authed> {
        UserServiceClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    pub async fn keys(&self, token: &str) -> KeyServiceClient<Authed> {
        KeyServiceClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    pub async fn access(&self, token: &str) -> AccessServiceClient<Authed> {
        AccessServiceClient::with_interceptor(self.channel().await, Bearer::new(token).unwrap())
    }

    pub async fn op_users(&self) -> UserServiceClient<Authed> {
        self.users(&self.operator_token).await
    }

    pub async fn op_keys(&self) -> KeyServiceClient<Authed> {
        self.keys(&self.operator_token).await
    }

    pub async fn op_access(&self) -> AccessServiceClient<Authed> {
        self.access(&self.operator_token).await
    }

    /// A new service account's token.
    pub async fn account(&self, name: &str, role: Role) -> String {
        let response = self
            .op_access()
            .await
            .create_service_account(CreateServiceAccountRequest {
                name: name.into(),
                role: role as i32,
            })
            .await
            .expect("create account")
            .into_inner();
        response.token
    }

    /// An org with one active administrator; returns (org_id, admin email).
    pub async fn org_with_admin(&self, name: &str) -> (String, String) {
        let operator = Bearer::new(&self.operator_token).unwrap();
        zsc::testkit::org_with_admin(self.channel().await, operator, name).await
    }

    pub async fn user(&self, org_id: &str, email: &str, profile: Profile) -> User {
        self.op_users()
            .await
            .create_user(CreateUserRequest {
                org_id: org_id.into(),
                email: email.into(),
                display_name: "Test User".into(),
                profile: profile as i32,
            })
            .await
            .expect("create user")
            .into_inner()
    }

    /// An org with its administrator and a key, one validation that passes and one refused
    /// (UNAUTHENTICATED: another email): what the metrics tests count. Returns (org id,
    /// administrator, key).
    pub async fn validated_and_refused(&self) -> (String, String, String) {
        let (org_id, admin) = self.org_with_admin("Acme").await;
        let (key, _) = self.key(&org_id, &admin).await;
        self.validate(&admin, &key).await.unwrap();
        expect_code(
            self.validate("other@acme.example.com", &key).await,
            Code::Unauthenticated,
        );
        (org_id, admin, key)
    }

    /// Generates the org's key; returns (key, key_id).
    pub async fn key(&self, org_id: &str, actor: &str) -> (String, String) {
        let response = self
            .op_keys()
            .await
            .generate_key(GenerateKeyRequest {
                org_id: org_id.into(),
                actor_email: actor.into(),
            })
            .await
            .expect("generate key")
            .into_inner();
        (response.key, response.info.unwrap().key_id)
    }

    /// A revocation stream from the head, as the service account holding `token`.
    pub async fn subscribe(&self, token: &str) -> tonic::Streaming<WatchRevocationsResponse> {
        let mut keys = self.keys(token).await;
        let stream = keys.watch_revocations(watch_from(None)).await.unwrap();
        stream.into_inner()
    }

    /// DeactivateUser, as the operator.
    pub async fn deactivate(&self, email: &str) {
        let request = DeactivateUserRequest {
            email: email.into(),
        };
        self.op_users()
            .await
            .deactivate_user(request)
            .await
            .unwrap();
    }

    /// ReactivateUser, as the operator.
    pub async fn reactivate(&self, email: &str) {
        let request = ReactivateUserRequest {
            email: email.into(),
        };
        self.op_users()
            .await
            .reactivate_user(request)
            .await
            .unwrap();
    }

    /// RevokeKey, as the operator; returns the revocation it logged.
    pub async fn revoke(&self, org_id: &str) -> RevocationEvent {
        let request = RevokeKeyRequest {
            org_id: org_id.into(),
        };
        let response = self.op_keys().await.revoke_key(request).await.unwrap();
        response.into_inner().event.expect("a revocation")
    }

    /// GetKeyInfo of the org's key, as the operator.
    pub async fn key_info(&self, org_id: &str) -> zsc::proto::KeyInfo {
        self.op_keys()
            .await
            .get_key_info(zsc::proto::GetKeyInfoRequest {
                org_id: org_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn validate(&self, email: &str, key: &str) -> Result<ValidateKeyResponse, Status> {
        self.op_keys()
            .await
            .validate_key(ValidateKeyRequest {
                email: email.into(),
                key: key.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The services a client lists through reflection.
pub const LISTED_SERVICES: [&str; 4] = [
    "zsc.v1.UserService",
    "zsc.v1.KeyService",
    "zsc.v1.AccessService",
    "grpc.health.v1.Health",
];

/// Asserts a call failed with `expected` and returns its message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, expected: Code) -> String {
    match result {
        Ok(value) => panic!("expected {expected:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), expected, "message: {}", status.message());
            status.message().to_owned()
        }
    }
}

/// The whole retained revocation log, read with WatchRevocations(after_sequence = 0) up to
/// the first checkpoint.
pub async fn read_log(server: &TestServer) -> Vec<RevocationEvent> {
    whole_log(&mut server.op_keys().await).await.0
}

/// The whole retained log through `keys`, up to the first checkpoint, and that checkpoint's
/// store id.
pub async fn whole_log(keys: &mut KeyServiceClient<Authed>) -> (Vec<RevocationEvent>, String) {
    let mut stream = keys
        .watch_revocations(WatchRevocationsRequest {
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.expect("stream") {
        match message.event.expect("event set") {
            watch_revocations_response::Event::Revocation(event) => events.push(event),
            watch_revocations_response::Event::Checkpoint(checkpoint) => {
                return (events, checkpoint.store_id)
            }
        }
    }
    panic!("stream ended before a checkpoint")
}

impl TestServer {
    /// Regenerates the org's key (one REGENERATED event); returns the new key.
    pub async fn regenerate(&self, org_id: &str, actor: &str) -> String {
        let request = RegenerateKeyRequest {
            org_id: org_id.into(),
            actor_email: actor.into(),
        };
        self.op_keys()
            .await
            .regenerate_key(request)
            .await
            .expect("regenerate")
            .into_inner()
            .key
    }

    pub async fn watch(
        &self,
        request: WatchRevocationsRequest,
    ) -> Result<tonic::Streaming<WatchRevocationsResponse>, Status> {
        self.op_keys()
            .await
            .watch_revocations(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The next message, failing the test if none comes within 10 s.
pub async fn next(
    stream: &mut tonic::Streaming<WatchRevocationsResponse>,
) -> Result<watch_revocations_response::Event, Status> {
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")?;
    Ok(message
        .expect("stream still open")
        .event
        .expect("event set"))
}

impl TestServer {
    /// This server's store id, from the checkpoint a new stream starts with.
    pub async fn store_id(&self) -> String {
        let mut stream = self.watch(watch_from(None)).await.expect("watch");
        match next(&mut stream).await.expect("stream ok") {
            watch_revocations_response::Event::Checkpoint(c) => c.store_id,
            other => panic!("expected a checkpoint first, got {other:?}"),
        }
    }

    /// Resumes after `after` in this server's store (a cursor > 0 needs its store id).
    pub async fn resume_from(&self, after: u64) -> WatchRevocationsRequest {
        WatchRevocationsRequest {
            after_sequence: Some(after),
            store_id: self.store_id().await,
            org_ids: Vec::new(),
        }
    }
}

/// From the head (`None`) or, for `Some(0)`, the whole log; a cursor > 0 takes
/// [`TestServer::resume_from`].
pub fn watch_from(after: Option<u64>) -> WatchRevocationsRequest {
    WatchRevocationsRequest {
        after_sequence: after,
        ..Default::default()
    }
}

impl TestServer {
    /// `n` orgs, each with an administrator and a key: (org_id, admin email).
    pub async fn orgs_with_keys(&self, n: usize) -> Vec<(String, String)> {
        let mut orgs = Vec::new();
        for i in 0..n {
            let (org_id, admin) = self.org_with_admin(&format!("Org {i}")).await;
            self.key(&org_id, &admin).await;
            orgs.push((org_id, admin));
        }
        orgs
    }

    /// Regenerates each org's key `times` times: one task (and connection) per org, all at
    /// once, so revocations race each other.
    pub async fn regenerate_concurrently(&self, orgs: &[(String, String)], times: usize) {
        let mut writers = Vec::new();
        for (org_id, admin) in orgs {
            let (org_id, admin) = (org_id.clone(), admin.clone());
            let mut keys = self.op_keys().await;
            writers.push(tokio::spawn(async move {
                for _ in 0..times {
                    let request = RegenerateKeyRequest {
                        org_id: org_id.clone(),
                        actor_email: admin.clone(),
                    };
                    keys.regenerate_key(request).await.unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    }
}

impl TestServer {
    /// The first page of orgs, as the operator sees it.
    pub async fn orgs(&self) -> ListOrgsResponse {
        let request = ListOrgsRequest::default();
        self.op_users()
            .await
            .list_orgs(request)
            .await
            .expect("list orgs")
            .into_inner()
    }

    /// The first page of an org's users, as the operator sees it.
    pub async fn users_of(&self, org_id: &str) -> ListUsersResponse {
        let request = ListUsersRequest {
            org_id: org_id.into(),
            ..Default::default()
        };
        self.op_users()
            .await
            .list_users(request)
            .await
            .expect("list users")
            .into_inner()
    }

    pub async fn accounts(&self) -> ListServiceAccountsResponse {
        let request = ListServiceAccountsRequest {};
        self.op_access()
            .await
            .list_service_accounts(request)
            .await
            .expect("list accounts")
            .into_inner()
    }
}
