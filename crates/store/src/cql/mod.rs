//! The CQL backend, for clusters: ScyllaDB in production, Apache Cassandra 5.0 in
//! tests and CI (same protocol, same CQL). One [`CqlStore`] holds one driver
//! session and every statement prepared once at connect; it is cheap to clone.
//!
//! # Layout (`schema.cql`)
//!
//! | table                | partition | clustering    | holds                                  |
//! |----------------------|-----------|---------------|----------------------------------------|
//! | `accounts`           | jid       | —             | opaque credentials                     |
//! | `accounts_by_domain` | domain    | jid           | the index behind `list`                |
//! | `roster`             | owner     | kind, contact | items, tombstones, pending-in; meta as static columns |
//! | `offline`            | owner     | id            | stanzas (with a TTL); the id counter as a static column |
//! | `blocklist`          | owner     | item          | nothing: the key is the data           |
//!
//! Everything one user owns in a table is one partition, because Cassandra and
//! ScyllaDB make a write atomic *and isolated* only within a partition: that is
//! what lets `apply_roster` be one batch that readers see whole or not at all, and
//! `push_offline` allocate an id and store the message in one step.
//!
//! # Consistency, timestamps and timeouts
//!
//! Reads and writes use [`CqlConfig::consistency`] (default `LOCAL_QUORUM`, so a
//! read sees every acknowledged write in the data centre); lightweight
//! transactions use [`CqlConfig::serial_consistency`] (default `LOCAL_SERIAL`).
//! Write timestamps come from one client-side monotonic generator per process, so
//! a user actor's delete-then-write sequences are ordered even when they reach
//! different coordinators. Tables written with lightweight transactions (accounts,
//! offline queues) are written *only* with them: Paxos assigns its own timestamps,
//! and mixing them with client timestamps on the same cells lets clock skew
//! reorder writes.
//!
//! Every statement carries [`CqlConfig::request_timeout`] (set when it is
//! prepared; schema changes get [`SCHEMA_TIMEOUT`]); the driver retries only
//! statements marked idempotent. Driver failures become
//! [`StoreError::Unavailable`] naming the operation; rows that do not decode
//! become [`StoreError::Corrupt`] naming the table.

mod accounts;
mod blocks;
mod offline;
mod roster;
mod schema;

pub use schema::{Migration, SchemaStatus, migrate, migrations};
pub use scylla::statement::{Consistency, SerialConsistency};

use crate::StoreError;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::pager::NextRowError;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// How long a schema change (CREATE …, including waiting for schema agreement)
/// may take: far longer than a data request.
pub const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// Cassandra's (and ScyllaDB's) largest TTL: 20 years.
const MAX_TTL: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// Where and how to reach the cluster. `Default` is a local single node.
#[derive(Clone)]
pub struct CqlConfig {
    /// `host:port` of a few nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// Created if missing. Letters, digits and `_`, at most 48 (CQL's rule);
    /// case-insensitive, like every unquoted CQL name.
    pub keyspace: String,
    /// The CQL replication map used when the keyspace is created (an existing
    /// keyspace is left alone). Production sets `NetworkTopologyStrategy`.
    pub replication: String,
    /// More keyspace options for `CREATE KEYSPACE … AND <options>`, e.g.
    /// `tablets = {'enabled': false}` on ScyllaDB releases whose tablets do not
    /// support lightweight transactions yet.
    pub keyspace_options: Option<String>,
    /// For every read and write (and the commit of lightweight transactions).
    pub consistency: Consistency,
    /// For the Paxos phase of lightweight transactions.
    pub serial_consistency: SerialConsistency,
    /// Bound on each request, retries included.
    pub request_timeout: Duration,
    /// Bound on connecting to the cluster (schema changes are bounded apart).
    pub connect_timeout: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Offline messages expire after this long, so no queue outlives an account
    /// nobody logs into. Zero keeps them until delivered.
    pub offline_ttl: Duration,
}

