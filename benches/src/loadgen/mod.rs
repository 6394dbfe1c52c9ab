//! `loadgen`: an XMPP load generator that speaks plain XMPP (RFC 6120/6121), so the
//! same run measures Aviary, Prosody or ejabberd. The binary is
//! `src/bin/loadgen.rs`; `benches/README.md` documents the flags, the scenarios and
//! the output.
//!
//! - [`args`]: the command line.
//! - [`net`], [`client`]: sockets from rotating loopback sources, TLS, the login
//!   sequence over the workspace framer and SASL client.
//! - [`run`]: the per-connection task and the phases all connections follow.
//! - [`scenario`]: the drivers of the five scenarios.
//! - [`stats`], [`procfs`], [`report`]: client figures, server figures, the output.

pub mod args;
pub mod client;
pub mod net;
pub mod procfs;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;

use anyhow::{Context as _, bail};
use args::{Args, Scenario, TlsMode};
use report::Report;
use run::{Ctx, Phase, Ring};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::Instant;
use tokio::sync::{Semaphore, watch};

/// File descriptors the process needs besides the client sockets.
const FD_MARGIN: u64 = 64;

/// Raises RLIMIT_NOFILE to its hard limit; fails clearly when `args` needs more.
pub fn raise_fd_limit(args: &Args) -> anyhow::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum;
    if lim.current != hard {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        )
        .context("cannot raise RLIMIT_NOFILE to its hard limit")?;
    }
    let limit = hard.unwrap_or(u64::MAX);
    let sockets = match args.scenario {
        Scenario::LoginStorm => u64::from(args.login_concurrency.min(args.users)),
        _ => u64::from(args.users),
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let need = sockets + open + FD_MARGIN;
    if need > limit {
        bail!(
            "{sockets} connections need about {need} file descriptors, but this process may \
             open at most {limit} (hard RLIMIT_NOFILE). Use fewer --users, run several loadgen \
             processes, or raise the hard limit (ulimit -Hn, as root)."
        );
    }
    Ok(limit)
}

/// Runs a whole load test and returns its report.
pub async fn run(args: Args, threads: usize) -> anyhow::Result<Report> {
    let mut servers: Vec<SocketAddr> = Vec::new();
    for s in &args.servers {
        let addr = s
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve --servers entry {s:?}"))?
            .next()
            .with_context(|| format!("{s:?} resolves to no address"))?;
        servers.push(addr);
    }
    let tls = match args.tls {
        TlsMode::Starttls => Some(net::tls_connector(&args)?),
        TlsMode::None => None,
    };
    let sources = net::source_ips(&args, &servers);
    let started_unix_ns = stats::unix_ns();
    let n = args.users as usize;
    let ring = (args.scenario == Scenario::PresenceFanout).then_some(Ring {
        n: args.users,
        half: args.contacts / 2,
    });
    let ctx = Arc::new(Ctx {
        servers,
        tls,
        stats: stats::Stats::new()?,
        tracker: stats::Tracker::new(args.users, started_unix_ns),
        phase: watch::Sender::new(Phase::Hold),
        interrupted: watch::Sender::new(false),
        online: (0..n).map(|_| AtomicBool::new(false)).collect(),
        online_count: AtomicU32::new(0),
        logins_done: AtomicU32::new(0),
        login_gate: Semaphore::new(args.login_concurrency as usize),
        ring,
        setup_incomplete: AtomicU32::new(0),
        connections: AtomicU64::new(0),
        sources,
        args,
    });

    // Ctrl-C: the first ends the run early (clean logout, partial report); a
    // second one exits at once.
    let c = ctx.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("loadgen: interrupted; logging out (Ctrl-C again to exit now)");
            c.interrupted.send_replace(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let client_before = procfs::own();
    let t0 = Instant::now();
    let mut report = Report {
        tool: "aviary-loadgen",
        version: env!("CARGO_PKG_VERSION"),
        scenario: ctx.args.scenario,
        started_unix_s: started_unix_ns as f64 / 1e9,
        elapsed_s: 0.0,
        interrupted: false,
        params: ctx.args.clone(),
        source_ips: ctx.sources.len(),
        threads,
        logins: Default::default(),
        messages: None,
        presence: None,
        drain: None,
        server: Default::default(),
        client: None,
        client_cpu_s: None,
        connections_dropped: 0,
        errors: Default::default(),
    };
    scenario::drive(&ctx, &mut report).await;
    signals.abort();

    let s = &ctx.stats;
    use std::sync::atomic::Ordering::Relaxed;
    report.elapsed_s = t0.elapsed().as_secs_f64();
    report.interrupted = ctx.is_interrupted();
    report.logins.ok = s.logins_ok.load(Relaxed);
    report.logins.failed = s.logins_failed.load(Relaxed);
    report.logins.logouts_ok = s.logouts_ok.load(Relaxed);
    report.logins.auth_ms = s.auth.summary();
    report.logins.login_ms = s.login.summary();
    report.logins.tls_handshake_ms = s.tls.summary();
    report.connections_dropped = s.dropped.load(Relaxed);
    report.errors = s.errors();
    report.client = procfs::own();
    report.client_cpu_s = match (client_before, report.client) {
        (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
        _ => None,
    };
    Ok(report)
}
