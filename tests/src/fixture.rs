//! The server under test. Tests ask the fixture for addresses and accounts instead of
//! using constants, so the same test runs against a single in-process node (the
//! default) or, with `AVIARY_TEST_TARGET=cluster`, against a multi-process cluster of
//! 3 session nodes and 2 edges ([`crate::cluster`]). In a cluster, party `i` uses
//! edge `i mod 2`, and consecutive accounts are owned by different session nodes,
//! so every exchange crosses edges and session nodes.

use crate::cluster::Cluster;
use crate::pki::TestPki;
use crate::raw::RawClient;
use aviary::Config;
use aviary::server::Spawned;
use aviary_edge::ListenerKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// What the fixture runs.
enum Target {
    Node(Option<Spawned>),
    /// Shared by every test of the binary that needs no special configuration.
    SharedCluster(Arc<Cluster>),
    /// A cluster for one test (configuration changes, restarts).
    OwnCluster(Box<Cluster>),
}

/// A running server with its own data, on free loopback ports.
pub struct TestServer {
    target: Target,
    data: tempfile::TempDir,
    /// Cluster only: the session nodes, and which owns each partition.
    sessions: Vec<String>,
    claims: Vec<Option<String>>,
    accounts: AtomicUsize,
    pub domain: String,
    /// STARTTLS (5222-style) endpoints.
    pub c2s: Vec<SocketAddr>,
    /// Direct-TLS (5223-style) endpoints.
    pub c2s_tls: Vec<SocketAddr>,
    /// Single node only: its admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub ops: Option<SocketAddr>,
}

/// True when the tests run against a cluster.
pub fn cluster_mode() -> bool {
    std::env::var("AVIARY_TEST_TARGET").is_ok_and(|t| t == "cluster")
}

impl TestServer {
    /// A server for `localhost` with in-band registration open (how tests create
    /// accounts) and a certificate from the test CA.
    pub fn start() -> TestServer {
        // Tests that restart the server need a cluster of their own.
        if cluster_mode() && std::env::var("AVIARY_TEST_CLUSTER_PER_TEST").is_ok_and(|v| v == "1") {
            return Self::start_with(|_| {});
        }
        if cluster_mode() {
            static SHARED: OnceLock<Arc<Cluster>> = OnceLock::new();
            let shared = SHARED
                .get_or_init(|| {
                    Arc::new(
                        Cluster::start(3, 2, |_| {})
                            .unwrap_or_else(|e| panic!("start cluster: {e:#}")),
                    )
                })
                .clone();
            return Self::from_cluster(Target::SharedCluster(shared));
        }
        Self::start_with(|_| {})
    }

    fn from_cluster(target: Target) -> TestServer {
        let cluster: &Cluster = match &target {
            Target::SharedCluster(c) => c,
            Target::OwnCluster(c) => c,
            Target::Node(_) => unreachable!("from_cluster takes a cluster"),
        };
        let claims = cluster
            .claims()
            .unwrap_or_else(|e| panic!("read claims: {e:#}"));
        TestServer {
            c2s: cluster.edges(),
            c2s_tls: cluster.edges_tls(),
            ops: None,
            sessions: cluster.session_names(),
            claims,
            accounts: AtomicUsize::new(0),
            target,
            data: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            domain: "localhost".to_owned(),
        }
    }

