//! The server under test. Tests ask the fixture for addresses and accounts instead of
//! using constants, so the same test can run against a single in-process node here
//! and, later, against a multi-node cluster.

use crate::pki::TestPki;
use crate::raw::RawClient;
use anyhow::{Context, bail};
use aviary::Config;
use aviary::server::Spawned;
use aviary_edge::ListenerKind;
use aviary_xmpp::{Element, ns};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running node with its own data directory, on free loopback ports.
pub struct TestServer {
    node: Option<Spawned>,
    data: tempfile::TempDir,
    pub domain: String,
    /// STARTTLS (5222-style) endpoints.
    pub c2s: Vec<SocketAddr>,
    /// Direct-TLS (5223-style) endpoints.
    pub c2s_tls: Vec<SocketAddr>,
}

impl TestServer {
    /// A node for `localhost` with in-band registration open (how tests create
    /// accounts) and a certificate from the test CA.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Like [`TestServer::start`], with configuration changes applied last.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
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
            node: Some(node),
            data,
            domain,
        }
    }

    /// Restarts the node on the same data directory (new ports).
    pub fn restart(&mut self, tweak: impl FnOnce(&mut Config)) {
        if let Some(node) = self.node.take() {
            node.stop();
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
        self.node = Some(node);
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
        let mut c = RawClient::connect(self.endpoint(0), domain).await?;
        c.open().await?;
        c.starttls().await?;
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "reg1")
            .with_child(
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("username", ns::REGISTER).with_text(user))
                    .with_child(Element::new("password", ns::REGISTER).with_text(password)),
            );
        c.send(&iq).await?;
        let reply = c.next_element().await.context("registration reply")?;
        if reply.attr("type") != Some("result") {
            bail!("registration of {user} failed: {reply:?}");
        }
        Ok(())
    }

    /// Registers a unique account; returns (localpart, password).
    pub async fn new_account(&self, prefix: &str) -> (String, String) {
        let user = self.unique_user(prefix);
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
        if let Some(node) = self.node.take() {
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
