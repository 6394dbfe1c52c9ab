//! Harness for the CQL backend tests: the Cassandra node (started and stopped by
//! a guard, or taken from `AVIARY_TEST_CQL`) and the per-run context — fresh
//! keyspaces, configs, stores, and a raw driver session for poking at rows.

use aviary_store::cql::{CqlConfig, CqlStore};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The Cassandra node the checks run against; stops it on drop if it started it.
pub struct Node {
    pub addr: String,
    pub started: Option<(PathBuf, tempfile::TempDir)>,
}

impl Node {
    pub fn get() -> Node {
        if let Some(addr) = std::env::var("AVIARY_TEST_CQL")
            .ok()
            .filter(|a| !a.trim().is_empty())
        {
            eprintln!("cql tests: using the node at {addr} (AVIARY_TEST_CQL)");
            return Node {
                addr,
                started: None,
            };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dev/cassandra.sh");
        let dir = tempfile::Builder::new()
            .prefix("aviary-cql-test-")
            .tempdir()
            .unwrap();
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        // The guard exists from here on, so even a failed start is cleaned up.
        let mut node = Node {
            addr: String::new(),
            started: Some((script, dir)),
        };
        let port = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || port.parse::<u16>().is_err() {
            panic!(
                "the CQL tests need Apache Cassandra and it did not start ({}).\n\
                 Install it with `deploy/dev/cassandra.sh install` (Java 17 + jars from \
                 Maven Central), or set AVIARY_TEST_CQL=host:port to use a running node.\n\
                 --- cassandra.sh start ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        node.addr = format!("127.0.0.1:{port}");
        eprintln!(
            "cql tests: Cassandra up on {} after {:.1?}",
            node.addr,
            t.elapsed()
        );
        node
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((script, dir)) = &self.started {
            let t = Instant::now();
            match Command::new("bash")
                .arg(script)
                .arg("stop")
                .arg(dir.path())
                .output()
            {
                Ok(o) if o.status.success() => {
                    eprintln!("cql tests: Cassandra stopped in {:.1?}", t.elapsed());
                }
                Ok(o) => eprintln!(
                    "cql tests: stopping Cassandra failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("cql tests: cannot run cassandra.sh stop: {e}"),
            }
        }
    }
}

/// The node's address, the run's keyspaces and a raw session for poking at rows.
pub struct Ctx {
    addr: String,
    pub keyspace: String,
    pub raw: Session,
    keyspaces: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    pub async fn new(addr: &str) -> Ctx {
        let raw = SessionBuilder::new()
            .known_node(addr)
            .build()
            .await
            .unwrap_or_else(|e| panic!("raw session to {addr}: {e}"));
        let ctx = Ctx {
            addr: addr.to_owned(),
            keyspace: String::new(),
            raw,
            keyspaces: Default::default(),
        };
        Ctx {
            keyspace: ctx.fresh_keyspace(),
            ..ctx
        }
    }

    pub fn fresh_keyspace(&self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = self.keyspaces.lock().unwrap().len();
        let ks = format!(
            "aviary_test_{:x}_{:x}_{n}",
            std::process::id(),
            nanos & 0xffff_ffff_ffff
        );
        self.keyspaces.lock().unwrap().push(ks.clone());
        ks
    }

    pub fn config(&self, keyspace: &str) -> CqlConfig {
        CqlConfig {
            contact_points: vec![self.addr.clone()],
            keyspace: keyspace.to_owned(),
            ..CqlConfig::default()
        }
    }

    pub async fn store(&self) -> CqlStore {
        self.store_with(self.config(&self.keyspace)).await
    }

    pub async fn store_with(&self, config: CqlConfig) -> CqlStore {
        CqlStore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Runs CQL on the raw session, in the run's keyspace.
    pub async fn cql(&self, cql: &str) -> scylla::response::query_result::QueryResult {
        let cql = cql.replace("{ks}", &self.keyspace);
        self.raw
            .query_unpaged(cql.as_str(), ())
            .await
            .unwrap_or_else(|e| panic!("{cql}: {e}"))
    }

    pub async fn drop_keyspaces(&self) {
        let all = std::mem::take(&mut *self.keyspaces.lock().unwrap());
        for ks in all {
            if let Err(e) = self
                .raw
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {ks}"), ())
                .await
            {
                eprintln!("cql tests: dropping {ks}: {e}");
            }
        }
    }
}
