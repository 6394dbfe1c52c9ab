//! The configuration: one TOML document, overridden by `AVIARY__SECTION__KEY`
//! environment variables, validated as a whole.
//!
//! Parsing takes its sources as arguments ([`Config::load`]) so tests need neither
//! files nor a process environment. Every key has a default; an empty document is a
//! working single-node server for `localhost`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of environment overrides: `AVIARY__C2S__REQUIRE_TLS=false`.
pub const ENV_PREFIX: &str = "AVIARY__";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub c2s: C2sSection,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub registration: RegistrationSection,
    pub im: ImSection,
    pub store: StoreSection,
    pub cluster: ClusterSection,
    pub version: VersionSection,
    pub log: LogSection,
    pub admin: AdminSection,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Served domains; the first is the default for CLI commands and streams
    /// without `to`.
    pub domains: Vec<String>,
    /// Where the embedded store and the generated certificate live.
    pub data_dir: PathBuf,
    /// This node's name in logs and in the cluster; defaults to the host name.
    pub node_id: Option<String>,
    /// Worker threads (actix arbiters) for connections and user actors; 0 = one per
    /// CPU core.
    pub workers: usize,
    /// Most resources one account may bind at once.
    pub max_resources_per_account: usize,
    /// The whole budget of a graceful shutdown (SIGTERM): closing client streams,
    /// flushing what is in flight, handing partitions over. Orchestrators must wait
    /// at least this long before killing the process.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sSection {
    /// STARTTLS listeners (RFC 6120; conventionally port 5222).
    pub listen: Vec<SocketAddr>,
    /// Direct-TLS listeners (XEP-0368; conventionally port 5223).
    pub listen_tls: Vec<SocketAddr>,
    /// Refuse authentication before TLS (RFC 6120 §5.3.1). Keep this on.
    pub require_tls: bool,
    /// Allow SASL PLAIN without TLS. Only for loopback benchmarks and tests: it sends
    /// passwords in the clear. Requires `require_tls = false`.
    pub allow_insecure_plain: bool,
    #[serde(with = "humantime_serde")]
    pub negotiation_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Whitespace keepalive after this long without output; "0s" disables.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Largest stanza after authentication, in bytes.
    pub max_stanza_size: usize,
    /// Largest element before authentication, in bytes.
    pub max_stanza_size_pre_auth: usize,
    /// Bytes queued for one slow client before deliveries to it are refused.
    pub write_high_watermark: usize,
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// On shutdown, client streams are closed spread over this long (at most half
    /// of `server.shutdown_grace`), so their reconnections do not arrive at the
    /// remaining edges all at once.
    #[serde(with = "humantime_serde")]
    pub shutdown_close_period: Duration,
    /// On shutdown, close client streams with `<see-other-host/>` naming this
    /// `host[:port]` (RFC 6120 §4.9.3.19) instead of `<system-shutdown/>`.
    pub shutdown_redirect: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain. Unset: a self-signed certificate for the served
    /// domains is generated in `<data_dir>/tls/` on first start.
    pub certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// PBKDF2 iterations for newly stored SCRAM credentials (at least 4096).
    pub scram_iterations: u32,
    pub max_failures_per_connection: u32,
    pub max_failures_per_account: u32,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSection {
    /// In-band registration (XEP-0077).
    pub enabled: bool,
    /// Registrations per client IP address per `window`; 0 = unlimited.
    pub per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// The IM and presence services (RFC 6121). Either may be switched off (RFC 6121
/// §1.3, after RFC 2779): the disabled one answers `service-unavailable`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImSection {
    /// The presence service: presence broadcast, probes and subscriptions.
    pub presence: bool,
    /// The instant-messaging service: messages between users.
    pub messages: bool,
    /// Messages kept per user while offline (XEP-0160); 0 turns offline storage off.
    /// When full, new messages are bounced with `resource-constraint`.
    pub offline_max: usize,
    /// Most items in one roster.
    pub roster_max_items: usize,
}

impl Default for ImSection {
    fn default() -> Self {
        ImSection {
            presence: true,
            messages: true,
            offline_max: 1000,
            roster_max_items: 2000,
        }
    }
}

