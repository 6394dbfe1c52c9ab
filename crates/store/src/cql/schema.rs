//! Schema management: the keyspace, the `schema_version` table, and the numbered
//! migrations of `schema.cql` (embedded in the binary), applied in order and
//! recorded so each runs once per keyspace.
//!
//! Every statement is idempotent (`IF NOT EXISTS`), so a node that dies between a
//! migration and its record simply runs it again. Several nodes starting at once
//! may apply the same migration concurrently; ScyllaDB serialises schema changes
//! (Raft), but Cassandra before 5.1 can race on concurrent `CREATE TABLE` of one
//! table, which is why deployments run `aviary store migrate` once before rolling
//! out nodes of a new version.

use super::{CqlConfig, SCHEMA_TIMEOUT, corrupt, failed, next_row_failed, open_session};
use crate::StoreError;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::statement::Statement;
use std::collections::BTreeSet;
use std::sync::LazyLock;

const SCHEMA: &str = include_str!("schema.cql");

/// One numbered step of the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub id: u32,
    pub description: String,
    /// CQL statements without their trailing `;`.
    pub statements: Vec<String>,
}

/// What [`migrate`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations this call applied, in order.
    pub applied_now: Vec<u32>,
    /// The highest migration recorded in the keyspace afterwards (it may be above
    /// what this build knows if a newer Aviary migrated the keyspace).
    pub version: u32,
}

static MIGRATIONS: LazyLock<Result<Vec<Migration>, String>> = LazyLock::new(|| parse(SCHEMA));

/// The migrations this build knows, in order.
pub fn migrations() -> Result<&'static [Migration], StoreError> {
    MIGRATIONS
        .as_deref()
        // A unit test parses the embedded file, so this is a build defect.
        .map_err(|e| StoreError::Config(format!("built-in schema.cql: {e}")))
}

/// Connects and brings the keyspace's schema up to date, creating the keyspace
/// if needed — the `aviary store migrate` command. [`CqlStore::connect`] does the
/// same on every start.
///
/// [`CqlStore::connect`]: super::CqlStore::connect
pub async fn migrate(config: &CqlConfig) -> Result<SchemaStatus, StoreError> {
    config.validate()?;
    let session = open_session(config).await?;
    apply(&session, config).await
}

