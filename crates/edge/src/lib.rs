//! The edge: client-to-server listeners (STARTTLS on 5222, direct TLS on 5223),
//! stream negotiation (TLS, SASL, in-band registration, resource binding) and one
//! connection actor per bound client stream, which frames, validates and stamps
//! stanzas and hands them to the [`aviary_router::Router`].
#![forbid(unsafe_code)]

pub mod conn;
pub mod io;
pub mod listener;
pub mod metrics;
mod negotiate;
mod register;
pub mod throttle;
pub mod tls;
pub mod xml_stream;

use aviary_router::{ConnId, EdgeId, Router};
use aviary_store::AccountStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use throttle::Throttle;

pub use listener::{ListenerKind, Listeners};
pub use tls::TlsContext;

/// Edge behaviour; the binary fills it from the configuration file.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Served domains, normalised (lowercase); the first is the default.
    pub domains: Vec<String>,
    pub edge_id: EdgeId,
    /// TLS must be negotiated before authentication (RFC 6120 §5.3.1 mandatory).
    pub require_tls: bool,
    /// Allows SASL PLAIN over an unencrypted stream. For loopback benchmarks and tests
    /// only; logged loudly at start-up.
    pub allow_insecure_plain: bool,
    /// Whole negotiation (TLS + SASL + bind) must finish within this.
    pub negotiation_timeout: Duration,
    /// A bound stream that sends nothing for this long is pinged (XEP-0199) at half
    /// of it and closed with `connection-timeout` at the end.
    pub idle_timeout: Duration,
    /// Send a whitespace keepalive after this long without writing (RFC 6120 §4.6.1);
    /// zero disables.
    pub keepalive_interval: Duration,
    pub max_stanza_bytes: usize,
    pub pre_auth_max_stanza_bytes: usize,
    /// Failed SASL attempts allowed on one connection before it is closed.
    pub max_auth_failures_per_connection: u32,
    /// Failed SASL attempts per account within `auth_failure_window` before further
    /// attempts get `temporary-auth-failure`.
    pub max_auth_failures_per_account: u32,
    pub auth_failure_window: Duration,
    /// In-band registration (XEP-0077).
    pub registration: bool,
    /// Registrations allowed per client IP address per `registration_window`.
    pub registrations_per_ip: u32,
    pub registration_window: Duration,
    /// PBKDF2 iterations for newly stored SCRAM credentials.
    pub scram_iterations: u32,
    /// Bytes queued for a client beyond which new deliveries are refused (the sender
    /// gets `resource-constraint` for messages; presence is dropped).
    pub write_high_watermark: usize,
    /// A client that accepts no bytes for this long while we have output is dropped.
    pub write_timeout: Duration,
    /// Advertise subscription pre-approval (RFC 6121 §3.4); only with the presence
    /// service.
    pub pre_approval: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            domains: vec!["localhost".to_owned()],
            edge_id: EdgeId("edge".to_owned()),
            require_tls: true,
            allow_insecure_plain: false,
            negotiation_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(240),
            max_stanza_bytes: aviary_xmpp::Limits::AUTHENTICATED.max_stanza_bytes,
            pre_auth_max_stanza_bytes: aviary_xmpp::Limits::PRE_AUTH.max_stanza_bytes,
            max_auth_failures_per_connection: 3,
            max_auth_failures_per_account: 10,
            auth_failure_window: Duration::from_secs(300),
            registration: false,
            registrations_per_ip: 5,
            registration_window: Duration::from_secs(3600),
            scram_iterations: 10_000,
            write_high_watermark: 512 * 1024,
            write_timeout: Duration::from_secs(60),
            pre_approval: true,
        }
    }
}

/// State every connection on this edge shares.
pub struct EdgeContext {
    pub config: EdgeConfig,
    pub tls: Option<TlsContext>,
    pub accounts: Arc<dyn AccountStore>,
    pub router: Arc<dyn Router>,
    pub(crate) auth_failures: Throttle<String>,
    pub(crate) registrations: Throttle<std::net::IpAddr>,
    pub(crate) conns: conn::Registry,
    /// Connection actors alive (bound, including those still flushing a close).
    pub(crate) live: AtomicUsize,
    /// Set when the edge drains: the error new and remaining streams are closed with.
    drain: std::sync::OnceLock<aviary_xmpp::StreamError>,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for EdgeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeContext")
            .field("edge_id", &self.config.edge_id)
            .finish_non_exhaustive()
    }
}

impl EdgeContext {
    pub fn new(
        config: EdgeConfig,
        tls: Option<TlsContext>,
        accounts: Arc<dyn AccountStore>,
        router: Arc<dyn Router>,
    ) -> Arc<Self> {
        // Connection ids start at a random point (leaving room to count up), so a
        // restarted edge never reuses the ids of its previous life: stale directory
        // entries compare-and-set on them.
        let seed = rand::random::<u64>() >> 2;
        Arc::new(EdgeContext {
            auth_failures: Throttle::new(
                config.max_auth_failures_per_account,
                config.auth_failure_window,
            ),
            registrations: Throttle::new(config.registrations_per_ip, config.registration_window),
            config,
            tls,
            accounts,
            router,
            conns: conn::Registry::default(),
            live: AtomicUsize::new(0),
            drain: std::sync::OnceLock::new(),
            next_conn: AtomicU64::new(seed),
        })
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Number of bound client streams on this edge, including those still flushing
    /// their close.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Closes every bound stream with `error` (e.g. `system-shutdown`).
    pub fn close_all(&self, error: aviary_xmpp::StreamError) {
        self.conns.close_all(error);
    }

    /// Starts draining: streams bound from now on are closed with `error` at once
    /// (the caller closes the existing ones, see [`EdgeContext::close`]). Only the
    /// first call's error counts.
    pub fn begin_drain(&self, error: aviary_xmpp::StreamError) {
        let _ = self.drain.set(error);
    }

    pub fn is_draining(&self) -> bool {
        self.drain.get().is_some()
    }

    pub(crate) fn drain_error(&self) -> Option<aviary_xmpp::StreamError> {
        self.drain.get().cloned()
    }

    /// The bound streams open now.
    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.ids()
    }

    /// Closes one bound stream with `error`; false if it is already gone.
    pub fn close(&self, id: ConnId, error: aviary_xmpp::StreamError) -> bool {
        self.conns.close(id, error)
    }

    /// Delivers to one of this edge's connections by id (deliveries that arrive from
    /// session nodes over the cluster links), with the same overflow policy as local
    /// deliveries.
    #[allow(clippy::result_large_err)]
    pub fn deliver(
        &self,
        conn: ConnId,
        delivery: aviary_router::Delivery,
    ) -> Result<(), aviary_router::DeliverError> {
        use aviary_router::ClientSink;
        match self.conns.get(conn) {
            Some(sink) => sink.deliver(delivery),
            None => Err(aviary_router::DeliverError::Gone(delivery)),
        }
    }
}