/// Where accounts, rosters, block lists and offline messages live.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `embedded` (a local file in `server.data_dir`; one process only) or `cql`
    /// (ScyllaDB or Cassandra; required for clustered roles).
    pub backend: StoreBackend,
    /// CQL nodes to contact first (`host:port`).
    pub cql_contact_points: Vec<String>,
    pub cql_keyspace: String,
    /// The replication map used if the keyspace must be created.
    pub cql_replication: String,
    /// `local_quorum` (default), `quorum`, `local_one`, `one`, `all`.
    pub cql_consistency: String,
    #[serde(with = "humantime_serde")]
    pub cql_timeout: Duration,
    pub cql_username: Option<String>,
    /// Read from this file (secrets stay out of the configuration).
    pub cql_password_file: Option<PathBuf>,
    /// Offline messages expire after this long ("0s" keeps them until delivered).
    #[serde(with = "humantime_serde")]
    pub offline_ttl: Duration,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Cql,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Embedded,
            cql_contact_points: vec!["127.0.0.1:9042".to_owned()],
            cql_keyspace: "aviary".to_owned(),
            cql_replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_owned(),
            cql_consistency: "local_quorum".to_owned(),
            cql_timeout: Duration::from_secs(5),
            cql_username: None,
            cql_password_file: None,
            offline_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What this process does in a cluster.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process (the default; no Redis, no gRPC).
    All,
    /// Client listeners only; users are owned by session nodes.
    Edge,
    /// User actors only; edges and peers reach it over gRPC.
    Session,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub role: Role,
    /// gRPC listener of session nodes (edges listen for nothing but clients).
    pub grpc_listen: SocketAddr,
    /// How other nodes reach this one (`host:port`); default: `grpc_listen`, with
    /// an unspecified IP replaced by 127.0.0.1.
    pub grpc_advertise: Option<String>,
    pub redis_url: String,
    /// Prefix of every Redis key (several clusters can share one Redis).
    pub redis_prefix: String,
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Membership lease: a node that cannot renew for this long is considered dead
    /// and its partitions move.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often leases are renewed and the cluster view refreshed.
    #[serde(with = "humantime_serde")]
    pub lease_tick: Duration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            role: Role::All,
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 7400)),
            grpc_advertise: None,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_prefix: "aviary".to_owned(),
            redis_timeout: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(5),
            lease_tick: Duration::from_millis(500),
        }
    }
}

