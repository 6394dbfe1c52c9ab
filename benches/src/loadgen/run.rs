//! The per-user task: log in, then follow the run's phases (hold, send at a paced
//! rate, log out) while handling whatever the server delivers. One task per
//! connection; the shared [`Ctx`] carries the configuration, the phase and the
//! measurements.

use crate::loadgen::args::Args;
use crate::loadgen::client::{self, Conn, Fail, LoginOpts, OUT_BACKLOG};
use crate::loadgen::stats::{Delivery, Stats, Tracker, parse_tag, unix_ns, write_tag};
use aviary_xmpp::{Element, Event, ns, writer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// What every connection is doing now.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Stay connected, answer the server, send nothing.
    Hold,
    /// Send stanzas at a paced rate.
    Send(SendPlan),
    /// Log out.
    Logout,
}

#[derive(Clone, Copy, Debug)]
pub struct SendPlan {
    pub kind: SendKind,
    /// Time between two sends of one connection (aggregate rate / senders).
    pub period: Duration,
    pub start: Instant,
    pub end: Instant,
    pub targets: Targets,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// A chat message to a random target.
    Chat,
    /// A presence update (broadcast by the server to the contacts).
    Presence,
    /// A subscription request to the next contact still missing from the roster.
    Subscribe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Users that are online now.
    Online,
    /// Users with odd indices (offline-drain's receivers).
    Odd,
}

/// The presence-fanout contact graph: a ring where each user's contacts are the
/// `half` users on either side, so every roster is symmetric and the same size.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    pub n: u32,
    pub half: u32,
}

impl Ring {
    pub fn contacts(self, u: u32) -> impl Iterator<Item = u32> {
        let Ring { n, half } = self;
        (1..=half).flat_map(move |d| [(u + d) % n, (u + n - d) % n])
    }

    /// The bit of contact `c` in user `u`'s roster mask.
    pub fn bit(self, u: u32, c: u32) -> Option<u32> {
        let Ring { n, half } = self;
        let d = (c + n - u) % n;
        if (1..=half).contains(&d) {
            Some(d - 1)
        } else if d != 0 && d >= n - half {
            Some(half + (n - d) - 1)
        } else {
            None
        }
    }

    pub fn full_mask(self) -> u128 {
        let bits = 2 * self.half;
        if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        }
    }
}

/// State shared by the driver and every connection task.
pub struct Ctx {
    pub args: Args,
    pub servers: Vec<SocketAddr>,
    pub sources: Vec<Ipv4Addr>,
    pub tls: Option<TlsConnector>,
    pub stats: Stats,
    pub tracker: Tracker,
    pub phase: watch::Sender<Phase>,
    pub interrupted: watch::Sender<bool>,
    pub online: Vec<AtomicBool>,
    pub online_count: AtomicU32,
    /// Login attempts finished (successfully or not).
    pub logins_done: AtomicU32,
    pub login_gate: Semaphore,
    pub ring: Option<Ring>,
    /// presence-fanout setup: online users whose roster still lacks contacts.
    pub setup_incomplete: AtomicU32,
    pub connections: AtomicU64,
}

impl Ctx {
    /// Source address for connection number `k` (rotating), if any are configured.
    pub fn source(&self, k: u64) -> Option<Ipv4Addr> {
        if self.sources.is_empty() {
            return None;
        }
        self.sources
            .get((k % self.sources.len() as u64) as usize)
            .copied()
    }

    pub fn next_source(&self) -> Option<Ipv4Addr> {
        self.source(self.connections.fetch_add(1, Relaxed))
    }

    pub fn is_interrupted(&self) -> bool {
        *self.interrupted.borrow()
    }

    fn jid(&self, user: u32) -> String {
        format!("{}{user}@{}", self.args.user_prefix, self.args.domain)
    }

    /// The user index of a JID of this run (`PREFIX<n>@DOMAIN[/res]`).
    fn user_of(&self, jid: &str) -> Option<u32> {
        let bare = jid.split('/').next()?;
        let (local, domain) = bare.split_once('@')?;
        if domain != self.args.domain {
            return None;
        }
        let n: u32 = local.strip_prefix(&self.args.user_prefix)?.parse().ok()?;
        (n < self.args.users).then_some(n)
    }
}

/// A connection's own state.
struct Local {
    user: u32,
    seq: u64,
    rng: SmallRng,
    /// presence-fanout: contacts with subscription `both`, as [`Ring::bit`] bits.
    both: u128,
    incomplete: bool,
    missing: Vec<u32>,
    last_round: Instant,
    presence_sent_ns: u64,
}

