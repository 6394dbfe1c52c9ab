//! Wiring one Aviary process in its role — `all` (everything in one process, the
//! default), `edge` (client listeners, gRPC router to session nodes) or `session`
//! (user actors, gRPC server, shard ownership) — plus orderly shutdown.

use crate::certs;
use crate::config::{Config, Role, StoreBackend};
use crate::ops::{self, Health};
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
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    /// Tasks to wait for on shutdown (the shard manager hands partitions over).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the cluster runtime is only taken when dropped"),
        }
    }
}

impl Drop for ClusterRuntime {
    /// Also on the error paths of start-up, which run inside the actix system: a
    /// runtime dropped there the ordinary way would panic ("cannot drop a runtime in
    /// a context where blocking is not allowed") and hide the error.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A started node, inside its actix system.
pub struct Node {
    pub listeners: Option<Listeners>,
    pub edge: Option<Arc<EdgeContext>>,
    pub users: Option<Users>,
    pub health: Arc<Health>,
    /// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), if enabled.
    pub ops_addr: Option<SocketAddr>,
    /// Background tasks on the actix system thread (admin endpoint, store probe).
    tasks: Vec<tokio::task::JoinHandle<()>>,
    admin: Option<(tokio::task::JoinHandle<()>, std::path::PathBuf)>,
    workers: Vec<Arbiter>,
    drain: DrainPlan,
    cluster: Option<ClusterRuntime>,
    /// The edge's cluster router (role `edge`): flushed before exit.
    router: Option<Arc<GrpcRouter>>,
}

/// How this node shuts down gracefully.
#[derive(Clone, Debug)]
struct DrainPlan {
    /// The whole budget.
    grace: Duration,
    /// Client streams are closed spread over this long.
    close_over: Duration,
    /// What they are closed with.
    error: StreamError,
}

impl DrainPlan {
    fn new(config: &Config) -> Self {
        let grace = config.server.shutdown_grace;
        DrainPlan {
            grace,
            close_over: config.c2s.shutdown_close_period.min(grace / 2),
            error: match &config.c2s.shutdown_redirect {
                // RFC 6120 §4.9.3.19
                Some(host) => StreamError::new(StreamErrorCondition::SeeOtherHost(host.clone())),
                None => StreamError::new(StreamErrorCondition::SystemShutdown),
            },
        }
    }
}

impl Node {
    pub fn c2s_addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.listeners
            .as_ref()
            .map(|l| l.addrs().to_vec())
            .unwrap_or_default()
    }

