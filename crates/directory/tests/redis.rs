//! The Redis backend against a real Redis: the shared conformance suite, the key
//! layout, corrupt data, timeouts, and surviving `SCRIPT FLUSH` and a Redis restart.
//!
//! Redis comes from `AVIARY_TEST_REDIS_URL` if set (CI may run one for all tests),
//! else each test starts a private one with `deploy/dev/redis.sh` (~0.1 s) and stops
//! it when done. Tests that stop, pause or restart Redis always use a private one.
//! Every test uses its own random key prefix, so tests can share a Redis and run in
//! parallel. A missing `redis-server` fails the tests with instructions; nothing is
//! skipped silently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aviary_directory::conformance::{self as c, RealTime};
use aviary_directory::{
    Claim, DirectoryError, Location, Locations, Membership, NodeInfo, NodeRole, Partitions,
    RedisDirectory,
};
use jid::BareJid;
use redis::AsyncCommands;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Generous, so a busy test machine does not turn slowness into failures; the
/// timeout tests set their own.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// The lease the expiry checks wait out.
const SHORT: Duration = Duration::from_millis(300);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dev/redis.sh")
}

/// A Redis for one test: the shared one from the environment, or a private one
/// that is stopped on drop.
struct TestRedis {
    url: String,
    own: Option<(tempfile::TempDir, u16)>,
}

impl TestRedis {
    fn any() -> Self {
        match std::env::var("AVIARY_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => TestRedis { url, own: None },
            _ => Self::own(),
        }
    }

    fn own() -> Self {
        let in_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("redis-server").is_file()));
        assert!(
            in_path,
            "redis-server is not installed: run `deploy/dev/deps.sh install` \
             (or `deploy/dev/redis.sh install`), or set AVIARY_TEST_REDIS_URL"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = redis_sh(&["start", &dir.path().to_string_lossy()]);
        let port: u16 = port
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("redis.sh start printed {port:?}"));
        TestRedis {
            url: format!("redis://127.0.0.1:{port}"),
            own: Some((dir, port)),
        }
    }

    fn stop(&self) {
        let (dir, _) = self
            .own
            .as_ref()
            .expect("only a private Redis can be stopped");
        redis_sh(&["stop", &dir.path().to_string_lossy()]);
    }

    /// Starts the private Redis again on its port (with no data: it never persists).
    fn start_again(&self) {
        let (dir, port) = self
            .own
            .as_ref()
            .expect("only a private Redis can be started");
        redis_sh(&["start", &dir.path().to_string_lossy(), &port.to_string()]);
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some((dir, _)) = &self.own {
            let _ = Command::new(script()).arg("stop").arg(dir.path()).output();
        }
    }
}

fn redis_sh(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "redis.sh {args:?} failed ({}); if redis-server is missing, run \
         `deploy/dev/deps.sh install`:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fresh_prefix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("aviary-test-{nanos:x}-{:x}-{seq}", std::process::id())
}

async fn directory(redis: &TestRedis, op_timeout: Duration) -> RedisDirectory {
    RedisDirectory::connect(&redis.url, &fresh_prefix(), op_timeout)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", redis.url))
}

macro_rules! check {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let redis = TestRedis::any();
            c::$name(&directory(&redis, OP_TIMEOUT).await).await;
        }
    )*};
}

macro_rules! timed_check {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let redis = TestRedis::any();
            c::$name(&directory(&redis, OP_TIMEOUT).await, &RealTime::default(), SHORT).await;
        }
    )*};
}

check!(
    membership_join_renew_leave,
    claims_start_unclaimed,
    claims_compare_and_set,
    claims_race,
    locations_bind_and_replace,
    locations_update_cas,
    locations_unbind_cas,
    locations_stale_connection_loses,
    locations_isolate_users,
    locations_edge_index,
);
timed_check!(membership_lease_expiry, membership_renewal_extends_lease);