impl Local {
    fn new(ctx: &Ctx, user: u32, roster: Option<&Element>) -> Local {
        let mut local = Local {
            user,
            seq: 0,
            rng: SmallRng::seed_from_u64(u64::from(user) ^ unix_ns()),
            both: 0,
            incomplete: false,
            missing: Vec::new(),
            last_round: Instant::now(),
            presence_sent_ns: unix_ns(),
        };
        if let (Some(ring), Some(roster)) = (ctx.ring, roster) {
            if let Some(query) = roster.get_child("query", ns::ROSTER) {
                for item in query.children() {
                    local.roster_item(ctx, item);
                }
            }
            if local.both != ring.full_mask() {
                local.incomplete = true;
                ctx.setup_incomplete.fetch_add(1, Relaxed);
                local.refill_missing(ring);
            }
        }
        local
    }

    fn roster_item(&mut self, ctx: &Ctx, item: &Element) {
        let (Some(ring), Some(jid)) = (ctx.ring, item.attr("jid")) else {
            return;
        };
        let Some(bit) = ctx.user_of(jid).and_then(|c| ring.bit(self.user, c)) else {
            return;
        };
        if item.attr("subscription") == Some("both") {
            self.both |= 1 << bit;
        } else {
            self.both &= !(1 << bit);
        }
        if self.incomplete && self.both == ring.full_mask() {
            self.incomplete = false;
            ctx.setup_incomplete.fetch_sub(1, Relaxed);
        }
    }

    fn refill_missing(&mut self, ring: Ring) {
        let user = self.user;
        let both = self.both;
        self.missing = ring
            .contacts(user)
            .filter(|&c| ring.bit(user, c).is_some_and(|b| both & (1 << b) == 0))
            .collect();
        self.last_round = Instant::now();
    }
}

/// Logs user `user` in and runs it until the logout phase.
pub async fn user_task(ctx: Arc<Ctx>, user: u32, opts: LoginOpts) {
    let Ok(permit) = ctx.login_gate.acquire().await else {
        return;
    };
    let login = client::login(&ctx, user, ctx.next_source(), opts).await;
    drop(permit);
    let (mut conn, times, roster, stray) = match login {
        Ok(v) => v,
        Err(f) => {
            ctx.stats.logins_failed.fetch_add(1, Relaxed);
            ctx.stats.error(&f.kind, &f.detail);
            ctx.logins_done.fetch_add(1, Relaxed);
            return;
        }
    };
    record_login(&ctx.stats, times);
    let mut local = Local::new(&ctx, user, roster.as_ref());
    if let Some(flag) = ctx.online.get(user as usize) {
        flag.store(true, Relaxed);
    }
    ctx.online_count.fetch_add(1, Relaxed);
    ctx.logins_done.fetch_add(1, Relaxed);

    let mut result = Ok(());
    for el in stray {
        result = handle(&ctx, &mut local, &mut conn.out, el);
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = traffic(&ctx, &mut conn, &mut local).await;
    }
    if let Some(flag) = ctx.online.get(user as usize) {
        flag.store(false, Relaxed);
    }
    ctx.online_count.fetch_sub(1, Relaxed);
    if local.incomplete {
        ctx.setup_incomplete.fetch_sub(1, Relaxed);
        local.incomplete = false;
    }
    match result {
        Ok(()) => {
            let deadline = Instant::now() + ctx.args.timeout;
            let bye = conn.logout(b"<presence type='unavailable'/>", deadline, |el| {
                let mut sink = Vec::new();
                let _ = handle(&ctx, &mut local, &mut sink, el);
            });
            match bye.await {
                Ok(()) => {
                    ctx.stats.logouts_ok.fetch_add(1, Relaxed);
                }
                Err(f) => ctx.stats.error(&format!("logout:{}", f.kind), &f.detail),
            }
        }
        Err(f) => {
            ctx.stats.dropped.fetch_add(1, Relaxed);
            ctx.stats.error(&f.kind, &f.detail);
            conn.abort();
        }
    }
}

pub fn record_login(stats: &Stats, times: client::LoginTimes) {
    stats.logins_ok.fetch_add(1, Relaxed);
    stats.auth.record_us(times.auth_us);
    stats.login.record_us(times.total_us);
    if let Some(t) = times.tls_us {
        stats.tls.record_us(t);
    }
}

