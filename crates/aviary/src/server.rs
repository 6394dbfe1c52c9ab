//! Wiring one Aviary process in its role — `all` (everything in one process, the
//! default), `edge` (client listeners, gRPC router to session nodes) or `session`
//! (user actors, gRPC server, shard ownership) — plus orderly shutdown.

use crate::certs;
use crate::config::{Config, Role, StoreBackend};
use actix::prelude::*;
use anyhow::Context as _;
use aviary_cluster::edge::{GrpcRouter, Timing};
use aviary_cluster::node::ClusterNode;
use aviary_cluster::peers::PeerLinks;
use aviary_cluster::server::NodeService;
use aviary_cluster::shards::{self, LeaseConfig};
use aviary_cluster::view::View;
use aviary_directory::{Locations, Membership, NodeInfo, NodeRole, Partitions, RedisDirectory};
use aviary_edge::{EdgeConfig, EdgeContext, ListenerKind, Listeners, TlsContext};
use aviary_router::{EdgeId, Router};
use aviary_session::{LocalRouter, ServerInfo, Settings, SoftwareVersion, Users};
use aviary_store::Stores;
use aviary_store::cql::{CqlConfig, CqlStore};
use aviary_store::embedded::EmbeddedStore;
use aviary_xmpp::{StreamError, StreamErrorCondition};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The cluster layer's own runtime (gRPC server and links, leases), and how to
/// stop what runs on it.
struct ClusterRuntime {
    rt: tokio::runtime::Runtime,
    shutdown: watch::Sender<bool>,
    /// Tasks to wait for on shutdown (the shard manager hands partitions over).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A started node, inside its actix system.
pub struct Node {
    pub listeners: Option<Listeners>,
    pub edge: Option<Arc<EdgeContext>>,
    pub users: Option<Users>,
    admin: Option<(tokio::task::JoinHandle<()>, std::path::PathBuf)>,
    workers: Vec<Arbiter>,
    grace: Duration,
    cluster: Option<ClusterRuntime>,
}

impl Node {
    pub fn c2s_addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.listeners
            .as_ref()
            .map(|l| l.addrs().to_vec())
            .unwrap_or_default()
    }

    /// Stops accepting, closes every client stream with `<system-shutdown/>`, waits
    /// (bounded by the grace period) for them to go, hands partitions over (session
    /// nodes), then stops the workers.
    pub async fn shutdown(self) {
        if let Some(l) = &self.listeners {
            l.stop();
        }
        if let Some((task, path)) = &self.admin {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
        let deadline = Instant::now() + self.grace;
        if let Some(edge) = &self.edge {
            let open = edge.connections();
            if open > 0 {
                tracing::info!(connections = open, "closing client streams");
            }
            edge.close_all(StreamError::new(StreamErrorCondition::SystemShutdown));
            while edge.connections() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(c) = self.cluster {
            let _ = c.shutdown.send(true);
            for t in c.tasks {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                let _ = tokio::time::timeout(left, t).await;
            }
            c.rt.shutdown_background();
        }
        // Stop the workers and wait for them (bounded): their actors hold the stores,
        // and the embedded store's file lock is only released once they are gone.
        for w in &self.workers {
            w.stop();
        }
        let workers = self.workers;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for w in workers {
                let _ = w.join();
            }
            let _ = done_tx.send(());
        });
        let waited =
            tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(10)))
                .await;
        if !matches!(waited, Ok(Ok(()))) {
            tracing::warn!("worker threads did not stop within 10s");
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

/// Opens the configured store backend.
pub async fn open_stores(config: &Config) -> anyhow::Result<(Stores, Option<EmbeddedStore>)> {
    match config.store.backend {
        StoreBackend::Embedded => {
            let store = EmbeddedStore::open(&config.server.data_dir).with_context(|| {
                format!(
                    "cannot open the data store in {}",
                    config.server.data_dir.display()
                )
            })?;
            Ok((Stores::from_backend(store.clone()), Some(store)))
        }
        StoreBackend::Cql => {
            let store = CqlStore::connect(cql_config(config)?)
                .await
                .context("cannot use the CQL store")?;
            Ok((Stores::from_backend(store), None))
        }
    }
}

pub fn cql_config(config: &Config) -> anyhow::Result<CqlConfig> {
    let s = &config.store;
    let password = match &s.cql_password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read store.cql_password_file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    Ok(CqlConfig {
        contact_points: s.cql_contact_points.clone(),
        keyspace: s.cql_keyspace.clone(),
        replication: s.cql_replication.clone(),
        consistency: crate::config::parse_consistency(&s.cql_consistency)
            .unwrap_or(aviary_store::cql::Consistency::LocalQuorum),
        request_timeout: s.cql_timeout,
        username: s.cql_username.clone(),
        password,
        offline_ttl: s.offline_ttl,
        ..CqlConfig::default()
    })
}

fn worker_count(config: &Config) -> usize {
    if config.server.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.server.workers
    }
}

