//! The Redis directory: membership, partition claims and resource locations shared
//! by every node of a cluster, over a `deadpool-redis` pool.
//!
//! # Key layout
//!
//! `P` is the key prefix (default `aviary`; tests use a random one to share a
//! Redis). The part in braces is the Redis Cluster hash tag: keys with the same tag
//! live in the same slot, so every atomic (Lua) operation touches one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:{cluster}:members` | sorted set | node id, score = lease expiry (ms, Redis time) |
//! | `P:{cluster}:nodes` | hash | node id → `NodeInfo` (binary, versioned: `codec`) |
//! | `P:{cluster}:epoch` | string | membership epoch (counter) |
//! | `P:{cluster}:claims` | hash | partition (decimal) → `"<epoch> <node>"` |
//! | `P:{<bare JID>}:loc` | hash | resource → `Location` (binary, versioned) |
//! | `P:{edge:<edge id>}:users` | set | bare JIDs that bound a resource on the edge |
//!
//! Keys are injective (fixed prefix and suffix around the JID or id), so users and
//! edges never share a key even if a JID or id contains braces; that would only
//! change the slot. The membership and claim keys share one slot: they are small.
//!
//! # Scripts
//!
//! Every compare-and-set and lease operation is one Lua script, atomic on the
//! server, sent as EVALSHA; the `redis` crate's `Script` reloads it on NOSCRIPT
//! (after a restart or `SCRIPT FLUSH`). Lease times come from `redis.call('TIME')`
//! inside the scripts, never from the client's clock.
//!
//! - `heartbeat` (`heartbeat.lua`): ZADD expiry = now + ttl, HSET the NodeInfo;
//!   bumps the epoch if the node was absent, expired or its NodeInfo changed.
//! - `leave`: ZREM + HDEL; bumps the epoch if the node was recorded.
//! - `members`: removes expired members and bumps once if any, then returns the
//!   epoch and the live members with their NodeInfo, all at one instant.
//! - `cas_claim`: the current claim must equal the expected one (absent = unclaimed)
//!   and the new epoch must be greater; then HSET.
//! - `loc_cas` (update / unbind): the stored location must start with the caller's
//!   identity bytes (version + connection id, plus the edge for an update).
//!
//! A missing epoch starts at the current time in ms rather than 1 (`prelude.lua`),
//! so the membership epoch keeps growing even if Redis loses its data.
//!
//! # The edge index is advisory
//!
//! `bind` writes two slots (the user's hash and the edge's set), which no single
//! command can do atomically in a cluster. It sends SADD to the index first, then
//! HSET the location, so a crash in between leaves an index entry without a
//! location — never the reverse: the index is a superset of the users with a
//! location on the edge. `unbind` leaves the index alone (removing the user could
//! race a concurrent `bind` on the same edge); the index is dropped as a whole by
//! `forget_edge` after the sweep of a dead edge, so it grows with the distinct
//! users an edge has served during its life.
//!
//! # Timeouts and failures
//!
//! Every call — taking a pooled connection (which PINGs it), the command(s), a
//! script reload — runs under one explicit timeout (`op_timeout`, default
//! [`DEFAULT_OP_TIMEOUT`]). There is no retry inside: failures and timeouts are
//! [`DirectoryError::Unavailable`] naming the operation, and the caller decides.
//! A timed-out write may still have been applied. The pool drops connections that
//! fail their PING and opens new ones, so after Redis restarts calls succeed again
//! without restarting the process. WRONGTYPE replies and undecodable values are
//! [`DirectoryError::Corrupt`].
//!
//! This client speaks to one Redis server (or a primary behind a proxy); the layout
//! is ready for a Redis Cluster client.

mod codec;

use crate::{
    Claim, DirectoryError, Location, Locations, MemberView, Membership, NodeInfo, Partitions,
};
use ::redis::{ErrorKind, RedisError, RedisResult, Script};
use async_trait::async_trait;
use codec::corrupt;
use deadpool_redis::{Connection, Pool, Runtime};
use jid::BareJid;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The key prefix of a production cluster.
pub const DEFAULT_PREFIX: &str = "aviary";

/// The default bound on each directory call (pool checkout, command, reply).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Connections per directory. Each is multiplexed, but deadpool hands one to one
/// caller at a time, so this bounds the calls in flight.
const POOL_SIZE: usize = 16;

/// Longest lease accepted, in ms (~35 years): keeps `now + ttl` exact in Lua's
/// doubles.
const MAX_TTL_MS: u64 = 1 << 40;

struct Scripts {
    heartbeat: Script,
    leave: Script,
    members: Script,
    cas_claim: Script,
    loc_cas: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    const PRELUDE: &str = include_str!("redis/prelude.lua");
    let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
    Scripts {
        heartbeat: with_prelude(include_str!("redis/heartbeat.lua")),
        leave: with_prelude(include_str!("redis/leave.lua")),
        members: with_prelude(include_str!("redis/members.lua")),
        cas_claim: Script::new(include_str!("redis/cas_claim.lua")),
        loc_cas: Script::new(include_str!("redis/loc_cas.lua")),
    }
});