impl ClusterSection {
    pub fn advertise(&self) -> String {
        self.grpc_advertise.clone().unwrap_or_else(|| {
            let mut a = self.grpc_listen;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a.to_string()
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionSection {
    /// Answer software-version queries (XEP-0092) at all.
    pub enabled: bool,
    /// Include the operating system in the answer.
    pub show_os: bool,
}

/// The admin HTTP listener: Prometheus `/metrics`, `/healthz`, `/readyz`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub enabled: bool,
    /// Keep it off public networks: it needs no credentials.
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter such as "info" or "info,aviary_edge=debug"; `RUST_LOG`
    /// takes precedence.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            domains: vec!["localhost".to_owned()],
            data_dir: PathBuf::from("./data"),
            node_id: None,
            workers: 0,
            max_resources_per_account: 64,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for C2sSection {
    fn default() -> Self {
        let e = aviary_edge::EdgeConfig::default();
        C2sSection {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5222))],
            listen_tls: vec![SocketAddr::from(([0, 0, 0, 0], 5223))],
            require_tls: e.require_tls,
            allow_insecure_plain: e.allow_insecure_plain,
            negotiation_timeout: e.negotiation_timeout,
            idle_timeout: e.idle_timeout,
            keepalive_interval: e.keepalive_interval,
            max_stanza_size: e.max_stanza_bytes,
            max_stanza_size_pre_auth: e.pre_auth_max_stanza_bytes,
            write_high_watermark: e.write_high_watermark,
            write_timeout: e.write_timeout,
            shutdown_close_period: Duration::from_secs(5),
            shutdown_redirect: None,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        let e = aviary_edge::EdgeConfig::default();
        AuthSection {
            scram_iterations: e.scram_iterations,
            max_failures_per_connection: e.max_auth_failures_per_connection,
            max_failures_per_account: e.max_auth_failures_per_account,
            failure_window: e.auth_failure_window,
        }
    }
}

impl Default for RegistrationSection {
    fn default() -> Self {
        let e = aviary_edge::EdgeConfig::default();
        RegistrationSection {
            enabled: false,
            per_ip: e.registrations_per_ip,
            window: e.registration_window,
        }
    }
}

impl Default for VersionSection {
    fn default() -> Self {
        VersionSection {
            enabled: true,
            show_os: false,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses `toml_text` (an empty string means "all defaults"), applies the
    /// `AVIARY__…` overrides from `env`, and validates. `origin` names the source in
    /// error messages.
    pub fn load<I>(toml_text: &str, origin: &str, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut doc: toml::Table = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (key, value) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            apply_override(&mut doc, path, &value).map_err(|message| ConfigError::Parse {
                origin: format!("environment variable {key}"),
                message,
            })?;
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        config.normalized()
    }

    fn normalized(mut self) -> Result<Config, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.server.domains.is_empty() {
            return invalid("server.domains must name at least one domain".into());
        }
        for d in &mut self.server.domains {
            let norm = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if aviary_xmpp::BareJid::new(&norm).is_err() || norm.contains(['@', '/']) {
                return invalid(format!("server.domains: '{d}' is not a valid domain"));
            }
            *d = norm;
        }
        let mut seen = self.server.domains.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.server.domains.len() {
            return invalid("server.domains lists a domain twice".into());
        }
        if self.c2s.listen.is_empty() && self.c2s.listen_tls.is_empty() {
            return invalid(
                "c2s.listen and c2s.listen_tls are both empty: clients could not connect".into(),
            );
        }
        if self.c2s.allow_insecure_plain && self.c2s.require_tls {
            return invalid(
                "c2s.allow_insecure_plain needs c2s.require_tls = false (it allows logins without TLS)"
                    .into(),
            );
        }
        if self.auth.scram_iterations < 4096 {
            return invalid(format!(
                "auth.scram_iterations = {} is below the minimum of 4096 (RFC 7677)",
                self.auth.scram_iterations
            ));
        }
        if self.c2s.max_stanza_size < 10_000 {
            return invalid(
                "c2s.max_stanza_size must be at least 10000 bytes (RFC 6120 §13.12)".into(),
            );
        }
        if self.c2s.max_stanza_size_pre_auth < 1024 {
            return invalid("c2s.max_stanza_size_pre_auth must be at least 1024 bytes".into());
        }
        if self.c2s.idle_timeout < Duration::from_secs(10) {
            return invalid("c2s.idle_timeout must be at least 10s".into());
        }
        if self.c2s.negotiation_timeout.is_zero() {
            return invalid("c2s.negotiation_timeout must be positive".into());
        }
        if self.tls.certificate.is_some() != self.tls.key.is_some() {
            return invalid("tls.certificate and tls.key must be set together".into());
        }
        if !self.im.presence && !self.im.messages {
            return invalid(
                "im.presence and im.messages are both off: the server would offer nothing".into(),
            );
        }
        if self.im.roster_max_items == 0 {
            return invalid("im.roster_max_items must be at least 1".into());
        }
        if self.cluster.role != Role::All && self.store.backend != StoreBackend::Cql {
            return invalid(format!(
                "cluster.role = {:?} needs store.backend = \"cql\": every node must see the same data",
                self.cluster.role
            ));
        }
        if self.cluster.lease_tick * 3 > self.cluster.lease_ttl {
            return invalid(
                "cluster.lease_tick must be at most a third of cluster.lease_ttl".into(),
            );
        }
        if !self.cluster.redis_url.starts_with("redis://")
            && !self.cluster.redis_url.starts_with("rediss://")
        {
            return invalid(format!(
                "cluster.redis_url '{}' is not a redis:// URL",
                self.cluster.redis_url
            ));
        }
        if parse_consistency(&self.store.cql_consistency).is_none() {
            return invalid(format!(
                "store.cql_consistency '{}' is not one of local_quorum, quorum, local_one, one, all, each_quorum",
                self.store.cql_consistency
            ));
        }
        if let Some(host) = &self.c2s.shutdown_redirect
            && (host.trim().is_empty() || host.contains(['<', '>', '&', ' ', '/']))
        {
            return invalid(format!(
                "c2s.shutdown_redirect '{host}' is not a host or host:port"
            ));
        }
        if self.server.shutdown_grace.is_zero() {
            return invalid("server.shutdown_grace must be positive".into());
        }
        if self.server.max_resources_per_account == 0 {
            return invalid("server.max_resources_per_account must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(format!("log.level '{}': {e}", self.log.level));
        }
        Ok(self)
    }

    /// The configuration as TOML (for `aviary config dump`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn node_id(&self) -> String {
        self.server.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "aviary".to_owned())
        })
    }
}

