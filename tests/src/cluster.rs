//! A real multi-process cluster for end-to-end tests: session nodes and edges run as
//! separate processes of the `aviary-test-node` binary (the same entry point as
//! `aviary`), against the Redis and Cassandra that `deploy/dev/test.sh` starts
//! (`AVIARY_TEST_REDIS_URL`, `AVIARY_TEST_CQL`). Each cluster gets its own Redis key
//! prefix and CQL keyspace, so clusters and tests can run side by side.

use crate::pki::TestPki;
use anyhow::{Context, bail};
use aviary::Config;
use aviary::config::{Role, StoreBackend};
use aviary_directory::{Membership, Partitions, RedisDirectory};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// One node process.
pub struct NodeProc {
    pub name: String,
    pub role: Role,
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub c2s: Option<SocketAddr>,
    pub c2s_tls: Option<SocketAddr>,
    /// The admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub admin: SocketAddr,
    config: PathBuf,
    pub log: PathBuf,
    /// Its configuration, as written to `config`.
    cfg: Config,
    /// Start-up attempts (a port picked for it may be taken before it binds);
    /// `None` once restarted: its ports, which tests may hold, must stay.
    attempts: Option<u32>,
}

impl NodeProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    pub redis_url: String,
    pub cql: String,
    /// Redis key prefix and CQL keyspace of this cluster.
    pub prefix: String,
    pub nodes: Vec<NodeProc>,
    bin: PathBuf,
}

/// The test-node binary next to the running test executable.
fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/aviary-test-node
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test executable location")?;
    let bin = dir.join("aviary-test-node");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p aviary-tests --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

/// The addresses of the test dependencies, or a clear failure.
pub fn deps() -> anyhow::Result<(String, String)> {
    let redis = std::env::var("AVIARY_TEST_REDIS_URL");
    let cql = std::env::var("AVIARY_TEST_CQL");
    match (redis, cql) {
        (Ok(r), Ok(c)) => Ok((r, c)),
        _ => bail!(
            "cluster tests need AVIARY_TEST_REDIS_URL and AVIARY_TEST_CQL: run them with \
             deploy/dev/test.sh, or start the dependencies with `deploy/dev/deps.sh up DIR` and \
             source DIR/env"
        ),
    }
}

/// Starts `node`'s process with its configuration file, logging to its log file.
fn spawn_node(bin: &Path, node: &mut NodeProc) -> anyhow::Result<()> {
    if let Some(n) = node.attempts.as_mut() {
        *n += 1;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&node.config)
        .env("RUST_LOG", "info,aviary_cluster=debug")
        .env_remove("AVIARY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start node {}", node.name))?;
    node.child = Some(child);
    Ok(())
}

/// Gives `node` free ports (gRPC, admin, and an edge's c2s listeners) and writes its
/// configuration file.
fn pick_ports(node: &mut NodeProc) -> anyhow::Result<()> {
    let c = &mut node.cfg;
    node.grpc = free_addr()?;
    c.cluster.grpc_listen = node.grpc;
    node.admin = free_addr()?;
    c.admin.listen = node.admin;
    if node.role == Role::Edge {
        let (a, b) = (free_addr()?, free_addr()?);
        c.c2s.listen = vec![a];
        c.c2s.listen_tls = vec![b];
        (node.c2s, node.c2s_tls) = (Some(a), Some(b));
    }
    std::fs::write(&node.config, c.to_toml())?;
    Ok(())
}

/// Start-up attempts of a node whose ports were taken before it could bind them.
const START_ATTEMPTS: u32 = 3;

fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Cluster {
    /// Starts `sessions` session nodes and `edges` edges with `tweak` applied to
    /// every node's configuration, and waits until it is ready.
    pub fn start(
        sessions: usize,
        edges: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Cluster> {
        let (redis_url, cql) = deps()?;
        Self::start_on(&redis_url, &cql, sessions, edges, tweak)
    }

    /// Like [`Cluster::start`], on a given Redis and CQL node (tests that take
    /// their dependencies down use private ones).
    pub fn start_on(
        redis_url: &str,
        cql: &str,
        sessions: usize,
        edges: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Cluster> {
        let (redis_url, cql) = (redis_url.to_owned(), cql.to_owned());
        let bin = node_binary()?;
        let dir = tempfile::tempdir()?;
        let prefix = format!("t{:016x}", rand_u64());
        let pki = TestPki::get();
        let mut base = Config::load("", "test cluster", std::iter::empty::<(String, String)>())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        base.tls.certificate = Some(pki.cert_pem.clone());
        base.tls.key = Some(pki.key_pem.clone());
        base.registration.enabled = true;
        base.registration.per_ip = 0;
        base.auth.scram_iterations = 4096;
        base.auth.max_failures_per_account = 0;
        base.server.workers = 1;
        base.server.shutdown_grace = Duration::from_secs(3);
        base.store.backend = StoreBackend::Cql;
        base.store.cql_contact_points = vec![cql.clone()];
        base.store.cql_keyspace = prefix.clone();
        base.cluster.redis_url = redis_url.clone();
        base.cluster.redis_prefix = prefix.clone();
        base.cluster.lease_ttl = Duration::from_secs(3);
        base.cluster.lease_tick = Duration::from_millis(250);
        tweak(&mut base);
        let mut cluster = Cluster {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            redis_url,
            cql,
            prefix,
            nodes: Vec::new(),
            bin,
        };
        for i in 1..=sessions {
            cluster.add_node(&base, &format!("s{i}"), Role::Session)?;
        }
        for i in 1..=edges {
            cluster.add_node(&base, &format!("e{i}"), Role::Edge)?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn add_node(&mut self, base: &Config, name: &str, role: Role) -> anyhow::Result<()> {
        let mut c = base.clone();
        c.server.node_id = Some(name.to_owned());
        c.server.data_dir = self.dir.join(name);
        c.cluster.role = role;
        std::fs::create_dir_all(&c.server.data_dir)?;
        let unset: SocketAddr = "127.0.0.1:1".parse()?;
        let mut node = NodeProc {
            name: name.to_owned(),
            role,
            child: None,
            grpc: unset,
            c2s: None,
            c2s_tls: None,
            admin: unset,
            config: self.dir.join(format!("{name}.toml")),
            log: self.dir.join(format!("{name}.log")),
            cfg: c,
            attempts: Some(0),
        };
        pick_ports(&mut node)?;
        self.spawn(&mut node)?;
        self.nodes.push(node);
        Ok(())
    }

    fn spawn(&self, node: &mut NodeProc) -> anyhow::Result<()> {
        spawn_node(&self.bin, node)
    }

    pub fn node(&self, name: &str) -> Option<&NodeProc> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeProc> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    /// STARTTLS endpoints of the edges, in order.
    pub fn edges(&self) -> Vec<SocketAddr> {
        self.nodes.iter().filter_map(|n| n.c2s).collect()
    }

    pub fn edges_tls(&self) -> Vec<SocketAddr> {
        self.nodes.iter().filter_map(|n| n.c2s_tls).collect()
    }

    pub fn session_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Session)
            .map(|n| n.name.clone())
            .collect()
    }

    /// The directory this cluster uses, for inspection.
    pub fn directory(&self) -> anyhow::Result<RedisDirectory> {
        block_on(RedisDirectory::connect(
            &self.redis_url,
            &self.prefix,
            Duration::from_secs(2),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Who owns each partition now (`None`: unclaimed).
    pub fn claims(&self) -> anyhow::Result<Vec<Option<String>>> {
        let dir = self.directory()?;
        let claims = block_on(dir.claims(aviary_cluster::ring::PARTITIONS))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(claims.into_iter().map(|c| c.map(|c| c.node)).collect())
    }

    /// The session node owning `bare_jid` now.
    pub fn owner_of(&self, bare_jid: &str) -> anyhow::Result<Option<String>> {
        let p = aviary_cluster::ring::partition(bare_jid) as usize;
        Ok(self.claims()?.get(p).cloned().flatten())
    }

    /// Every node running, every running node a live member, every partition owned
    /// by a live session node, every edge accepting connections.
    pub fn is_ready(&mut self) -> anyhow::Result<bool> {
        let dir = self.directory()?;
        let live = match block_on(dir.members()) {
            Ok(m) => m,
            Err(_) => return Ok(false),
        };
        for n in self.nodes.iter_mut() {
            if n.child.is_some() && !n.is_running() {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                // A port picked for it was taken before it could bind it (another
                // test's connection, say): new ports, another try.
                if log.contains("os error 98") && n.attempts.is_some_and(|a| a < START_ATTEMPTS) {
                    n.child = None;
                    pick_ports(n)?;
                    spawn_node(&self.bin, n)?;
                    return Ok(false);
                }
                // The panic or error that ended it (a backtrace may follow), then
                // the end of the log.
                let cause: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("panicked") || l.contains("ERROR") || l.starts_with("Error")
                    })
                    .take(5)
                    .collect();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                let status = n
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                    .map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                bail!(
                    "node {} exited ({status}): {}\n...\n{tail}",
                    n.name,
                    cause.join("\n")
                );
            }
            if n.child.is_some() && !live.is_live(&n.name) {
                return Ok(false);
            }
        }
        let claims = match block_on(dir.claims(aviary_cluster::ring::PARTITIONS)) {
            Ok(c) => c,
            Err(_) => return Ok(false),
        };
        // Settled: every partition is held by the node it belongs to (rendezvous
        // target among the live session nodes), not just by some live node.
        let sessions: Vec<&str> = live.sessions().map(|s| s.id.as_str()).collect();
        let settled = claims.iter().enumerate().all(|(p, c)| {
            let target = aviary_cluster::ring::target(p as u32, sessions.iter().copied());
            target.is_some() && c.as_ref().map(|c| c.node.as_str()) == target
        });
        if !settled {
            return Ok(false);
        }
        // And every running node says so itself (its listeners are up, its store
        // and Redis answer, it sees every partition owned).
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            if !matches!(crate::http::get(n.admin, "/readyz"), Ok((200, _))) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.is_ready()? {
            if Instant::now() >= deadline {
                bail!("the cluster was not ready within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(name).context("no such node")?;
        if let Some(mut c) = node.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(name).context("no such node")?;
        if let Some(mut c) = node.child.take() {
            terminate(&mut c);
        }
        Ok(())
    }

    /// Starts a stopped or killed node again with the same configuration.
    pub fn restart_node(&mut self, name: &str) -> anyhow::Result<()> {
        let idx = self
            .nodes
            .iter()
            .position(|n| n.name == name)
            .context("no such node")?;
        let node = &mut self.nodes[idx];
        node.attempts = None;
        spawn_node(&self.bin, node)
    }

    /// Stops every node cleanly and starts them all again (persistence tests).
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        for n in self.nodes.iter_mut() {
            if let Some(mut c) = n.child.take() {
                terminate(&mut c);
            }
        }
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.restart_node(&n)?;
        }
        self.wait_ready()
    }

    /// The log of one node (for failure messages).
    pub fn log_of(&self, name: &str) -> String {
        self.node(name)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test: show what the nodes said (their logs go with the
        // temporary directory).
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(LOG_LINES_ON_FAILURE);
                eprintln!(
                    "--- {} ({}), last {} lines ---\n{}",
                    n.name,
                    n.log.display(),
                    lines.len() - from,
                    lines[from..].join("\n")
                );
            }
        }
        for n in self.nodes.iter_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// How much of each node's log a failing test prints.
const LOG_LINES_ON_FAILURE: usize = 150;

/// SIGTERM, then SIGKILL after a bounded wait.
fn terminate(c: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Runs a future to completion on a private runtime (the harness is synchronous so
/// it can be used from any test, async or not).
pub fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })
        .join()
    })
    .unwrap_or_else(|_| panic!("harness thread panicked"))
    .unwrap_or_else(|e| panic!("cannot build a runtime: {e}"))
}

/// A private dependency started with a `deploy/dev` script, stopped on drop.
pub struct PrivateDep {
    script: &'static str,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn dev_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/dev")
        .join(name)
}

impl PrivateDep {
    /// `redis.sh` or `cassandra.sh`: `start DIR [PORT]` prints the port.
    pub fn start(script: &'static str) -> anyhow::Result<PrivateDep> {
        let dir = tempfile::tempdir()?;
        let mut dep = PrivateDep {
            script,
            dir,
            port: 0,
        };
        dep.port = dep.run_start(None)?;
        Ok(dep)
    }

    fn run_start(&self, port: Option<u16>) -> anyhow::Result<u16> {
        let mut cmd = Command::new(dev_script(self.script));
        cmd.arg("start").arg(self.dir.path());
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let out = cmd.stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("{} start failed", self.script);
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("{} printed no port", self.script))
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        let st = Command::new(dev_script(self.script))
            .arg("stop")
            .arg(self.dir.path())
            .stderr(Stdio::inherit())
            .status()?;
        if !st.success() {
            bail!("{} stop failed", self.script);
        }
        Ok(())
    }

    /// Starts it again on the same port (its data directory is kept).
    pub fn restart(&self) -> anyhow::Result<()> {
        let p = self.run_start(Some(self.port))?;
        if p != self.port {
            bail!("{} came back on port {p}, not {}", self.script, self.port);
        }
        Ok(())
    }
}

impl Drop for PrivateDep {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