fn tls_context(config: &Config) -> anyhow::Result<TlsContext> {
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
    TlsContext::new(cert.chain, cert.key).context("cannot use the TLS certificate")
}

async fn start_listeners(
    config: &Config,
    edge: Arc<EdgeContext>,
    handles: Vec<ArbiterHandle>,
) -> anyhow::Result<Listeners> {
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
    Ok(Listeners::start(edge, &specs, handles).await?)
}

fn cluster_runtime() -> anyhow::Result<(ClusterRuntime, watch::Receiver<bool>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aviary-cluster")
        .enable_all()
        .build()
        .context("cannot start the cluster runtime")?;
    let (tx, rx) = watch::channel(false);
    Ok((
        ClusterRuntime {
            rt,
            shutdown: tx,
            tasks: Vec::new(),
        },
        rx,
    ))
}

async fn directory(config: &Config, rt: &tokio::runtime::Handle) -> anyhow::Result<RedisDirectory> {
    let c = config.cluster.clone();
    rt.spawn(async move {
        RedisDirectory::connect(&c.redis_url, &c.redis_prefix, c.redis_timeout).await
    })
    .await
    .context("the cluster runtime failed")?
    .with_context(|| format!("cannot use Redis at {}", config.cluster.redis_url))
}

fn lease(config: &Config) -> LeaseConfig {
    LeaseConfig {
        ttl: config.cluster.lease_ttl,
        tick: config.cluster.lease_tick,
        margin: (config.cluster.lease_ttl / 3).max(config.cluster.lease_tick),
        ..LeaseConfig::default()
    }
}

/// Starts a node in its configured role on the current actix system.
pub async fn start(config: &Config) -> anyhow::Result<Node> {
    if config.c2s.allow_insecure_plain {
        tracing::warn!(
            "!!! c2s.allow_insecure_plain is ON: passwords may cross the network in the \
             clear. Use this only for loopback benchmarks and tests. !!!"
        );
    }
    let node = match config.cluster.role {
        Role::All => start_all(config).await?,
        Role::Edge => start_edge(config).await?,
        Role::Session => start_session(config).await?,
    };
    tracing::info!(
        domains = ?config.server.domains,
        role = ?config.cluster.role,
        node = %config.node_id(),
        "Aviary is ready"
    );
    Ok(node)
}

async fn start_all(config: &Config) -> anyhow::Result<Node> {
    let (stores, embedded) = open_stores(config).await?;
    let admin = match embedded {
        Some(_) => Some((
            crate::admin::serve(&config.server.data_dir, stores.clone()).await?,
            crate::admin::socket_path(&config.server.data_dir),
        )),
        None => None,
    };
    let tls = tls_context(config)?;
    let workers: Vec<Arbiter> = (0..worker_count(config)).map(|_| Arbiter::new()).collect();
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
    let listeners = match start_listeners(config, edge.clone(), handles).await {
        Ok(l) => l,
        Err(e) => {
            for w in &workers {
                w.stop();
            }
            if let Some((t, _)) = &admin {
                t.abort();
            }
            return Err(e);
        }
    };
    Ok(Node {
        listeners: Some(listeners),
        edge: Some(edge),
        users: Some(users),
        admin,
        workers,
        grace: config.server.shutdown_grace,
        cluster: None,
    })
}