/// Sets `SECTION__KEY` (case-insensitive) to `value`, read as a TOML value when it
/// parses as one (`false`, `42`, `["a", "b"]`, `"30s"`), otherwise as a string.
fn apply_override(doc: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) {
        return Err("malformed key (empty section)".into());
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, sections) = parts.split_last().ok_or("empty key")?;
    let mut table = doc;
    for s in sections {
        let entry = table
            .entry(s.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("'{s}' is not a section"))?;
    }
    table.insert(last.clone(), parsed);
    Ok(())
}

/// The CQL consistency named in the configuration.
pub fn parse_consistency(name: &str) -> Option<aviary_store::cql::Consistency> {
    use aviary_store::cql::Consistency as C;
    Some(match name.to_ascii_lowercase().as_str() {
        "local_quorum" => C::LocalQuorum,
        "quorum" => C::Quorum,
        "each_quorum" => C::EachQuorum,
        "local_one" => C::LocalOne,
        "one" => C::One,
        "all" => C::All,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            text,
            "test.toml",
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn empty_document_is_a_working_default() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.domains, vec!["localhost"]);
        assert!(c.c2s.require_tls);
        assert!(!c.registration.enabled);
        assert_eq!(c.auth.scram_iterations, 10_000);
    }

    #[test]
    fn env_overrides_file_values() {
        let c = load(
            "[c2s]\nrequire_tls = true\n",
            &[
                ("AVIARY__C2S__REQUIRE_TLS", "false"),
                ("AVIARY__C2S__IDLE_TIMEOUT", "90s"),
                ("AVIARY__SERVER__DOMAINS", r#"["Example.COM", "b.test"]"#),
                ("AVIARY__REGISTRATION__ENABLED", "true"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert!(!c.c2s.require_tls);
        assert_eq!(c.c2s.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.server.domains, vec!["example.com", "b.test"]);
        assert!(c.registration.enabled);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = load("[c2s]\nrequire_tsl = false\n", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("require_tsl"), "{msg}");
        assert!(msg.contains("test.toml"), "{msg}");
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(
            load("[auth]\nscram_iterations = 10\n", &[])
                .unwrap_err()
                .to_string()
                .contains("4096")
        );
        assert!(
            load("[c2s]\nallow_insecure_plain = true\n", &[])
                .unwrap_err()
                .to_string()
                .contains("require_tls")
        );
        assert!(load("[server]\ndomains = []\n", &[]).is_err());
        assert!(load("[server]\ndomains = [\"a@b\"]\n", &[]).is_err());
        assert!(load("[c2s]\nlisten = [\"nonsense\"]\n", &[]).is_err());
        assert!(load("not toml at all [", &[]).is_err());
        assert!(load("", &[("AVIARY__C2S__IDLE_TIMEOUT", "soon")]).is_err());
    }

    #[test]
    fn dump_round_trips() {
        let c = load("[server]\ndomains = [\"x.test\"]\n", &[]).unwrap();
        let again = load(&c.to_toml(), &[]).unwrap();
        assert_eq!(again.server.domains, vec!["x.test"]);
    }
}