/// The location checks share one directory and run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_checks_share_a_directory() {
    let redis = TestRedis::any();
    let dir = directory(&redis, OP_TIMEOUT).await;
    tokio::join!(
        c::locations_bind_and_replace(&dir),
        c::locations_update_cas(&dir),
        c::locations_unbind_cas(&dir),
        c::locations_stale_connection_loses(&dir),
        c::locations_isolate_users(&dir),
        c::locations_edge_index(&dir),
    );
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role: NodeRole::Session,
        addr: "127.0.0.1:7000".into(),
        incarnation: 1,
    }
}

fn loc(edge: &str, conn: u64) -> Location {
    Location {
        edge: edge.into(),
        conn,
        available: true,
        ..Location::default()
    }
}

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap()
}

const LONG: Duration = Duration::from_secs(60);

/// The documented key layout, hash tags included (Redis Cluster needs every
/// script's keys in one slot), and no stray keys.
#[tokio::test]
async fn key_layout() {
    let redis = TestRedis::any();
    let dir = directory(&redis, OP_TIMEOUT).await;
    let p = dir.prefix().to_owned();
    dir.heartbeat(&node("n1"), LONG).await.unwrap();
    assert!(
        dir.cas_claim(
            9,
            None,
            &Claim {
                node: "n1".into(),
                epoch: 1
            }
        )
        .await
        .unwrap()
    );
    let user = jid("alice@example.com");
    dir.bind(&user, "phone", &loc("e1", 1)).await.unwrap();

    let mut raw = redis.raw().await;
    let mut keys: Vec<String> = raw.keys(format!("{p}:*")).await.unwrap();
    keys.sort();
    let layout = [
        (format!("{p}:{{cluster}}:claims"), "hash"),
        (format!("{p}:{{cluster}}:epoch"), "string"),
        (format!("{p}:{{cluster}}:members"), "zset"),
        (format!("{p}:{{cluster}}:nodes"), "hash"),
        (format!("{p}:{{alice@example.com}}:loc"), "hash"),
        (format!("{p}:{{edge:e1}}:users"), "set"),
    ];
    let mut want: Vec<String> = layout.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(keys, want);
    for (key, kind) in &layout {
        let t: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(t, *kind, "{key}");
    }
    let (claims, members) = (&layout[0].0, &layout[2].0);
    let claim: String = raw.hget(claims, "9").await.unwrap();
    assert_eq!(claim, "1 n1");
    // Lease expiry is Redis time in ms: within a second of now + ttl.
    let expiry: f64 = raw.zscore(members, "n1").await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
    let now_ms = (secs * 1000 + micros / 1000) as f64;
    let ttl_ms = LONG.as_millis() as f64;
    assert!(
        (expiry - (now_ms + ttl_ms)).abs() < 1000.0,
        "expiry {expiry}, now {now_ms}"
    );

    // Expired and departed members leave nothing behind.
    let nodes = &layout[3].0;
    dir.heartbeat(&node("n2"), Duration::ZERO).await.unwrap();
    assert!(
        !dir.members().await.unwrap().is_live("n2"),
        "a zero lease is expired at once"
    );
    dir.leave("n1").await.unwrap();
    for id in ["n1", "n2"] {
        let info: bool = raw.hexists(nodes, id).await.unwrap();
        let score: Option<f64> = raw.zscore(members, id).await.unwrap();
        assert!(
            !info && score.is_none(),
            "{id} left info {info} or score {score:?}"
        );
    }
}

/// Scripts flushed from Redis (as after a restart or failover) are reloaded.
#[tokio::test]
async fn script_flush_is_survived() {
    let redis = TestRedis::any();
    let dir = directory(&redis, OP_TIMEOUT).await;
    let user = jid("u@flush.test");
    exercise_every_script(&dir, &user, 1).await;
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    exercise_every_script(&dir, &user, 2).await;
}

/// Runs each script once and checks it did its job; `round` keeps rounds apart.
async fn exercise_every_script(dir: &RedisDirectory, user: &BareJid, round: u64) {
    let id = format!("n{round}");
    dir.heartbeat(&node(&id), LONG).await.unwrap();
    assert!(dir.members().await.unwrap().is_live(&id));
    dir.leave(&id).await.unwrap();
    assert!(!dir.members().await.unwrap().is_live(&id));
    let claim = Claim {
        node: id.clone(),
        epoch: round,
    };
    assert!(dir.cas_claim(round as u32, None, &claim).await.unwrap());
    dir.bind(user, "r", &loc("e", round)).await.unwrap();
    assert!(dir.update(user, "r", &loc("e", round)).await.unwrap());
    assert!(dir.unbind(user, "r", round).await.unwrap());
}