    /// Like [`TestServer::start`], with configuration changes applied last.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        if cluster_mode() {
            let mut domain = None;
            let cluster = Cluster::start(3, 2, |c| {
                tweak(c);
                domain = Some(c.server.domains[0].clone());
            })
            .unwrap_or_else(|e| panic!("start cluster: {e:#}"));
            let mut s = Self::from_cluster(Target::OwnCluster(Box::new(cluster)));
            if let Some(d) = domain {
                s.domain = d;
            }
            return s;
        }
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = test_config(data.path(), tweak);
        let domain = config.server.domains[0].clone();
        let node = aviary::server::spawn(config).unwrap_or_else(|e| panic!("start node: {e:#}"));
        let pick = |kind| {
            node.c2s
                .iter()
                .filter(|(_, k)| *k == kind)
                .map(|(a, _)| *a)
                .collect::<Vec<_>>()
        };
        TestServer {
            c2s: pick(ListenerKind::StartTls),
            c2s_tls: pick(ListenerKind::DirectTls),
            ops: node.ops,
            target: Target::Node(Some(node)),
            sessions: Vec::new(),
            claims: Vec::new(),
            accounts: AtomicUsize::new(0),
            data,
            domain,
        }
    }

    /// Restarts the server on the same data (new ports for a single node; a
    /// cluster restarts every node in place).
    pub fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        match &mut self.target {
            Target::Node(node) => {
                if let Some(node) = node.take() {
                    node.stop();
                }
            }
            Target::OwnCluster(c) => {
                c.restart_all()
                    .unwrap_or_else(|e| panic!("restart cluster: {e:#}"));
                self.claims = c.claims().unwrap_or_else(|e| panic!("{e:#}"));
                return;
            }
            Target::SharedCluster(_) => {
                panic!("a shared cluster cannot be restarted: start this test with start_with")
            }
        }
        let config = test_config(self.data.path(), tweak);
        let node = aviary::server::spawn(config).unwrap_or_else(|e| panic!("restart node: {e:#}"));
        self.c2s = node
            .c2s
            .iter()
            .filter(|(_, k)| *k == ListenerKind::StartTls)
            .map(|(a, _)| *a)
            .collect();
        self.c2s_tls = node
            .c2s
            .iter()
            .filter(|(_, k)| *k == ListenerKind::DirectTls)
            .map(|(a, _)| *a)
            .collect();
        self.ops = node.ops;
        self.target = Target::Node(Some(node));
    }

    /// The STARTTLS endpoint for party `i` (parties spread over the endpoints).
    pub fn endpoint(&self, i: usize) -> SocketAddr {
        self.c2s[i % self.c2s.len()]
    }

    /// A fresh, unique account name (tests run in parallel against shared servers).
    pub fn unique_user(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "{prefix}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Creates an account through in-band registration (XEP-0077), as a real
    /// deployment would let a client do.
    pub async fn register(&self, user: &str, password: &str) -> anyhow::Result<()> {
        self.register_in(&self.domain, user, password).await
    }

    /// Like [`TestServer::register`], in another of the served domains.
    pub async fn register_in(
        &self,
        domain: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        RawClient::register(self.endpoint(0), domain, user, password).await
    }

    /// A unique account name; in a cluster, owned by the next session node in turn
    /// so that consecutive parties live on different nodes.
    fn account_name(&self, prefix: &str) -> String {
        if self.sessions.is_empty() {
            return self.unique_user(prefix);
        }
        let k = self.accounts.fetch_add(1, Ordering::Relaxed);
        let want = &self.sessions[k % self.sessions.len()];
        // A third of the names qualify; the bound only guards against a cluster that
        // is not what the fixture believes it is.
        for _ in 0..1000 {
            let user = self.unique_user(prefix);
            let p = aviary_cluster::ring::partition(&format!("{user}@{}", self.domain)) as usize;
            if self.claims.get(p).and_then(Option::as_ref) == Some(want) {
                return user;
            }
        }
        panic!("no partition of the cluster is owned by {want}")
    }

    /// Registers a unique account; returns (localpart, password).
    pub async fn new_account(&self, prefix: &str) -> (String, String) {
        let user = self.account_name(prefix);
        let password = format!("pw-{user}");
        self.register(&user, &password)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        (user, password)
    }

    /// Logs in with the raw client (STARTTLS, SCRAM-SHA-256, bind).
    pub async fn login(&self, i: usize, user: &str, password: &str, resource: &str) -> RawClient {
        RawClient::login(
            self.endpoint(i),
            &self.domain,
            user,
            password,
            Some(resource),
        )
        .await
        .unwrap_or_else(|e| panic!("login {user}/{resource}: {e:#}"))
    }

    pub fn bare(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Target::Node(node) = &mut self.target
            && let Some(node) = node.take()
        {
            node.stop();
        }
    }
}

fn test_config(data: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let pki = TestPki::get();
    let mut config = Config::load("", "test", std::iter::empty::<(String, String)>())
        .unwrap_or_else(|e| panic!("{e}"));
    config.server.data_dir = data.to_path_buf();
    config.server.workers = 2;
    config.server.shutdown_grace = std::time::Duration::from_secs(2);
    config.server.node_id = Some("test-node".into());
    config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))];
    config.c2s.listen_tls = vec!["127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))];
    config.admin.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    config.tls.certificate = Some(pki.cert_pem.clone());
    config.tls.key = Some(pki.key_pem.clone());
    config.registration.enabled = true;
    config.registration.per_ip = 0;
    // Fast logins; the minimum RFC 7677 allows.
    config.auth.scram_iterations = 4096;
    config.auth.max_failures_per_account = 0;
    tweak(&mut config);
    config
}
