//! The scenario drivers: each starts the users it needs, moves every connection
//! through the phases, samples the server at the checkpoints, and fills its part
//! of the report.

use crate::loadgen::args::Scenario;
use crate::loadgen::client::{self, LoginOpts};
use crate::loadgen::procfs;
use crate::loadgen::report::{DrainReport, LoginReport, MessageReport, PresenceReport, Report};
use crate::loadgen::run::{self, Ctx, Phase, SendKind, SendPlan, Targets};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How often waits re-check their condition.
const POLL: Duration = Duration::from_millis(20);

/// Runs the chosen scenario; fills `report` in place.
pub async fn drive(ctx: &Arc<Ctx>, report: &mut Report) {
    let srv = &mut report.server;
    srv.pids = ctx.args.pid.clone();
    match ctx.args.scenario {
        Scenario::Idle => idle(ctx, report).await,
        Scenario::Chat => chat(ctx, report).await,
        Scenario::LoginStorm => login_storm(ctx, report).await,
        Scenario::PresenceFanout => presence_fanout(ctx, report).await,
        Scenario::OfflineDrain => offline_drain(ctx, report).await,
    }
}

fn checkpoint(ctx: &Ctx, report: &mut Report, name: &str) {
    let s = procfs::sample(&ctx.args.pid);
    report.server.samples.push((name.to_owned(), s));
}

/// Sleeps `d` unless interrupted first; `false` when interrupted.
async fn pause(ctx: &Ctx, d: Duration) -> bool {
    let mut rx = ctx.interrupted.subscribe();
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = rx.wait_for(|v| *v) => false,
    }
}

/// Waits until `done()` or `deadline` (if any); `false` when interrupted.
async fn wait_until(ctx: &Ctx, deadline: Option<Instant>, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() || deadline.is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        if !pause(ctx, POLL).await {
            return false;
        }
    }
}

/// Starts login tasks for `users`, paced by `--login-rate`; waits for every attempt
/// to finish. Returns the login window (first start to last finish) in seconds.
async fn login_users(
    ctx: &Arc<Ctx>,
    set: &mut JoinSet<()>,
    users: impl Iterator<Item = u32>,
    opts: LoginOpts,
    report: &mut Report,
) -> Option<f64> {
    let start = Instant::now();
    let target_before = ctx.logins_done.load(Relaxed);
    let mut count = 0u32;
    let pace =
        (ctx.args.login_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / ctx.args.login_rate));
    let mut next = Instant::now();
    for u in users {
        if let Some(p) = pace {
            let mut rx = ctx.interrupted.subscribe();
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = rx.wait_for(|v| *v) => break,
            }
            next += p;
        }
        set.spawn(run::user_task(ctx.clone(), u, opts));
        count += 1;
    }
    report.logins.attempted += u64::from(count);
    let target = target_before + count;
    if !wait_until(ctx, None, || ctx.logins_done.load(Relaxed) >= target).await {
        return None;
    }
    Some(start.elapsed().as_secs_f64())
}