/// Follows the phases until logout; `Err` when the connection broke.
async fn traffic(ctx: &Ctx, conn: &mut Conn, local: &mut Local) -> Result<(), Fail> {
    let mut phase_rx = ctx.phase.subscribe();
    let mut plan: Option<SendPlan> = None;
    let mut next = Instant::now();
    let first = *phase_rx.borrow_and_update();
    if !apply(first, &mut plan, &mut next, local) {
        return Ok(());
    }
    loop {
        drain_events(ctx, conn, local)?;
        tokio::select! {
            step = conn.io_step() => {
                step?;
            }
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let phase = *phase_rx.borrow_and_update();
                if !apply(phase, &mut plan, &mut next, local) {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(next), if plan.is_some() => {
                if let Some(p) = plan {
                    let now = Instant::now();
                    // Open loop: sends missed while we were late go out now, in a
                    // bounded burst.
                    let mut burst = 0;
                    while next <= now && next < p.end && burst < 64 {
                        send_one(ctx, local, &mut conn.out, &p);
                        next += p.period;
                        burst += 1;
                    }
                    if next >= p.end {
                        plan = None;
                    }
                }
            }
        }
    }
}

/// Adopts a new phase; `false` means log out.
fn apply(phase: Phase, plan: &mut Option<SendPlan>, next: &mut Instant, local: &mut Local) -> bool {
    match phase {
        Phase::Logout => return false,
        Phase::Hold => *plan = None,
        Phase::Send(p) => {
            // A random offset spreads the connections' sends evenly over a period.
            let offset = p.period.mul_f64(local.rng.random::<f64>());
            let mut at = p.start + offset;
            let now = Instant::now();
            if at < now {
                let behind = (now - at).as_nanos() / p.period.as_nanos().max(1);
                at += p.period * (behind as u32).saturating_add(1);
            }
            *next = at;
            *plan = Some(p);
        }
    }
    true
}

fn drain_events(ctx: &Ctx, conn: &mut Conn, local: &mut Local) -> Result<(), Fail> {
    loop {
        match conn.framer.next_event() {
            Ok(Some(Event::Element(el))) => handle(ctx, local, &mut conn.out, el)?,
            Ok(Some(Event::StreamClose)) => {
                return Err(Fail::new("closed-by-server", "stream closed"));
            }
            Ok(Some(Event::StreamOpen(_))) => {
                return Err(Fail::new("protocol", "unexpected stream header"));
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(Fail::new("bad-xml", e.to_string())),
        }
    }
}

/// Appends one stanza of `plan`'s kind to `out`.
fn send_one(ctx: &Ctx, local: &mut Local, out: &mut Vec<u8>, plan: &SendPlan) {
    let stats = &ctx.stats;
    if out.len() > OUT_BACKLOG {
        stats.msgs_skipped.fetch_add(1, Relaxed);
        return;
    }
    let args = &ctx.args;
    match plan.kind {
        SendKind::Chat => {
            let Some(to) = pick_target(ctx, local, plan.targets) else {
                stats.msgs_no_target.fetch_add(1, Relaxed);
                return;
            };
            let seq = local.seq;
            local.seq += 1;
            let _ = write!(
                out,
                "<message to='{}{to}@{}' type='chat' id='m{seq}'><body>",
                args.user_prefix, args.domain
            );
            write_tag(out, local.user, seq, unix_ns());
            if args.body_pad > 0 {
                out.push(b' ');
                out.resize(out.len() + args.body_pad, b'x');
            }
            out.extend_from_slice(b"</body></message>");
            stats.msgs_sent.fetch_add(1, Relaxed);
            if let Some(e) = ctx.tracker.expected_by.get(to as usize) {
                e.fetch_add(1, Relaxed);
            }
        }
        SendKind::Presence => {
            let seq = local.seq;
            local.seq += 1;
            let show = if seq.is_multiple_of(2) {
                "away"
            } else {
                "chat"
            };
            let _ = write!(out, "<presence><show>{show}</show><status>");
            write_tag(out, local.user, seq, unix_ns());
            out.extend_from_slice(b"</status></presence>");
            stats.presence_updates_sent.fetch_add(1, Relaxed);
            if let Some(ring) = ctx.ring {
                let online = ring
                    .contacts(local.user)
                    .filter(|&c| ctx.online.get(c as usize).is_some_and(|f| f.load(Relaxed)))
                    .count();
                stats.presence_expected.fetch_add(online as u64, Relaxed);
            }
        }
        SendKind::Subscribe => {
            let Some(ring) = ctx.ring else { return };
            if local.missing.is_empty()
                && local.incomplete
                && local.last_round.elapsed() > Duration::from_secs(10)
            {
                // Some requests or answers got lost (or predate this run): ask again.
                local.refill_missing(ring);
            }
            if let Some(c) = local.missing.pop() {
                let _ = write!(out, "<presence to='{}' type='subscribe'/>", ctx.jid(c));
                stats.subscribes_sent.fetch_add(1, Relaxed);
            }
        }
    }
}

fn pick_target(ctx: &Ctx, local: &mut Local, targets: Targets) -> Option<u32> {
    let n = ctx.args.users;
    for _ in 0..32 {
        let t = match targets {
            Targets::Online => local.rng.random_range(0..n),
            Targets::Odd => 2 * local.rng.random_range(0..n / 2) + 1,
        };
        if t == local.user {
            continue;
        }
        let k = ctx.servers.len() as u32;
        if ctx.args.cross_server && k > 1 && t % k == local.user % k {
            continue;
        }
        let online = ctx.online.get(t as usize).is_some_and(|f| f.load(Relaxed));
        if targets == Targets::Odd || online {
            return Some(t);
        }
    }
    None
}

/// Handles one element from the server; replies go to `out`.
fn handle(ctx: &Ctx, local: &mut Local, out: &mut Vec<u8>, el: Element) -> Result<(), Fail> {
    let stats = &ctx.stats;
    match el.name() {
        "message" => {
            if el.attr("type") == Some("error") {
                stats.msgs_bounced.fetch_add(1, Relaxed);
                return Ok(());
            }
            let Some(body) = el.get_child("body", ns::CLIENT) else {
                return Ok(());
            };
            let now = unix_ns();
            if let Delivery::New { latency_ns, .. } =
                ctx.tracker.on_message(&body.text(), local.user, now)
            {
                stats.delivery.record_ns(latency_ns);
                let i = local.user as usize;
                let got = ctx.tracker.received_by.get(i).map(|r| r.load(Relaxed));
                let want = ctx.tracker.expected_by.get(i).map(|e| e.load(Relaxed));
                if got.is_some() && got == want {
                    stats
                        .drain
                        .record_ns(now.saturating_sub(local.presence_sent_ns));
                }
            }
        }
        "presence" => {
            stats.presence_rx.fetch_add(1, Relaxed);
            match el.attr("type") {
                Some("subscribe") => {
                    if let Some(from) = el.attr("from") {
                        let bare = from.split('/').next().unwrap_or(from);
                        out.extend_from_slice(b"<presence to='");
                        writer::escape_attr(bare, out);
                        out.extend_from_slice(b"' type='subscribed'/>");
                    }
                }
                None => {
                    let tag = el
                        .child_text("status", ns::CLIENT)
                        .and_then(|s| parse_tag(&s));
                    if let Some((sender, _, ts)) = tag {
                        if sender == local.user {
                            stats.presence_self_rx.fetch_add(1, Relaxed);
                        } else {
                            stats.presence_fanout_rx.fetch_add(1, Relaxed);
                            stats
                                .presence_latency
                                .record_ns(unix_ns().saturating_sub(ts));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        "iq" => {
            let kind = el.attr("type");
            if !matches!(kind, Some("get" | "set")) {
                return Ok(());
            }
            let roster_push = kind == Some("set") && el.has_child("query", ns::ROSTER);
            if roster_push && let Some(q) = el.get_child("query", ns::ROSTER) {
                for item in q.children() {
                    local.roster_item(ctx, item);
                }
            }
            let ok = roster_push || (kind == Some("get") && el.has_child("ping", ns::PING));
            out.extend_from_slice(b"<iq type='");
            out.extend_from_slice(if ok { b"result" } else { b"error" });
            out.extend_from_slice(b"' id='");
            writer::escape_attr(el.attr("id").unwrap_or_default(), out);
            out.push(b'\'');
            if let Some(from) = el.attr("from") {
                out.extend_from_slice(b" to='");
                writer::escape_attr(from, out);
                out.push(b'\'');
            }
            if ok {
                out.extend_from_slice(b"/>");
            } else {
                out.extend_from_slice(
                    b"><error type='cancel'><service-unavailable \
                      xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                );
            }
        }
        "error" if el.ns() == ns::STREAM => return Err(client::stream_error(&el)),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_bits_cover_each_contact_once() {
        let ring = Ring { n: 10, half: 3 };
        let contacts: Vec<u32> = ring.contacts(1).collect();
        assert_eq!(contacts, vec![2, 0, 3, 9, 4, 8]);
        let mut mask = 0u128;
        for c in contacts {
            let b = ring.bit(1, c).unwrap_or(99);
            assert!(b < 6);
            assert_eq!(mask & (1 << b), 0);
            mask |= 1 << b;
        }
        assert_eq!(mask, ring.full_mask());
        assert_eq!(ring.bit(1, 1), None);
        assert_eq!(ring.bit(1, 5), None);
        assert_eq!(ring.bit(1, 6), None);
    }
}