/// Redis going away makes calls fail fast with `Unavailable`; once it is back (with
/// no data and no scripts) the same directory works again.
#[tokio::test]
async fn restart_is_survived() {
    let redis = TestRedis::own();
    let op_timeout = Duration::from_millis(500);
    let dir = directory(&redis, op_timeout).await;
    let user = jid("u@restart.test");
    dir.heartbeat(&node("a"), LONG).await.unwrap();
    dir.bind(&user, "r", &loc("e", 1)).await.unwrap();
    let before = dir.members().await.unwrap();
    assert!(before.is_live("a"));

    redis.stop();
    for _ in 0..3 {
        let t = Instant::now();
        match dir.members().await {
            Err(DirectoryError::Unavailable(msg)) => assert!(msg.contains("members"), "{msg}"),
            other => panic!("members with Redis down: {other:?}"),
        }
        assert!(
            t.elapsed() < op_timeout * 2,
            "failing took {:?}",
            t.elapsed()
        );
    }
    assert!(matches!(
        dir.heartbeat(&node("a"), LONG).await,
        Err(DirectoryError::Unavailable(_))
    ));

    redis.start_again();
    // The very first call after the restart works: dead pooled connections fail
    // their PING and are replaced, and the script is loaded again.
    dir.heartbeat(&node("a"), LONG).await.unwrap();
    let after = dir.members().await.unwrap();
    assert_eq!(after.nodes, vec![node("a")]);
    assert!(
        after.epoch > before.epoch,
        "the epoch went back after Redis lost its data: {} -> {}",
        before.epoch,
        after.epoch
    );
    assert!(
        dir.resources(&user).await.unwrap().is_empty(),
        "Redis kept data"
    );
    exercise_every_script(&dir, &user, 7).await;
}

/// Every call is bounded by the operation timeout, also when Redis accepts the
/// connection but does not answer.
#[tokio::test]
async fn calls_are_bounded_by_the_timeout() {
    // A server that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let op_timeout = Duration::from_millis(300);
    let t = Instant::now();
    match RedisDirectory::connect(&url, "p", op_timeout).await {
        Err(DirectoryError::Unavailable(msg)) => assert!(msg.contains("within 300 ms"), "{msg}"),
        other => panic!("connect to a silent server: {other:?}"),
    }
    assert!(t.elapsed() < op_timeout * 3, "took {:?}", t.elapsed());

    // A real Redis that stops answering for a while (all clients paused).
    let redis = TestRedis::own();
    let dir = directory(&redis, op_timeout).await;
    dir.heartbeat(&node("a"), LONG).await.unwrap();
    let mut raw = redis.raw().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    let t = Instant::now();
    match dir.members().await {
        Err(DirectoryError::Unavailable(msg)) => assert!(msg.contains("no answer within"), "{msg}"),
        other => panic!("members while Redis is paused: {other:?}"),
    }
    assert!(t.elapsed() < op_timeout * 3, "took {:?}", t.elapsed());
    // Once Redis answers again, so does the directory (timed-out calls leave no
    // broken connections behind).
    loop {
        match dir.members().await {
            Ok(view) => break assert!(view.is_live("a")),
            Err(e) => assert!(t.elapsed() < Duration::from_secs(10), "still failing: {e}"),
        }
    }
}