async fn start_session(config: &Config) -> anyhow::Result<Node> {
    let (stores, _) = open_stores(config).await?;
    let (mut cluster, shutdown) = cluster_runtime()?;
    let handle = cluster.rt.handle().clone();
    let dir = directory(config, &handle).await?;
    let me = NodeInfo {
        id: config.node_id(),
        role: NodeRole::Session,
        addr: config.cluster.advertise(),
        incarnation: rand::random(),
    };
    let view = View::default();
    let peers = PeerLinks::new(me.id.clone(), me.incarnation, view.clone(), handle.clone());
    let locations: Arc<dyn Locations> = Arc::new(dir.clone());
    let node = ClusterNode::new(me.id.clone(), view, locations.clone(), peers);
    let workers: Vec<Arbiter> = (0..worker_count(config)).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
    let users = Users::new(server_info(config), im_settings(config), stores, handles);
    users.set_cluster(node.clone());
    node.set_users(users.clone());

    let listener = std::net::TcpListener::bind(config.cluster.grpc_listen)
        .with_context(|| format!("cannot listen for gRPC on {}", config.cluster.grpc_listen))?;
    listener.set_nonblocking(true)?;
    let service = NodeService::new(node.clone()).into_server();
    let mut stop = shutdown.clone();
    cluster.tasks.push(handle.spawn(async move {
        let incoming = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => tokio_stream::wrappers::TcpListenerStream::new(l),
            Err(e) => {
                tracing::error!(error = %e, "gRPC listener failed");
                return;
            }
        };
        let r = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));
    let members: Arc<dyn Membership> = Arc::new(dir.clone());
    let parts: Arc<dyn Partitions> = Arc::new(dir);
    cluster.tasks.push(handle.spawn(shards::run_session(
        node,
        me,
        members,
        parts,
        locations,
        lease(config),
        shutdown,
    )));
    tracing::info!(grpc = %config.cluster.grpc_listen, "session node listening");
    Ok(Node {
        listeners: None,
        edge: None,
        users: Some(users),
        admin: None,
        workers,
        grace: config.server.shutdown_grace,
        cluster: Some(cluster),
    })
}

async fn start_edge(config: &Config) -> anyhow::Result<Node> {
    let (stores, _) = open_stores(config).await?;
    let tls = tls_context(config)?;
    let (mut cluster, shutdown) = cluster_runtime()?;
    let handle = cluster.rt.handle().clone();
    let dir = directory(config, &handle).await?;
    let me = NodeInfo {
        id: config.node_id(),
        role: NodeRole::Edge,
        addr: String::new(),
        incarnation: rand::random(),
    };
    let view = View::default();
    let router = GrpcRouter::new(
        me.id.clone(),
        me.incarnation,
        view.clone(),
        handle.clone(),
        Timing::default(),
    );
    let workers: Vec<Arbiter> = (0..worker_count(config)).map(|_| Arbiter::new()).collect();
    let handles: Vec<ArbiterHandle> = workers.iter().map(Arbiter::handle).collect();
    let dyn_router: Arc<dyn Router> = router.clone();
    let edge = EdgeContext::new(
        edge_config(config),
        Some(tls),
        stores.accounts.clone(),
        dyn_router,
    );
    router.attach(&edge);
    let members: Arc<dyn Membership> = Arc::new(dir.clone());
    let parts: Arc<dyn Partitions> = Arc::new(dir);
    cluster.tasks.push(handle.spawn(shards::run_edge(
        view,
        me,
        members,
        parts,
        lease(config),
        shutdown,
        || {},
    )));
    let listeners = start_listeners(config, edge.clone(), handles).await?;
    Ok(Node {
        listeners: Some(listeners),
        edge: Some(edge),
        users: None,
        admin: None,
        workers,
        grace: config.server.shutdown_grace,
        cluster: Some(cluster),
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
