//! The operations endpoint every process serves on its admin port: Prometheus
//! `/metrics`, liveness `/healthz` and readiness `/readyz`.
//!
//! Readiness is a list of named checks registered by the node as it starts (the
//! listeners are up, the store answers, the cluster lease is held, every partition
//! has an owner); `/readyz` answers 503 naming the failing ones. Draining fails it
//! first thing on shutdown so load balancers stop sending new clients.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Name of the build-information gauge (always 1; the labels carry the data).
pub const BUILD_INFO: &str = "aviary_build_info";

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// Whether this process should receive traffic, and why not.
#[derive(Default)]
pub struct Health {
    draining: AtomicBool,
    checks: RwLock<Vec<(&'static str, Check)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("failing", &self.failing())
            .finish()
    }
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Health::default())
    }

    /// Adds a readiness condition, reported by `name` while it is false.
    pub fn add(&self, name: &'static str, check: impl Fn() -> bool + Send + Sync + 'static) {
        let mut checks = match self.checks.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        checks.push((name, Box::new(check)));
    }

    /// From now on the process is not ready, whatever the checks say.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The names of the conditions that keep this process from being ready.
    pub fn failing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.is_draining() {
            out.push("draining");
        }
        let checks = match self.checks.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if checks.is_empty() {
            out.push("starting");
        }
        out.extend(checks.iter().filter(|(_, f)| !f()).map(|(n, _)| *n));
        out
    }

    pub fn ready(&self) -> bool {
        self.failing().is_empty()
    }
}

/// A timestamp that checks can compare against ("did X succeed recently?").
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last beat, plus one (0 = never).
    last: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last.store(ms, Ordering::Release);
    }

    /// True if the last beat is at most `within` old.
    pub fn fresh(&self, within: Duration) -> bool {
        match self.last.load(Ordering::Acquire) {
            0 => false,
            ms => {
                let at = Duration::from_millis(ms - 1);
                self.epoch.elapsed().saturating_sub(at) <= within
            }
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use. Metrics recorded
/// before it (or in processes that never serve `/metrics`) cost next to nothing.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets(aviary_session::metrics::LATENCY_BUCKETS)
                .map(PrometheusBuilder::install_recorder);
            match built {
                Ok(Ok(handle)) => {
                    describe_all();
                    Some(handle)
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Every crate describes its own metrics once; this runs them all.
fn describe_all() {
    aviary_edge::metrics::describe();
    aviary_session::metrics::describe();
    aviary_cluster::metrics::describe();
    aviary_directory::metrics::describe();
    aviary_store::metrics::describe();
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version, role and platform this process runs."
    );
}

/// Sets the build-information gauge for this process.
pub fn build_info(role: &'static str) {
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "role" => role,
        "target" => format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    )
    .set(1.0);
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Option<&'static PrometheusHandle>,
}

/// Serves the admin endpoint on `listen` until the returned task is aborted.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the admin endpoint on {listen} (set [admin] listen, or \
             [admin] enabled = false)"
            )
        })?;
    let addr = listener.local_addr()?;
    let shared = Shared {
        health,
        metrics: recorder(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    tracing::info!(address = %addr, "admin endpoint: /metrics /healthz /readyz");
    Ok((addr, task))
}

async fn metrics_page(
    State(s): State<Shared>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    const CONTENT_TYPE: (&str, &str) = ("content-type", "text/plain; version=0.0.4; charset=utf-8");
    match s.metrics {
        Some(h) => {
            h.run_upkeep();
            (StatusCode::OK, [CONTENT_TYPE], h.render())
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [CONTENT_TYPE],
            "# the metrics recorder could not be installed\n".to_owned(),
        ),
    }
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, String) {
    let failing = s.health.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_fails() {
        let h = Health::new();
        assert_eq!(h.failing(), vec!["starting"]);
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        h.add("store", move || f.load(Ordering::Relaxed));
        h.add("listeners", || true);
        assert_eq!(h.failing(), vec!["store"]);
        flag.store(true, Ordering::Relaxed);
        assert!(h.ready());
        h.set_draining();
        assert_eq!(h.failing(), vec!["draining"]);
    }

    #[test]
    fn heartbeats_go_stale() {
        let b = Heartbeat::default();
        assert!(!b.fresh(Duration::from_secs(3600)));
        b.beat();
        assert!(b.fresh(Duration::from_secs(3600)));
    }
}