impl Default for CqlConfig {
    fn default() -> Self {
        CqlConfig {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: "aviary".into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            keyspace_options: None,
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            username: None,
            password: None,
            offline_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl std::fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlConfig")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("keyspace_options", &self.keyspace_options)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("offline_ttl", &self.offline_ttl)
            .finish()
    }
}

impl CqlConfig {
    /// Checks what would otherwise fail late or be spliced into CQL text.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::Config(m));
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return bad(format!(
                "keyspace {ks:?}: use 1 to 48 letters, digits and underscores"
            ));
        }
        if self.contact_points.is_empty() {
            return bad("no CQL contact points".into());
        }
        // Spliced into CREATE KEYSPACE: refuse anything that could end the statement.
        for (what, text) in [
            ("replication", Some(&self.replication)),
            ("keyspace_options", self.keyspace_options.as_ref()),
        ] {
            if text.is_some_and(|t| t.contains(';')) {
                return bad(format!("{what} must not contain ';'"));
            }
        }
        if self.username.is_some() != self.password.is_some() {
            return bad("CQL username and password must be set together".into());
        }
        if self.offline_ttl > MAX_TTL {
            return bad(format!(
                "offline_ttl {:?} exceeds CQL's maximum TTL of 20 years",
                self.offline_ttl
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("CQL timeouts must be above zero".into());
        }
        Ok(())
    }

    /// The offline TTL in whole seconds, as CQL's `USING TTL` takes it.
    fn offline_ttl_secs(&self) -> i32 {
        // Validated to at most 20 years, which fits; round a sub-second TTL up
        // rather than to 0, which would mean "no TTL".
        let secs = self.offline_ttl.as_secs()
            + u64::from(self.offline_ttl.subsec_nanos() > 0 && self.offline_ttl.as_secs() == 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// The CQL store. Cheap to clone: clones share one session.
#[derive(Clone)]
pub struct CqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    accounts: accounts::Statements,
    roster: roster::Statements,
    offline: offline::Statements,
    blocks: blocks::Statements,
    request_timeout: Duration,
    offline_ttl_secs: i32,
}

impl std::fmt::Debug for CqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlStore").finish_non_exhaustive()
    }
}

impl CqlStore {
    /// Connects, creates or upgrades the schema (idempotently; see
    /// [`migrate`]) and prepares every statement.
    pub async fn connect(config: CqlConfig) -> Result<CqlStore, StoreError> {
        config.validate()?;
        let session = open_session(&config).await?;
        schema::apply(&session, &config).await?;
        let p = Preparer {
            session: &session,
            timeout: config.request_timeout,
        };
        let accounts = accounts::Statements::prepare(&p).await?;
        let roster = roster::Statements::prepare(&p).await?;
        let offline = offline::Statements::prepare(&p).await?;
        let blocks = blocks::Statements::prepare(&p).await?;
        Ok(CqlStore {
            inner: Arc::new(Inner {
                session,
                accounts,
                roster,
                offline,
                blocks,
                request_timeout: config.request_timeout,
                offline_ttl_secs: config.offline_ttl_secs(),
            }),
        })
    }

    fn session(&self) -> &Session {
        &self.inner.session
    }

    /// An unlogged batch carrying the request timeout. Idempotent batches may be
    /// retried by the driver.
    fn batch(&self, idempotent: bool) -> Batch {
        let mut b = Batch::new(BatchType::Unlogged);
        b.set_request_timeout(Some(self.inner.request_timeout));
        b.set_is_idempotent(idempotent);
        b
    }
}

/// One generator for the whole process: the driver only guarantees increasing
/// timestamps per generator, and a process may hold several stores.
static TIMESTAMPS: LazyLock<Arc<MonotonicTimestampGenerator>> =
    LazyLock::new(|| Arc::new(MonotonicTimestampGenerator::new()));

/// A session (not yet bound to the keyspace) with the configured consistency,
/// timeout and timestamps as its defaults.
async fn open_session(config: &CqlConfig) -> Result<Session, StoreError> {
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency)
        .serial_consistency(Some(config.serial_consistency))
        .request_timeout(Some(config.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(TIMESTAMPS.clone())
        .connection_timeout(config.connect_timeout)
        .schema_agreement_timeout(SCHEMA_TIMEOUT);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    let nodes = config.contact_points.join(", ");
    // `build` has its own per-connection timeout; this bounds the whole of it
    // (name resolution, several contact points, metadata fetch).
    match tokio::time::timeout(config.connect_timeout, builder.build()).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(StoreError::Unavailable(format!(
            "cannot connect to CQL nodes [{nodes}]: {e}"
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "cannot connect to CQL nodes [{nodes}]: no answer within {:?}",
            config.connect_timeout
        ))),
    }
}

/// Prepares statements with their timeout and idempotence set.
struct Preparer<'a> {
    session: &'a Session,
    timeout: Duration,
}

