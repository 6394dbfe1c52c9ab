//! Wiring one Aviary process (role `all`): the embedded store, TLS, worker
//! arbiters, the session layer with its in-process router, and the client
//! listeners — plus orderly shutdown.

use crate::certs;
use crate::config::Config;
use actix::prelude::*;
use anyhow::Context as _;
use aviary_edge::{EdgeConfig, EdgeContext, ListenerKind, Listeners, TlsContext};
use aviary_router::EdgeId;
use aviary_session::{LocalRouter, ServerInfo, Settings, SoftwareVersion, Users};
use aviary_store::Stores;
use aviary_store::embedded::EmbeddedStore;
use aviary_xmpp::{StreamError, StreamErrorCondition};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A started node, inside its actix system.
pub struct Node {
    pub listeners: Listeners,
    admin: tokio::task::JoinHandle<()>,
    admin_socket: std::path::PathBuf,
    pub edge: Arc<EdgeContext>,
    pub users: Users,
    workers: Vec<Arbiter>,
    grace: Duration,
}

impl Node {
    pub fn c2s_addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.listeners.addrs().to_vec()
    }

    /// Stops accepting, closes every client stream with `<system-shutdown/>`, waits
    /// (bounded by the grace period) for them to go, then stops the workers.
    pub async fn shutdown(self) {
        self.listeners.stop();
        self.admin.abort();
        let _ = std::fs::remove_file(&self.admin_socket);
        let open = self.edge.connections();
        if open > 0 {
            tracing::info!(connections = open, "closing client streams");
        }
        self.edge
            .close_all(StreamError::new(StreamErrorCondition::SystemShutdown));
        let deadline = Instant::now() + self.grace;
        while self.edge.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for w in &self.workers {
            w.stop();
        }
    }
}

pub fn edge_config(config: &Config) -> EdgeConfig {
    EdgeConfig {
        domains: config.server.domains.clone(),
        edge_id: EdgeId(config.node_id()),
        require_tls: config.c2s.require_tls,
        allow_insecure_plain: config.c2s.allow_insecure_plain,
        negotiation_timeout: config.c2s.negotiation_timeout,
        idle_timeout: config.c2s.idle_timeout,
        keepalive_interval: config.c2s.keepalive_interval,
        max_stanza_bytes: config.c2s.max_stanza_size,
        pre_auth_max_stanza_bytes: config.c2s.max_stanza_size_pre_auth,
        max_auth_failures_per_connection: config.auth.max_failures_per_connection,
        max_auth_failures_per_account: config.auth.max_failures_per_account,
        auth_failure_window: config.auth.failure_window,
        registration: config.registration.enabled,
        registrations_per_ip: config.registration.per_ip,
        registration_window: config.registration.window,
        scram_iterations: config.auth.scram_iterations,
        write_high_watermark: config.c2s.write_high_watermark,
        write_timeout: config.c2s.write_timeout,
        pre_approval: config.im.presence,
    }
}

pub fn im_settings(config: &Config) -> Settings {
    Settings {
        max_resources: config.server.max_resources_per_account,
        presence: config.im.presence,
        im: config.im.messages,
        offline_max: config.im.offline_max,
        roster: aviary_im::roster::Limits {
            max_items: config.im.roster_max_items,
            ..aviary_im::roster::Limits::default()
        },
    }
}

pub fn server_info(config: &Config) -> ServerInfo {
    let mut extra_features = Vec::new();
    if config.registration.enabled {
        extra_features.push(aviary_xmpp::ns::REGISTER.to_owned());
    }
    if config.im.messages && config.im.offline_max > 0 {
        // XEP-0160 §6
        extra_features.push(aviary_xmpp::ns::OFFLINE.to_owned());
    }
    ServerInfo {
        domains: config.server.domains.clone(),
        version: config.version.enabled.then(|| SoftwareVersion {
            name: "Aviary".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os: config
                .version
                .show_os
                .then(|| std::env::consts::OS.to_owned()),
        }),
        extra_features,
    }
}

/// Starts a node on the current actix system.
pub async fn start(config: &Config) -> anyhow::Result<Node> {
    if config.c2s.allow_insecure_plain {
        tracing::warn!(
            "!!! c2s.allow_insecure_plain is ON: passwords may cross the network in the \
             clear. Use this only for loopback benchmarks and tests. !!!"
        );
    }
    let store = EmbeddedStore::open(&config.server.data_dir).with_context(|| {
        format!(
            "cannot open the data store in {}",
            config.server.data_dir.display()
        )
    })?;
    let cert = certs::load_or_generate(config)?;
    if cert.generated {
        tracing::info!(
            path = %cert.source.display(),
            fingerprint = %cert.fingerprint(),
            "generated a self-signed certificate; clients must be told to trust it"
        );
    } else {
        tracing::info!(path = %cert.source.display(), fingerprint = %cert.fingerprint(), "loaded certificate");
    }
    let tls = TlsContext::new(cert.chain, cert.key).context("cannot use the TLS certificate")?;
    let stores = Stores::from_backend(store);
    let admin = crate::admin::serve(&config.server.data_dir, stores.clone()).await?;

    let n = if config.server.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.server.workers
    };
    let workers: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();

    let users = Users::new(
        server_info(config),
        im_settings(config),
        stores.clone(),
        handles.clone(),
    );
    let router = Arc::new(LocalRouter::new(users.clone()));
    let edge = EdgeContext::new(
        edge_config(config),
        Some(tls),
        stores.accounts.clone(),
        router,
    );

    let mut specs: Vec<(SocketAddr, ListenerKind)> = Vec::new();
    specs.extend(
        config
            .c2s
            .listen
            .iter()
            .map(|a| (*a, ListenerKind::StartTls)),
    );
    specs.extend(
        config
            .c2s
            .listen_tls
            .iter()
            .map(|a| (*a, ListenerKind::DirectTls)),
    );
    let listeners = match Listeners::start(edge.clone(), &specs, handles).await {
        Ok(l) => l,
        Err(e) => {
            for w in &workers {
                w.stop();
            }
            admin.abort();
            return Err(e.into());
        }
    };
    tracing::info!(
        domains = ?config.server.domains,
        workers = n,
        node = %config.node_id(),
        "Aviary is ready"
    );
    Ok(Node {
        listeners,
        admin,
        admin_socket: crate::admin::socket_path(&config.server.data_dir),
        edge,
        users,
        workers,
        grace: config.server.shutdown_grace,
    })
}

/// Runs a node until SIGINT or SIGTERM. Blocks the calling thread.
pub fn run(config: Config) -> anyhow::Result<()> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let node = start(&config).await?;
        wait_for_signal().await?;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

/// A node running on its own thread, for tests and embedding.
pub struct Spawned {
    pub c2s: Vec<(SocketAddr, ListenerKind)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.c2s.iter().find(|(_, k)| *k == kind).map(|(a, _)| *a)
    }

    /// Shuts the node down and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts a node on a new thread with its own actix system; returns once it
/// listens.
pub fn spawn(config: Config) -> anyhow::Result<Spawned> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("aviary-node".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                match start(&config).await {
                    Ok(node) => {
                        let _ = ready_tx.send(Ok(node.c2s_addrs()));
                        let _ = stop_rx.await;
                        node.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .context("cannot start the node thread")?;
    let c2s = ready_rx
        .recv()
        .context("the node thread ended before it was ready")??;
    Ok(Spawned {
        c2s,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