/// Creates the keyspace, binds `session` to it and applies missing migrations.
pub(super) async fn apply(
    session: &Session,
    config: &CqlConfig,
) -> Result<SchemaStatus, StoreError> {
    let migrations = migrations()?;
    let ks = &config.keyspace;
    let options = config
        .keyspace_options
        .as_deref()
        .map_or(String::new(), |o| format!(" AND {o}"));
    ddl(
        session,
        &format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}{options}",
            config.replication
        ),
    )
    .await?;
    tokio::time::timeout(SCHEMA_TIMEOUT, session.use_keyspace(ks, false))
        .await
        .map_err(|_| {
            failed(
                "USE keyspace",
                format!("no answer within {SCHEMA_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| failed(&format!("USE {ks}"), e))?;
    ddl(
        session,
        "CREATE TABLE IF NOT EXISTS schema_version (id int PRIMARY KEY, description text, \
         applied_at timestamp)",
    )
    .await?;

    let mut done = recorded(session).await?;
    let mut applied_now = Vec::new();
    for m in migrations {
        if done.contains(&m.id) {
            continue;
        }
        tracing::info!(keyspace = %ks, id = m.id, description = %m.description, "applying CQL migration");
        for s in &m.statements {
            ddl(session, s).await?;
        }
        let mut record = Statement::new(
            "INSERT INTO schema_version (id, description, applied_at) \
             VALUES (?, ?, toTimestamp(now()))",
        );
        record.set_request_timeout(Some(SCHEMA_TIMEOUT));
        let id = i32::try_from(m.id).map_err(|e| corrupt("schema.cql", e))?;
        session
            .query_unpaged(record, (id, &m.description))
            .await
            .map_err(|e| failed("recording a migration", e))?;
        done.insert(m.id);
        applied_now.push(m.id);
    }
    let version = done.last().copied().unwrap_or(0);
    let known = migrations.last().map_or(0, |m| m.id);
    if version > known {
        tracing::warn!(
            keyspace = %ks, version, known,
            "the CQL schema is newer than this build knows; continuing (migrations only add)"
        );
    }
    Ok(SchemaStatus {
        applied_now,
        version,
    })
}

/// Runs one schema statement; the driver then waits for schema agreement.
async fn ddl(session: &Session, cql: &str) -> Result<(), StoreError> {
    let mut st = Statement::new(cql);
    st.set_request_timeout(Some(SCHEMA_TIMEOUT));
    session
        .query_unpaged(st, ())
        .await
        .map_err(|e| failed(&format!("schema statement `{}`", first_line(cql)), e))?;
    Ok(())
}

fn first_line(cql: &str) -> &str {
    cql.lines().next().unwrap_or(cql)
}

/// The migration ids recorded in the keyspace.
async fn recorded(session: &Session) -> Result<BTreeSet<u32>, StoreError> {
    let mut st = Statement::new("SELECT id FROM schema_version");
    st.set_request_timeout(Some(SCHEMA_TIMEOUT));
    let rows = session
        .query_iter(st, ())
        .await
        .map_err(|e| failed("reading schema_version", e))?
        .rows_stream::<(i32,)>()
        .map_err(|e| corrupt("schema_version", e))?;
    let ids: Vec<(i32,)> = rows
        .try_collect()
        .await
        .map_err(next_row_failed("reading schema_version", "schema_version"))?;
    ids.into_iter()
        .map(|(id,)| u32::try_from(id).map_err(|_| corrupt("schema_version", format!("id {id}"))))
        .collect()
}

/// Splits `schema.cql` into migrations: `-- migration N: description` starts
/// one; other `--` lines are comments; a statement ends with `;` at a line end.
fn parse(text: &str) -> Result<Vec<Migration>, String> {
    let mut out: Vec<Migration> = Vec::new();
    let mut statement = String::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if let Some(comment) = line.strip_prefix("--") {
            if let Some(header) = comment.trim().strip_prefix("migration ") {
                if !statement.is_empty() {
                    return Err(format!("line {n}: statement before it lacks its ';'"));
                }
                let (id, description) = header
                    .split_once(':')
                    .ok_or(format!("line {n}: expected `-- migration N: description`"))?;
                let id: u32 = id
                    .trim()
                    .parse()
                    .map_err(|_| format!("line {n}: migration number {id:?}"))?;
                let expected = out.last().map_or(1, |m| m.id + 1);
                if id != expected {
                    return Err(format!("line {n}: migration {id}, expected {expected}"));
                }
                out.push(Migration {
                    id,
                    description: description.trim().to_owned(),
                    statements: Vec::new(),
                });
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let Some(current) = out.last_mut() else {
            return Err(format!("line {n}: statement before the first migration"));
        };
        if !statement.is_empty() {
            statement.push('\n');
        }
        match line.strip_suffix(';') {
            Some(end) => {
                statement.push_str(end);
                current.statements.push(std::mem::take(&mut statement));
            }
            None => statement.push_str(line),
        }
    }
    if !statement.is_empty() {
        return Err("the last statement lacks its ';'".into());
    }
    if let Some(empty) = out.iter().find(|m| m.statements.is_empty()) {
        return Err(format!("migration {} has no statements", empty.id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_schema_parses() {
        let ms = migrations().unwrap();
        assert_eq!(ms[0].id, 1);
        let tables: Vec<&str> = ms[0]
            .statements
            .iter()
            .filter_map(|s| s.strip_prefix("CREATE TABLE IF NOT EXISTS "))
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        assert_eq!(
            tables,
            [
                "accounts",
                "accounts_by_domain",
                "roster",
                "offline",
                "blocklist"
            ]
        );
        for m in ms {
            for s in &m.statements {
                assert!(
                    s.contains(" IF NOT EXISTS ") || s.contains(" IF EXISTS "),
                    "not idempotent: {s}"
                );
                assert!(!s.contains(';') && !s.contains("--"), "{s}");
            }
        }
    }

    #[test]
    fn parse_rules() {
        let ok = parse(
            "-- intro\n\n-- migration 1: one\nCREATE A\n  (x);\n-- note\nB;\n\
             -- migration 2: two\nC;\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].statements, ["CREATE A\n(x)", "B"]);
        assert_eq!(ok[1].description, "two");
        for bad in [
            "CREATE A;",
            "-- migration 2: skipped one\nA;",
            "-- migration 1: a\nA;\n-- migration 1: again\nB;",
            "-- migration x: a\nA;",
            "-- migration 1 no colon\nA;",
            "-- migration 1: a\nA",
            "-- migration 1: a\nA\n-- migration 2: b\nB;",
            "-- migration 1: empty\n-- migration 2: b\nB;",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