/// Logs every connection out and waits (bounded) for the tasks to end.
async fn logout_all(ctx: &Ctx, set: &mut JoinSet<()>) {
    ctx.phase.send_replace(Phase::Logout);
    let limit = ctx.args.timeout + Duration::from_secs(5);
    let joined =
        tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
    if joined.is_err() {
        ctx.stats.error(
            "logout:unfinished",
            "connections still open at the logout limit",
        );
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    ctx.phase.send_replace(Phase::Hold);
}

fn full_login() -> LoginOpts {
    LoginOpts {
        roster: true,
        presence: true,
    }
}

fn login_opts(ctx: &Ctx) -> LoginOpts {
    LoginOpts {
        roster: !ctx.args.no_roster,
        presence: true,
    }
}

fn set_login_rate(ctx: &Ctx, report: &mut Report, window: Option<f64>) {
    let ok = ctx.stats.logins_ok.load(Relaxed);
    if let Some(w) = window {
        report.logins.window_s = w;
        report.logins.per_sec = if w > 0.0 { ok as f64 / w } else { 0.0 };
    }
}

/// Records the server's memory per session after a login checkpoint.
fn memory_per_session(ctx: &Ctx, report: &mut Report, before: &str, after: &str) {
    let online = f64::from(ctx.online_count.load(Relaxed));
    if online > 0.0 {
        report.server.kib_per_idle_session = report
            .server
            .rss_between(before, after)
            .map(|kib| kib / online);
    }
    report.server.cpu_s_login = report.server.cpu_between(before, after);
}

/// A send phase at `rate` over `duration` by every online user; returns the
/// window's length in seconds.
async fn send_phase(ctx: &Ctx, kind: SendKind, targets: Targets, rate: f64) -> Option<f64> {
    let senders = f64::from(ctx.online_count.load(Relaxed).max(1));
    let period = Duration::from_secs_f64(senders / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + ctx.args.duration;
    ctx.phase.send_replace(Phase::Send(SendPlan {
        kind,
        period,
        start,
        end,
        targets,
    }));
    let finished = pause(ctx, end.saturating_duration_since(Instant::now())).await;
    ctx.phase.send_replace(Phase::Hold);
    let window = start
        .elapsed()
        .as_secs_f64()
        .min(ctx.args.duration.as_secs_f64());
    finished.then_some(window)
}

/// Waits up to `--grace` for the messages in flight.
async fn grace(ctx: &Ctx) -> bool {
    let deadline = Instant::now() + ctx.args.grace;
    let s = &ctx.stats;
    let t = &ctx.tracker;
    wait_until(ctx, Some(deadline), || {
        t.delivered.load(Relaxed) + s.msgs_bounced.load(Relaxed) >= s.msgs_sent.load(Relaxed)
    })
    .await
}

fn message_report(ctx: &Ctx, window: f64) -> MessageReport {
    let s = &ctx.stats;
    let t = &ctx.tracker;
    let sent = s.msgs_sent.load(Relaxed);
    let delivered = t.delivered.load(Relaxed);
    let bounced = s.msgs_bounced.load(Relaxed);
    MessageReport {
        sent,
        delivered,
        lost: sent.saturating_sub(delivered + bounced),
        duplicated: t.duplicated.load(Relaxed),
        bounced,
        stale: t.stale.load(Relaxed),
        foreign: t.foreign.load(Relaxed),
        skipped_backlog: s.msgs_skipped.load(Relaxed),
        skipped_no_target: s.msgs_no_target.load(Relaxed),
        send_window_s: window,
        rate_target: ctx.args.rate,
        rate_achieved: if window > 0.0 {
            sent as f64 / window
        } else {
            0.0
        },
        delivery_ms: s.delivery.summary(),
    }
}

async fn idle(ctx: &Arc<Ctx>, report: &mut Report) {
    let mut set = JoinSet::new();
    checkpoint(ctx, report, "before_login");
    let window = login_users(ctx, &mut set, 0..ctx.args.users, login_opts(ctx), report).await;
    set_login_rate(ctx, report, window);
    if window.is_some() && pause(ctx, ctx.args.settle).await {
        checkpoint(ctx, report, "after_login");
        memory_per_session(ctx, report, "before_login", "after_login");
        if pause(ctx, ctx.args.duration).await {
            checkpoint(ctx, report, "after_hold");
        }
    }
    logout_all(ctx, &mut set).await;
}

async fn chat(ctx: &Arc<Ctx>, report: &mut Report) {
    let mut set = JoinSet::new();
    checkpoint(ctx, report, "before_login");
    let window = login_users(ctx, &mut set, 0..ctx.args.users, login_opts(ctx), report).await;
    set_login_rate(ctx, report, window);
    let mut send_window = 0.0;
    if window.is_some() && pause(ctx, ctx.args.settle).await {
        checkpoint(ctx, report, "after_login");
        memory_per_session(ctx, report, "before_login", "after_login");
        if let Some(w) = send_phase(ctx, SendKind::Chat, Targets::Online, ctx.args.rate).await {
            send_window = w;
            grace(ctx).await;
        }
        checkpoint(ctx, report, "after_messages");
        cpu_per_delivery(report, "after_login", ctx.tracker.delivered.load(Relaxed));
    }
    report.messages = Some(message_report(ctx, send_window));
    logout_all(ctx, &mut set).await;
}

/// Server CPU from checkpoint `from` to `after_messages`, per 1,000 deliveries.
fn cpu_per_delivery(report: &mut Report, from: &str, delivered: u64) {
    let srv = &mut report.server;
    srv.cpu_s_send_phase = srv.cpu_between(from, "after_messages");
    if delivered > 0 {
        srv.cpu_s_per_1000_delivered = srv.cpu_s_send_phase.map(|c| c * 1000.0 / delivered as f64);
    }
}

/// Connect, authenticate, bind, close — by `--login-concurrency` workers, each over
/// its own slice of the users, for `--duration`.
async fn login_storm(ctx: &Arc<Ctx>, report: &mut Report) {
    checkpoint(ctx, report, "before_storm");
    let workers = ctx.args.login_concurrency.min(ctx.args.users);
    let start = Instant::now();
    let end = start + ctx.args.duration;
    let mut set = JoinSet::new();
    for w in 0..workers {
        let ctx = ctx.clone();
        set.spawn(async move {
            let mut attempts = 0u64;
            let mut user = w;
            let opts = LoginOpts {
                roster: false,
                presence: false,
            };
            while Instant::now() < end && !ctx.is_interrupted() {
                attempts += 1;
                match client::login(&ctx, user, ctx.next_source(), opts).await {
                    Ok((conn, times, _, _)) => {
                        run::record_login(&ctx.stats, times);
                        let deadline = Instant::now() + ctx.args.timeout;
                        match conn.logout(b"", deadline, |_| {}).await {
                            Ok(()) => {
                                ctx.stats.logouts_ok.fetch_add(1, Relaxed);
                            }
                            Err(f) => ctx.stats.error(&format!("logout:{}", f.kind), &f.detail),
                        }
                    }
                    Err(f) => {
                        ctx.stats.logins_failed.fetch_add(1, Relaxed);
                        ctx.stats.error(&f.kind, &f.detail);
                    }
                }
                user += workers;
                if user >= ctx.args.users {
                    user = w;
                }
            }
            attempts
        });
    }
    let mut attempted = 0;
    while let Some(r) = set.join_next().await {
        attempted += r.unwrap_or(0);
    }
    let window = start.elapsed().as_secs_f64();
    checkpoint(ctx, report, "after_storm");
    report.logins.attempted = attempted;
    set_login_rate(ctx, report, Some(window));
    let ok = ctx.stats.logins_ok.load(Relaxed);
    let srv = &mut report.server;
    srv.cpu_s_login = srv.cpu_between("before_storm", "after_storm");
    if ok > 0 {
        srv.cpu_ms_per_login = srv.cpu_s_login.map(|c| c * 1000.0 / ok as f64);
    }
}

/// Deterministic pseudo-random choice of the users online in presence-fanout.
fn fanout_online(user: u32, fraction: f64) -> bool {
    // splitmix64
    let mut z = u64::from(user).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) < fraction
}

async fn presence_fanout(ctx: &Arc<Ctx>, report: &mut Report) {
    let args = &ctx.args;
    let mut p = PresenceReport {
        contacts_per_user: args.contacts,
        ..PresenceReport::default()
    };
    if !args.skip_setup {
        // Every user online, rosters checked; those incomplete subscribe to their
        // missing contacts, and everyone approves what it is asked.
        let t = Instant::now();
        let mut set = JoinSet::new();
        let w = login_users(ctx, &mut set, 0..args.users, full_login(), report).await;
        let mut complete = false;
        if w.is_some() {
            let incomplete = ctx.setup_incomplete.load(Relaxed);
            if incomplete > 0 {
                eprintln!("loadgen: building rosters for {incomplete} users");
                let requests = f64::from(incomplete) * f64::from(args.contacts);
                let limit = Duration::from_secs_f64(requests / args.setup_rate * 3.0 + 60.0);
                let senders = f64::from(ctx.online_count.load(Relaxed).max(1));
                let start = Instant::now();
                ctx.phase.send_replace(Phase::Send(SendPlan {
                    kind: SendKind::Subscribe,
                    period: Duration::from_secs_f64(senders / args.setup_rate),
                    start,
                    end: start + limit,
                    targets: Targets::Online,
                }));
                let mut last_report = Instant::now();
                wait_until(ctx, Some(start + limit), || {
                    let left = ctx.setup_incomplete.load(Relaxed);
                    if last_report.elapsed() >= Duration::from_secs(5) {
                        eprintln!("loadgen: {left} rosters still incomplete");
                        last_report = Instant::now();
                    }
                    left == 0
                })
                .await;
                ctx.phase.send_replace(Phase::Hold);
            }
            complete = ctx.setup_incomplete.load(Relaxed) == 0;
        }
        p.subscribes_sent = ctx.stats.subscribes_sent.load(Relaxed);
        logout_all(ctx, &mut set).await;
        p.setup_s = Some(t.elapsed().as_secs_f64());
        p.setup_complete = Some(complete);
        if !complete {
            ctx.stats
                .error("setup:incomplete", "some rosters were not complete in time");
        }
        // The setup's own logins are not what this scenario measures.
        reset_login_stats(ctx, report);
        pause(ctx, ctx.args.settle).await;
    }
    if ctx.is_interrupted() {
        report.presence = Some(p);
        return;
    }
    let online: Vec<u32> = (0..args.users)
        .filter(|&u| fanout_online(u, args.online_fraction))
        .collect();
    let mut set = JoinSet::new();
    checkpoint(ctx, report, "before_login");
    let window = login_users(ctx, &mut set, online.into_iter(), login_opts(ctx), report).await;
    set_login_rate(ctx, report, window);
    if window.is_some() && pause(ctx, ctx.args.settle).await {
        p.received_at_login = ctx.stats.presence_rx.load(Relaxed);
        checkpoint(ctx, report, "after_login");
        memory_per_session(ctx, report, "before_login", "after_login");
        if send_phase(ctx, SendKind::Presence, Targets::Online, args.rate)
            .await
            .is_some()
        {
            let s = &ctx.stats;
            let deadline = Instant::now() + args.grace;
            wait_until(ctx, Some(deadline), || {
                s.presence_fanout_rx.load(Relaxed) >= s.presence_expected.load(Relaxed)
            })
            .await;
        }
        checkpoint(ctx, report, "after_messages");
        cpu_per_delivery(
            report,
            "after_login",
            ctx.stats.presence_fanout_rx.load(Relaxed),
        );
    }
    let s = &ctx.stats;
    p.users_online = u64::from(ctx.online_count.load(Relaxed));
    p.updates_sent = s.presence_updates_sent.load(Relaxed);
    p.expected_deliveries = s.presence_expected.load(Relaxed);
    p.delivered = s.presence_fanout_rx.load(Relaxed);
    p.missing = p.expected_deliveries.saturating_sub(p.delivered);
    p.self_reflections = s.presence_self_rx.load(Relaxed);
    p.received_total = s.presence_rx.load(Relaxed);
    p.latency_ms = s.presence_latency.summary();
    report.presence = Some(p);
    logout_all(ctx, &mut set).await;
}

fn reset_login_stats(ctx: &Ctx, report: &mut Report) {
    let s = &ctx.stats;
    s.logins_ok.store(0, Relaxed);
    s.logins_failed.store(0, Relaxed);
    s.logouts_ok.store(0, Relaxed);
    s.presence_rx.store(0, Relaxed);
    s.auth.reset();
    s.login.reset();
    s.tls.reset();
    report.logins = LoginReport::default();
}

async fn offline_drain(ctx: &Arc<Ctx>, report: &mut Report) {
    let args = &ctx.args;
    let mut set = JoinSet::new();
    let senders = (0..args.users).filter(|u| u % 2 == 0);
    let receivers = (0..args.users).filter(|u| u % 2 == 1);
    let mut d = DrainReport {
        senders: senders.clone().count() as u64,
        receivers: receivers.clone().count() as u64,
        ..DrainReport::default()
    };
    checkpoint(ctx, report, "before_login");
    let window = login_users(ctx, &mut set, senders, login_opts(ctx), report).await;
    set_login_rate(ctx, report, window);
    let mut send_window = 0.0;
    let mut ok = window.is_some() && pause(ctx, ctx.args.settle).await;
    if ok {
        match send_phase(ctx, SendKind::Chat, Targets::Odd, args.rate).await {
            Some(w) => send_window = w,
            None => ok = false,
        }
    }
    // Let the server store what is in flight before the receivers come.
    ok = ok && pause(ctx, ctx.args.settle).await;
    let s = &ctx.stats;
    let t = &ctx.tracker;
    if ok {
        // The drain's CPU includes the receivers' logins: that is what a user
        // coming back costs.
        checkpoint(ctx, report, "before_drain");
        d.stored = s.msgs_sent.load(Relaxed) - s.msgs_bounced.load(Relaxed);
        let start_ns = crate::loadgen::stats::unix_ns();
        let logged = login_users(ctx, &mut set, receivers, login_opts(ctx), report).await;
        if logged.is_some() {
            let deadline = Instant::now() + args.grace;
            wait_until(ctx, Some(deadline), || {
                t.delivered.load(Relaxed) + s.msgs_bounced.load(Relaxed)
                    >= s.msgs_sent.load(Relaxed)
            })
            .await;
        }
        let last = t.last_delivery_ns.load(Relaxed);
        if last > start_ns {
            let secs = (last - start_ns) as f64 / 1e9;
            d.drain_s = Some(secs);
            d.messages_per_s = (secs > 0.0).then(|| t.delivered.load(Relaxed) as f64 / secs);
        }
        checkpoint(ctx, report, "after_messages");
        cpu_per_delivery(report, "before_drain", t.delivered.load(Relaxed));
    }
    d.delivered = t.delivered.load(Relaxed);
    d.duplicated = t.duplicated.load(Relaxed);
    d.lost = d.stored.saturating_sub(d.delivered);
    d.per_receiver_ms = s.drain.summary();
    report.drain = Some(d);
    report.messages = Some(message_report(ctx, send_window));
    logout_all(ctx, &mut set).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_online_fraction_is_about_right() {
        let online = (0..10_000).filter(|&u| fanout_online(u, 0.3)).count();
        assert!((2_800..3_200).contains(&online), "{online}");
        assert!((0..1000).all(|u| fanout_online(u, 1.0)));
    }
}