/// Nothing listening, a malformed URL and a prefix that would break the hash tags
/// are errors with a clear message, not panics or hangs.
#[tokio::test]
async fn bad_configuration_is_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused =
        RedisDirectory::connect(&format!("redis://127.0.0.1:{port}"), "p", OP_TIMEOUT).await;
    assert!(
        matches!(refused, Err(DirectoryError::Unavailable(ref m)) if m.contains("ping")),
        "{refused:?}"
    );
    let bad_url = RedisDirectory::connect("http://nowhere", "p", OP_TIMEOUT).await;
    assert!(
        matches!(bad_url, Err(DirectoryError::Unavailable(ref m)) if m.contains("URL")),
        "{bad_url:?}"
    );
    for prefix in ["", "a{b", "x}"] {
        let r = RedisDirectory::connect("redis://127.0.0.1:1", prefix, OP_TIMEOUT).await;
        assert!(
            matches!(r, Err(DirectoryError::Unavailable(ref m)) if m.contains("prefix")),
            "{r:?}"
        );
    }
}

#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(r: Result<T, DirectoryError>, what: &str) {
    match r {
        Err(DirectoryError::Corrupt(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// Damaged or foreign data in our keys is `Corrupt`, stays with its owner, and is
/// repaired by writing over it.
#[tokio::test]
async fn corrupt_entries_are_reported() {
    let redis = TestRedis::any();
    let dir = directory(&redis, OP_TIMEOUT).await;
    let p = dir.prefix().to_owned();
    let mut raw = redis.raw().await;
    let (al, alice, bob) = (jid("al@x"), jid("alice@x"), jid("bob@x"));
    dir.bind(&al, "r", &loc("e", 1)).await.unwrap();
    dir.bind(&alice, "r", &loc("e", 2)).await.unwrap();

    let _: () = raw
        .hset(format!("{p}:{{alice@x}}:loc"), "bad", &[9u8, 1, 2][..])
        .await
        .unwrap();
    assert_corrupt(dir.resources(&alice).await, "unknown version");
    assert_eq!(
        dir.resources(&al).await.unwrap().len(),
        1,
        "damage spread to a prefix neighbour"
    );
    // The CAS compares bytes only and fails safe on a foreign value.
    assert!(!dir.unbind(&alice, "bad", 9).await.unwrap());
    dir.bind(&alice, "bad", &loc("e", 3)).await.unwrap();
    assert_eq!(
        dir.resources(&alice).await.unwrap().len(),
        2,
        "bind repairs the entry"
    );

    let _: () = raw
        .set(format!("{p}:{{bob@x}}:loc"), "a string")
        .await
        .unwrap();
    assert_corrupt(dir.resources(&bob).await, "WRONGTYPE");
    assert_corrupt(
        dir.update(&bob, "r", &loc("e", 1)).await,
        "WRONGTYPE in a script",
    );

    dir.heartbeat(&node("good"), LONG).await.unwrap();
    let nodes = format!("{p}:{{cluster}}:nodes");
    let _: () = raw.hset(&nodes, "good", &[1u8, 7][..]).await.unwrap();
    assert_corrupt(dir.members().await, "bad NodeInfo");
    dir.heartbeat(&node("good"), LONG).await.unwrap();
    assert!(
        dir.members().await.unwrap().is_live("good"),
        "heartbeat repairs NodeInfo"
    );

    let claims = format!("{p}:{{cluster}}:claims");
    let _: () = raw.hset(&claims, "2", "007 n").await.unwrap();
    assert_corrupt(dir.claims(4).await, "non-canonical epoch");
    assert!(
        !dir.cas_claim(
            2,
            None,
            &Claim {
                node: "n".into(),
                epoch: 8
            }
        )
        .await
        .unwrap()
    );
    let _: () = raw.hset(&claims, "2", "7 n").await.unwrap();
    let _: () = raw.hset(&claims, "x", "7 n").await.unwrap();
    assert_corrupt(dir.claims(4).await, "non-numeric partition");
    let _: () = raw.hdel(&claims, "x").await.unwrap();
    assert_eq!(
        dir.claims(4).await.unwrap()[2],
        Some(Claim {
            node: "n".into(),
            epoch: 7
        })
    );

    let _: () = raw
        .sadd(format!("{p}:{{edge:e}}:users"), "not a jid@")
        .await
        .unwrap();
    assert_corrupt(dir.users_on_edge("e").await, "bad JID in the edge index");
    dir.forget_edge("e").await.unwrap();
    assert!(dir.users_on_edge("e").await.unwrap().is_empty());
}
