//! The command line of `loadgen`: every flag, its default, and the checks that turn a
//! bad combination into a clear message before any connection is made.

use clap::{Parser, ValueEnum};
use serde::{Serialize, Serializer};
use std::path::PathBuf;
use std::time::Duration;

/// What the run does once the users exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Connect N users and hold them for --duration: memory per idle session.
    Idle,
    /// 1:1 chat messages between random pairs of online users at --rate.
    Chat,
    /// Connect, authenticate, bind and disconnect as fast as --login-concurrency allows.
    LoginStorm,
    /// Rosters of --contacts contacts, --online-fraction of users online, presence
    /// updates at --rate: the cost of presence broadcast.
    PresenceFanout,
    /// Half the users receive messages while offline, then log in: time to drain.
    OfflineDrain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plaintext stream (the server must allow it).
    None,
    /// STARTTLS (RFC 6120 §5) before authentication.
    Starttls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslMech {
    Plain,
    #[value(name = "scram-sha-1")]
    #[serde(rename = "scram-sha-1")]
    ScramSha1,
    #[value(name = "scram-sha-256")]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

impl SaslMech {
    pub fn name(self) -> &'static str {
        match self {
            SaslMech::Plain => "PLAIN",
            SaslMech::ScramSha1 => "SCRAM-SHA-1",
            SaslMech::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// An XMPP load generator that speaks plain XMPP, so it measures any server.
#[derive(Parser, Clone, Debug, Serialize)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Args {
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "chat")]
    pub scenario: Scenario,
    /// Client endpoints, host:port[,host:port...]; users are spread round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:5222")]
    pub servers: Vec<String>,
    /// XMPP domain of the accounts (the stream's `to`).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Transport security.
    #[arg(long, value_enum, default_value = "none")]
    pub tls: TlsMode,
    /// Accept any server certificate (test servers use self-signed ones).
    #[arg(long)]
    pub insecure: bool,
    /// Trust the certificates in this PEM file (instead of the system roots).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Let TLS resume sessions (off by default: every login pays a full handshake).
    #[arg(long)]
    pub tls_resume: bool,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "plain")]
    pub sasl: SaslMech,
    /// Number of users (accounts PREFIX0 .. PREFIX{N-1}; they must exist).
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Account name prefix.
    #[arg(long, default_value = "user")]
    pub user_prefix: String,
    /// Password of every account.
    #[arg(long, default_value = "password")]
    #[serde(skip)]
    pub password: String,
    /// Resource to bind.
    #[arg(long, default_value = "loadgen")]
    pub resource: String,
    /// Aggregate stanzas per second in the send phase (messages; presence updates
    /// in presence-fanout).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Length of the send phase (idle: the hold; login-storm: the storm).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// After sending stops, how long to wait for deliveries still in flight (offline-drain:
    /// for the stored messages once the receivers are logged in).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub grace: Duration,
    /// Pause after logins before sampling the server (lets it settle).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub settle: Duration,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 50)]
    pub login_concurrency: u32,
    /// Logins started per second at most (0 = as fast as the concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub login_rate: f64,
    /// Limit for each login (connect to roster) and for each logout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
    /// Skip the roster get after binding.
    #[arg(long)]
    pub no_roster: bool,
    /// chat: send only to users connected to another of --servers (user i uses server
    /// i mod k), e.g. to measure cross-node delivery in a cluster.
    #[arg(long)]
    pub cross_server: bool,
    /// Bytes of padding added to each message body.
    #[arg(long, default_value_t = 0)]
    pub body_pad: usize,
    /// Spread client sockets over this many source addresses 127.0.x.y (0 = let the
    /// kernel choose; default: enough for the users, at least 4, on loopback).
    #[arg(long)]
    pub source_ips: Option<u32>,
    /// Runtime worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Server process id(s) to sample (/proc RSS and CPU), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Write the JSON record here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// presence-fanout: contacts per roster (even; a ring: the N/2 users on each side).
    #[arg(long, default_value_t = 100)]
    pub contacts: u32,
    /// presence-fanout: fraction of users online during the measurement.
    #[arg(long, default_value_t = 0.3)]
    pub online_fraction: f64,
    /// presence-fanout: subscription requests per second while building rosters.
    #[arg(long, default_value_t = 2000.0)]
    pub setup_rate: f64,
    /// presence-fanout: trust that the rosters exist; do not check or build them.
    #[arg(long)]
    pub skip_setup: bool,
}

impl Args {
    /// Checks what clap cannot: relations between flags and safe names.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if self.servers.is_empty() {
            bail!("--servers needs at least one host:port");
        }
        for (name, value) in [
            ("--domain", &self.domain),
            ("--user-prefix", &self.user_prefix),
            ("--resource", &self.resource),
        ] {
            // They are written into XML attributes and JIDs verbatim.
            let ok = (!value.is_empty() || name == "--user-prefix")
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                bail!("{name} may hold only ASCII letters, digits, '.', '_' and '-'");
            }
        }
        if self.password.is_empty() {
            bail!("--password must not be empty");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("--rate must be a positive number");
        }
        if !(self.login_rate.is_finite() && self.login_rate >= 0.0) {
            bail!("--login-rate must be 0 or positive");
        }
        if self.login_concurrency == 0 {
            bail!("--login-concurrency must be at least 1");
        }
        if self.tls == TlsMode::None && (self.insecure || self.ca.is_some()) {
            bail!("--insecure and --ca need --tls starttls");
        }
        match self.scenario {
            Scenario::PresenceFanout => {
                if self.contacts == 0 || !self.contacts.is_multiple_of(2) {
                    bail!("--contacts must be even and positive");
                }
                if self.contacts > 126 {
                    bail!("--contacts is at most 126");
                }
                if self.users <= self.contacts {
                    bail!("presence-fanout needs more --users than --contacts");
                }
                if !(self.online_fraction > 0.0 && self.online_fraction <= 1.0) {
                    bail!("--online-fraction must be in (0, 1]");
                }
                if !(self.setup_rate.is_finite() && self.setup_rate > 0.0) {
                    bail!("--setup-rate must be positive");
                }
            }
            Scenario::OfflineDrain | Scenario::Chat if self.users < 2 => {
                bail!("this scenario needs at least 2 users");
            }
            _ => {}
        }
        Ok(())
    }

    /// The account name of user `i`.
    pub fn localpart(&self, i: u32) -> String {
        format!("{}{i}", self.user_prefix)
    }
}

/// `250ms`, `20s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 500ms, 20s, 5m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn mechanism_names_match_the_iana_spelling() {
        let a = Args::parse_from(["loadgen", "--sasl", "scram-sha-256"]);
        assert_eq!(a.sasl, SaslMech::ScramSha256);
        let a = Args::parse_from(["loadgen", "--sasl", "scram-sha-1"]);
        assert_eq!(a.sasl.name(), "SCRAM-SHA-1");
    }

    #[test]
    fn rejects_xml_in_names() {
        let mut a = Args::parse_from(["loadgen"]);
        assert!(a.validate().is_ok());
        a.user_prefix = "a'b".into();
        assert!(a.validate().is_err());
    }
}