impl Preparer<'_> {
    /// `idempotent`: the driver may retry the statement after a timeout, because
    /// running it twice has the effect of once. Never true for lightweight
    /// transactions or anything read-modify-write.
    async fn prepare(&self, cql: &str, idempotent: bool) -> Result<PreparedStatement, StoreError> {
        let fail = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("cql: cannot prepare `{cql}`: {e}"))
        };
        let mut s = tokio::time::timeout(self.timeout, self.session.prepare(cql))
            .await
            .map_err(|_| fail(&format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| fail(&e))?;
        s.set_request_timeout(Some(self.timeout));
        s.set_is_idempotent(idempotent);
        Ok(s)
    }
}

/// A failed request, as the error the traits return.
fn failed(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cql {op}: {e}"))
}

/// Rows of `table` that do not have the shape or content we write.
fn corrupt(table: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table}: {e}"))
}

/// A paged read that failed: fetching a page is the cluster's fault, a row that
/// does not deserialize is the data's.
fn next_row_failed<'a>(op: &'a str, table: &'a str) -> impl Fn(NextRowError) -> StoreError + 'a {
    move |e| match e {
        NextRowError::NextPageError(e) => failed(op, e),
        NextRowError::RowDeserializationError(e) => corrupt(table, e),
        e => failed(op, e),
    }
}

/// Whether a lightweight transaction applied: the `[applied]` column that
/// leads its result (Cassandra and ScyllaDB differ in the columns after it).
fn applied(op: &str, result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(|e| failed(op, e))?;
    let row: Row = rows
        .first_row()
        .map_err(|e| failed(op, format!("no [applied] row: {e}")))?;
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(failed(op, format!("[applied] column is {other:?}"))),
    }
}

/// u64 fields the records define (roster versions, the random epoch) are stored
/// in `bigint` columns bit for bit: values above `i64::MAX` read back negative in
/// `cqlsh` but round-trip exactly.
fn u64_to_bigint(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn bigint_to_u64(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_round_trip() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(bigint_to_u64(u64_to_bigint(v)), v);
        }
        assert_eq!(u64_to_bigint(u64::MAX), -1);
    }

    #[test]
    fn config_validation() {
        assert!(CqlConfig::default().validate().is_ok());
        let with = |f: fn(&mut CqlConfig)| {
            let mut c = CqlConfig::default();
            f(&mut c);
            c.validate()
        };
        for f in [
            (|c: &mut CqlConfig| c.keyspace = "a-b".into()) as fn(&mut CqlConfig),
            |c| c.keyspace = String::new(),
            |c| c.keyspace = "k".repeat(49),
            |c| c.keyspace = "ks; DROP KEYSPACE x".into(),
            |c| c.replication = "{'class': 'SimpleStrategy'}; DROP TABLE x".into(),
            |c| c.keyspace_options = Some("durable_writes = true;".into()),
            |c| c.contact_points.clear(),
            |c| c.username = Some("u".into()),
            |c| c.offline_ttl = MAX_TTL + Duration::from_secs(1),
            |c| c.request_timeout = Duration::ZERO,
        ] {
            assert!(matches!(with(f), Err(StoreError::Config(_))));
        }
        assert!(with(|c| c.keyspace = "Aviary_2".into()).is_ok());
    }

    #[test]
    fn ttl_seconds() {
        let ttl = |d| {
            CqlConfig {
                offline_ttl: d,
                ..CqlConfig::default()
            }
            .offline_ttl_secs()
        };
        assert_eq!(ttl(Duration::ZERO), 0);
        assert_eq!(ttl(Duration::from_millis(10)), 1);
        assert_eq!(ttl(Duration::from_millis(1500)), 1);
        assert_eq!(ttl(MAX_TTL), 630_720_000);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = CqlConfig {
            username: Some("aviary".into()),
            password: Some("hunter2".into()),
            ..CqlConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("aviary") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