struct Keys {
    prefix: String,
    members: String,
    nodes: String,
    epoch: String,
    claims: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let cluster = |name: &str| format!("{prefix}:{{cluster}}:{name}");
        Keys {
            prefix: prefix.to_owned(),
            members: cluster("members"),
            nodes: cluster("nodes"),
            epoch: cluster("epoch"),
            claims: cluster("claims"),
        }
    }

    fn loc(&self, user: &BareJid) -> String {
        format!("{}:{{{user}}}:loc", self.prefix)
    }

    fn edge(&self, edge: &str) -> String {
        format!("{}:{{edge:{edge}}}:users", self.prefix)
    }
}

/// All three directory traits over Redis. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct RedisDirectory {
    pool: Pool,
    keys: Arc<Keys>,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDirectory")
            .field("prefix", &self.keys.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisDirectory {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`) and
    /// checks that it answers (PING). `prefix` starts every key and must not contain
    /// braces (they would change the hash tags); `op_timeout` bounds every call.
    pub async fn connect(
        url: &str,
        prefix: &str,
        op_timeout: Duration,
    ) -> Result<Self, DirectoryError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(DirectoryError::Unavailable(format!(
                "invalid redis key prefix {prefix:?}: must be non-empty and without braces"
            )));
        }
        let pool = deadpool_redis::Config::from_url(url)
            .builder()
            .map_err(|e| DirectoryError::Unavailable(format!("invalid redis URL: {e}")))?
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| DirectoryError::Unavailable(format!("redis pool: {e}")))?;
        let dir = RedisDirectory {
            pool,
            keys: Arc::new(Keys::new(prefix)),
            op_timeout,
        };
        dir.run("ping", |mut c| async move {
            ::redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await?;
        Ok(dir)
    }

    /// The key prefix this directory uses.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Runs `f` on a pooled connection, the whole of it under `op_timeout`.
    async fn run<T, Fut>(
        &self,
        op: &'static str,
        f: impl FnOnce(Connection) -> Fut,
    ) -> Result<T, DirectoryError>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        let call = async {
            let conn = self.pool.get().await.map_err(|e| {
                DirectoryError::Unavailable(format!("redis {op}: no connection: {e}"))
            })?;
            f(conn).await.map_err(|e| map_err(op, e))
        };
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.op_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Unavailable(format!(
                "redis {op}: no answer within {} ms",
                self.op_timeout.as_millis()
            ))),
        };
        crate::metrics::redis_op(op, started.elapsed(), result.is_ok());
        result
    }
}

fn map_err(op: &str, e: RedisError) -> DirectoryError {
    if e.code() == Some("WRONGTYPE") {
        DirectoryError::Corrupt(format!("redis {op}: a key holds the wrong type: {e}"))
    } else if e.kind() == ErrorKind::TypeError {
        DirectoryError::Corrupt(format!("redis {op}: unexpected reply: {e}"))
    } else {
        DirectoryError::Unavailable(format!("redis {op}: {e}"))
    }
}

fn utf8(what: &str, b: Vec<u8>) -> Result<String, DirectoryError> {
    String::from_utf8(b).map_err(|_| corrupt(what, "not UTF-8"))
}

#[async_trait]
impl Membership for RedisDirectory {
    async fn heartbeat(&self, me: &NodeInfo, ttl: Duration) -> Result<bool, DirectoryError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |t| t.min(MAX_TTL_MS));
        let info = codec::encode_node(me);
        let k = &self.keys;
        self.run("heartbeat", |mut c| async move {
            SCRIPTS
                .heartbeat
                .key(&k.members)
                .key(&k.nodes)
                .key(&k.epoch)
                .arg(&me.id)
                .arg(ttl_ms)
                .arg(info)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|joined| joined == 1)
    }

    async fn leave(&self, id: &str) -> Result<(), DirectoryError> {
        let k = &self.keys;
        self.run("leave", |mut c| async move {
            SCRIPTS
                .leave
                .key(&k.members)
                .key(&k.nodes)
                .key(&k.epoch)
                .arg(id)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await?;
        Ok(())
    }

    async fn members(&self) -> Result<MemberView, DirectoryError> {
        let k = &self.keys;
        let reply = self
            .run("members", |mut c| async move {
                SCRIPTS
                    .members
                    .key(&k.members)
                    .key(&k.nodes)
                    .key(&k.epoch)
                    .invoke_async::<Vec<Vec<u8>>>(&mut c)
                    .await
            })
            .await?;
        let mut items = reply.into_iter();
        let epoch = items
            .next()
            .and_then(|e| std::str::from_utf8(&e).ok()?.parse().ok())
            .ok_or_else(|| corrupt(&k.epoch, "not a counter"))?;
        let mut nodes = Vec::new();
        while let (Some(id), Some(info)) = (items.next(), items.next()) {
            let id = utf8("node id", id)?;
            let node = codec::decode_node(id, &info).map_err(|p| {
                corrupt(
                    format_args!("{} node {:?}", k.nodes, String::from_utf8_lossy(&info)),
                    p,
                )
            })?;
            nodes.push(node);
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(MemberView { epoch, nodes })
    }
}

#[async_trait]
impl Partitions for RedisDirectory {
    async fn claims(&self, count: u32) -> Result<Vec<Option<Claim>>, DirectoryError> {
        let key = &self.keys.claims;
        let all = self
            .run("claims", |mut c| async move {
                ::redis::cmd("HGETALL")
                    .arg(key)
                    .query_async::<HashMap<Vec<u8>, Vec<u8>>>(&mut c)
                    .await
            })
            .await?;
        let mut out = vec![None; count as usize];
        for (field, value) in all {
            let field = utf8("claim partition", field)?;
            let p: u32 = field
                .parse()
                .map_err(|_| corrupt(format_args!("{key} field {field:?}"), "not a partition"))?;
            if let Some(slot) = out.get_mut(p as usize) {
                let claim = codec::decode_claim(&value)
                    .map_err(|e| corrupt(format_args!("{key} partition {p}"), e))?;
                *slot = Some(claim);
            }
        }
        Ok(out)
    }

    async fn cas_claim(
        &self,
        partition: u32,
        expected: Option<&Claim>,
        new: &Claim,
    ) -> Result<bool, DirectoryError> {
        let key = &self.keys.claims;
        let expected = expected.map(codec::encode_claim).unwrap_or_default();
        let value = codec::encode_claim(new);
        let set = self
            .run("cas_claim", |mut c| async move {
                SCRIPTS
                    .cas_claim
                    .key(key)
                    .arg(partition)
                    .arg(expected)
                    .arg(value)
                    .arg(new.epoch)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        match set {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(corrupt(
                format_args!("{key} partition {partition}"),
                "unreadable claim",
            )),
        }
    }
}

#[async_trait]
impl Locations for RedisDirectory {
    async fn resources(&self, user: &BareJid) -> Result<Vec<(String, Location)>, DirectoryError> {
        let key = &self.keys.loc(user);
        let all = self
            .run("resources", |mut c| async move {
                ::redis::cmd("HGETALL")
                    .arg(key)
                    .query_async::<HashMap<Vec<u8>, Vec<u8>>>(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (resource, value) in all {
            let resource = utf8("resource", resource)?;
            let loc = codec::decode_location(&value)
                .map_err(|p| corrupt(format_args!("{key} resource {resource:?}"), p))?;
            out.push((resource, loc));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn bind(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &Location,
    ) -> Result<(), DirectoryError> {
        let (key, index) = (&self.keys.loc(user), &self.keys.edge(&loc.edge));
        let (value, _) = codec::encode_location(loc);
        self.run("bind", |mut c| async move {
            // Index first: see "The edge index is advisory" above.
            ::redis::cmd("SADD")
                .arg(index)
                .arg(user.as_str())
                .query_async::<()>(&mut c)
                .await?;
            ::redis::cmd("HSET")
                .arg(key)
                .arg(resource)
                .arg(value)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn update(
        &self,
        user: &BareJid,
        resource: &str,
        loc: &Location,
    ) -> Result<bool, DirectoryError> {
        let (value, identity) = codec::encode_location(loc);
        let prefix = value[..identity].to_vec();
        self.loc_cas("update", user, resource, &prefix, &value)
            .await
    }

    async fn unbind(
        &self,
        user: &BareJid,
        resource: &str,
        conn: u64,
    ) -> Result<bool, DirectoryError> {
        self.loc_cas("unbind", user, resource, &codec::conn_prefix(conn), &[])
            .await
    }

    async fn users_on_edge(&self, edge: &str) -> Result<Vec<BareJid>, DirectoryError> {
        let key = &self.keys.edge(edge);
        let members = self
            .run("users_on_edge", |mut c| async move {
                ::redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async::<Vec<Vec<u8>>>(&mut c)
                    .await
            })
            .await?;
        let mut users = members
            .into_iter()
            .map(|m| {
                let text = utf8("edge index member", m)?;
                BareJid::new(&text)
                    .map_err(|e| corrupt(format_args!("{key} member {text:?}"), &e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        users.sort();
        Ok(users)
    }

    async fn forget_edge(&self, edge: &str) -> Result<(), DirectoryError> {
        let key = self.keys.edge(edge);
        self.run("forget_edge", |mut c| async move {
            ::redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

impl RedisDirectory {
    /// Writes `value` (or deletes, if empty) only if the stored location of
    /// `resource` starts with `identity`.
    async fn loc_cas(
        &self,
        op: &'static str,
        user: &BareJid,
        resource: &str,
        identity: &[u8],
        value: &[u8],
    ) -> Result<bool, DirectoryError> {
        let key = &self.keys.loc(user);
        let n = self
            .run(op, |mut c| async move {
                SCRIPTS
                    .loc_cas
                    .key(key)
                    .arg(resource)
                    .arg(identity)
                    .arg(value)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }
}