    /// Drains and stops the node within the grace period. Readiness fails at once;
    /// edges stop accepting, close client streams paced over the close period (with
    /// `<system-shutdown/>` or `<see-other-host/>`), wait for them and, in a cluster,
    /// for every stanza they accepted to be acknowledged; session nodes hand their
    /// partitions to the others and pass on what they still hold. Then the workers
    /// stop.
    pub async fn shutdown(mut self) {
        self.health.set_draining();
        let started = Instant::now();
        let deadline = started + self.drain.grace;
        if let Some(l) = &self.listeners {
            l.stop();
        }
        if let Some((task, path)) = &self.admin {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
        if let Some(edge) = &self.edge {
            edge.begin_drain(self.drain.error.clone());
            let open = edge.connections();
            if open > 0 {
                tracing::info!(
                    connections = open,
                    over = ?self.drain.close_over,
                    condition = self.drain.error.condition.name(),
                    "closing client streams"
                );
            }
            close_paced(edge, &self.drain.error, self.drain.close_over).await;
            wait_until(deadline, || edge.connections() == 0).await;
            if edge.connections() > 0 {
                tracing::warn!(
                    connections = edge.connections(),
                    "client streams still open at the end of the grace period"
                );
            }
        }
        if let Some(router) = &self.router {
            // Everything clients handed us (and everything handed back for closed
            // streams) must reach its owner before the edge goes.
            wait_until(deadline, || router.unacked() == 0).await;
            if router.unacked() > 0 {
                tracing::warn!(
                    unacked = router.unacked(),
                    "stanzas still unacknowledged at the end of the grace period"
                );
            }
        }
        if let Some(mut c) = self.cluster.take() {
            let _ = c.shutdown.send(true);
            for t in std::mem::take(&mut c.tasks) {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                let _ = tokio::time::timeout(left, t).await;
            }
            drop(c);
        }
        tracing::info!(took = ?started.elapsed(), "drained");
        for t in &self.tasks {
            t.abort();
        }
        // Stop the workers and wait for them (bounded): their actors hold the stores,
        // and the embedded store's file lock is only released once they are gone.
        for w in &self.workers {
            w.stop();
        }
        let workers = std::mem::take(&mut self.workers);
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
    // Two workers. One worker cut the CPU per message in a 5-process cluster by 15 %
    // (fewer wake-ups between workers), but with it a node-loss test once saw an
    // edge's link to a session node take 27 s to come up; until that is understood,
    // two (benches/README.md, "Targets").
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aviary-cluster")
        .enable_all()
        .build()
        .context("cannot start the cluster runtime")?;
    let (tx, rx) = watch::channel(false);
    Ok((
        ClusterRuntime {
            rt: Some(rt),
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
    let health = Health::new();
    // The admin endpoint comes first: /healthz answers (and /readyz says
    // "starting") while the rest starts, which may take a while (store, Redis).
    let mut ops_task = None;
    if config.admin.enabled {
        ops::recorder();
        ops::build_info(match config.cluster.role {
            Role::All => "all",
            Role::Edge => "edge",
            Role::Session => "session",
        });
        ops_task = Some(ops::serve(config.admin.listen, health.clone()).await?);
    }
    let started = match config.cluster.role {
        Role::All => start_all(config, &health).await,
        Role::Edge => start_edge(config, &health).await,
        Role::Session => start_session(config, &health).await,
    };
    let mut node = match started {
        Ok(node) => node,
        Err(e) => {
            if let Some((_, t)) = &ops_task {
                t.abort();
            }
            return Err(e);
        }
    };
    if let Some((addr, task)) = ops_task {
        node.ops_addr = Some(addr);
        node.tasks.push(task);
    }
    tracing::info!(
        domains = ?config.server.domains,
        role = ?config.cluster.role,
        node = %config.node_id(),
        "Aviary is ready"
    );
    Ok(node)
}

async fn start_all(config: &Config, health: &Arc<Health>) -> anyhow::Result<Node> {
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
    let probe = probe_store(health, stores.accounts.clone());
    health.add("listeners", || true);
    Ok(Node {
        listeners: Some(listeners),
        edge: Some(edge),
        users: Some(users),
        health: health.clone(),
        ops_addr: None,
        tasks: vec![probe],
        admin,
        workers,
        drain: DrainPlan::new(config),
        cluster: None,
        router: None,
    })
}

async fn start_session(config: &Config, health: &Arc<Health>) -> anyhow::Result<Node> {
    let (stores, _) = open_stores(config).await?;
    let (mut cluster, shutdown) = cluster_runtime()?;
    let handle = cluster.handle();
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
    let probe = probe_store(health, stores.accounts.clone());
    let users = Users::new(server_info(config), im_settings(config), stores, handles);
    users.set_cluster(node.clone());
    node.set_users(users.clone());

    let listener = std::net::TcpListener::bind(config.cluster.grpc_listen)
        .with_context(|| format!("cannot listen for gRPC on {}", config.cluster.grpc_listen))?;
    listener.set_nonblocking(true)?;
    // Closed once the shard manager has handed every partition on (see below).
    let (links_closing, links_closed) = watch::channel(false);
    let service = NodeService::new(node.clone(), links_closed.clone()).into_server();
    // gRPC health (grpc.health.v1) mirrors /readyz, for the whole server ("") and
    // for the cluster service.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    {
        let health = health.clone();
        let mut stop = shutdown.clone();
        let tick = config.cluster.lease_tick;
        cluster.tasks.push(handle.spawn(async move {
            loop {
                let status = if health.ready() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                reporter
                    .set_service_status("aviary.cluster.v1.Node", status)
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.changed() => {
                        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                        reporter
                            .set_service_status("aviary.cluster.v1.Node", tonic_health::ServingStatus::NotServing)
                            .await;
                        return;
                    }
                }
            }
        }));
    }
    let mut stop = links_closed;
    cluster.tasks.push(handle.spawn(async move {
        let incoming = match tokio::net::TcpListener::from_std(listener) {
            // Links carry small frames both ways: without TCP_NODELAY, Nagle's
            // algorithm and delayed acknowledgements add up to ~40 ms to a delivery.
            Ok(l) => tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                |conn| {
                    if let Ok(c) = &conn {
                        let _ = c.set_nodelay(true);
                    }
                    conn
                },
            ),
            Err(e) => {
                tracing::error!(error = %e, "gRPC listener failed");
                return;
            }
        };
        let r = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(service)
            // Not on the shutdown signal itself: edges and peers keep passing
            // stanzas through this node's links until it has handed its partitions
            // over.
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|c| *c).await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));
    let members: Arc<dyn Membership> = Arc::new(dir.clone());
    let parts: Arc<dyn Partitions> = Arc::new(dir);
    {
        let serving = node.serving.clone();
        health.add("lease", move || {
            serving.load(std::sync::atomic::Ordering::Acquire)
        });
        let view = node.view.clone();
        health.add("partitions", move || all_partitions_owned(&view));
    }
    let shards = shards::run_session(node, me, members, parts, locations, lease(config), shutdown);
    cluster.tasks.push(handle.spawn(async move {
        shards.await;
        let _ = links_closing.send(true);
    }));
    tracing::info!(grpc = %config.cluster.grpc_listen, "session node listening");
    Ok(Node {
        listeners: None,
        edge: None,
        users: Some(users),
        health: health.clone(),
        ops_addr: None,
        tasks: vec![probe],
        admin: None,
        workers,
        drain: DrainPlan::new(config),
        cluster: Some(cluster),
        router: None,
    })
}

async fn start_edge(config: &Config, health: &Arc<Health>) -> anyhow::Result<Node> {
    let (stores, _) = open_stores(config).await?;
    let tls = tls_context(config)?;
    let (mut cluster, shutdown) = cluster_runtime()?;
    let handle = cluster.handle();
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
    let refreshed = Arc::new(ops::Heartbeat::default());
    let beat = refreshed.clone();
    cluster.tasks.push(handle.spawn(shards::run_edge(
        view.clone(),
        me,
        members,
        parts,
        lease(config),
        shutdown,
        shards::EdgeHooks {
            on_refresh: move || beat.beat(),
            on_rejoin: {
                let edge = edge.clone();
                move || {
                    let edge = edge.clone();
                    tokio::spawn(async move {
                        let error = StreamError::with_text(
                            StreamErrorCondition::InternalServerError,
                            "the cluster lost this session; please reconnect",
                        );
                        close_paced(&edge, &error, LOST_SESSIONS_CLOSE_OVER).await;
                    });
                }
            },
        },
    )));
    let probe = probe_store(health, stores.accounts.clone());
    let listeners = match start_listeners(config, edge.clone(), handles).await {
        Ok(l) => l,
        Err(e) => {
            probe.abort();
            for w in &workers {
                w.stop();
            }
            return Err(e);
        }
    };
    health.add("listeners", || true);
    let ttl = config.cluster.lease_ttl;
    health.add("redis", move || refreshed.fresh(ttl));
    health.add("partitions", move || all_partitions_owned(&view));
    Ok(Node {
        listeners: Some(listeners),
        edge: Some(edge),
        users: None,
        health: health.clone(),
        ops_addr: None,
        tasks: vec![probe],
        admin: None,
        workers,
        drain: DrainPlan::new(config),
        cluster: Some(cluster),
        router: Some(router),
    })
}

/// True when every partition has a live owner in `view`.
fn all_partitions_owned(view: &View) -> bool {
    let snap = view.get();
    (0..View::PARTITIONS).all(|p| snap.owner(p).is_some())
}

/// How often the store is probed for readiness, and how stale a success may be.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(5);
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const STORE_FRESH: Duration = Duration::from_secs(16);

/// Probes the store with a cheap read and adds the "store" readiness check.
fn probe_store(
    health: &Arc<Health>,
    accounts: Arc<dyn aviary_store::AccountStore>,
) -> tokio::task::JoinHandle<()> {
    let ok = Arc::new(ops::Heartbeat::default());
    // The caller has just opened the store (and, for CQL, applied the schema):
    // that counts as the first successful probe.
    ok.beat();
    let beat = ok.clone();
    health.add("store", move || ok.fresh(STORE_FRESH));
    // A JID no account can have (`.invalid` is reserved, RFC 2606).
    let probe = aviary_xmpp::BareJid::new("readiness-probe@aviary.invalid").ok();
    tokio::spawn(async move {
        let Some(probe) = probe else { return };
        loop {
            match tokio::time::timeout(STORE_PROBE_TIMEOUT, accounts.credentials(&probe)).await {
                Ok(Ok(_)) => beat.beat(),
                Ok(Err(e)) => tracing::warn!(error = %e, "store readiness probe failed"),
                Err(_) => tracing::warn!("store readiness probe timed out"),
            }
            tokio::time::sleep(STORE_PROBE_EVERY).await;
        }
    })
}

/// Over how long an edge whose lease was lost closes its streams (spreading the
/// clients' reconnections).
const LOST_SESSIONS_CLOSE_OVER: Duration = Duration::from_secs(3);

/// Closes the edge's client streams with `error`, spread evenly over `over`.
async fn close_paced(edge: &EdgeContext, error: &StreamError, over: Duration) {
    const STEP: Duration = Duration::from_millis(50);
    let ids = edge.conn_ids();
    if ids.is_empty() {
        return;
    }
    let steps = (over.as_millis() / STEP.as_millis()).max(1) as usize;
    let per_step = ids.len().div_ceil(steps);
    let mut tick = tokio::time::interval(STEP);
    for chunk in ids.chunks(per_step) {
        tick.tick().await;
        for id in chunk {
            edge.close(*id, error.clone());
        }
    }
}

/// Waits until `done` holds or `deadline` passes.
async fn wait_until(deadline: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`), if enabled.
    pub ops: Option<SocketAddr>,
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
                        let _ = ready_tx.send(Ok((node.c2s_addrs(), node.ops_addr)));
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
    let (c2s, ops) = ready_rx
        .recv()
        .context("the node thread ended before it was ready")??;
    Ok(Spawned {
        c2s,
        ops,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
