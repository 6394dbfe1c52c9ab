//! Losing a session node under load (ARCHITECTURE §4 "Delivery guarantee").
//!
//! Pairs of users chat steadily across two edges while one session node is killed
//! with SIGKILL. Every message the server accepted must be delivered exactly once or
//! be in the offline store; the rest must have been bounced to their sender. The
//! users whose partitions moved must chat again within the lease time + 5 s.

use aviary_tests::RawClient;
use aviary_tests::cluster::Cluster;
use aviary_xmpp::{Element, ns};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAIRS: usize = 12;
const INTERVAL: Duration = Duration::from_millis(100);

fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", body)
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

async fn register(addr: std::net::SocketAddr, user: &str, pw: &str) {
    RawClient::register(addr, "localhost", user, pw)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

async fn online(addr: std::net::SocketAddr, user: &str, pw: &str) -> RawClient {
    let mut c = RawClient::login(addr, "localhost", user, pw, Some("load"))
        .await
        .unwrap_or_else(|e| panic!("login {user}: {e:#}"));
    c.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
    c
}

#[derive(Default)]
struct Tally {
    sent: HashSet<String>,
    delivered: HashMap<String, usize>,
    bounced: HashSet<String>,
    /// When the session node was killed.
    killed_at: Option<Instant>,
    /// For each pair, its first delivery after the kill.
    first_after_kill: HashMap<usize, Instant>,
}

#[test]
fn session_node_sigkill_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3, 2, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let edges = cluster.edges();
    let lease = Duration::from_secs(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pairs: Vec<(String, String)> = (0..PAIRS)
        .map(|i| {
            (
                format!("snd{i}-{}", std::process::id()),
                format!("rcv{i}-{}", std::process::id()),
            )
        })
        .collect();
    rt.block_on(async {
        for (s, r) in &pairs {
            register(edges[0], s, "pw").await;
            register(edges[1], r, "pw").await;
        }
    });
    // Senders on edge 0, receivers on edge 1: every message crosses edges, and
    // with three session nodes most cross session nodes too.
    let mut tasks = Vec::new();
    for (i, (s, r)) in pairs.iter().enumerate() {
        let (s, r) = (s.clone(), r.clone());
        let (tally, stop) = (tally.clone(), stop.clone());
        let (e0, e1) = (edges[0], edges[1]);
        tasks.push(rt.spawn(async move {
            let mut rx = online(e1, &r, "pw").await;
            let mut tx = online(e0, &s, "pw").await;
            let to = format!("{r}@localhost/load");
            let mut n = 0u64;
            let mut next = tokio::time::Instant::now();
            loop {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                n += 1;
                let body = format!("m-{i}-{n}");
                if tx.send(&chat(&to, &body)).await.is_err() {
                    break;
                }
                tally.lock().unwrap().sent.insert(body);
                next += INTERVAL;
                // Drain both sides until the next send is due.
                loop {
                    let now = tokio::time::Instant::now();
                    if now >= next {
                        break;
                    }
                    tokio::select! {
                        ev = rx.next_event_within(next - now) => {
                            if let Ok(aviary_xmpp::Event::Element(el)) = ev
                                && el.name() == "message"
                                && let Some(b) = el.child_text("body", ns::CLIENT)
                            {
                                let mut t = tally.lock().unwrap();
                                *t.delivered.entry(b.into_owned()).or_default() += 1;
                                let now = Instant::now();
                                if t.killed_at.is_some_and(|k| now > k) {
                                    t.first_after_kill.entry(i).or_insert(now);
                                }
                            }
                        }
                        ev = tx.next_event_within(next - now) => {
                            if let Ok(aviary_xmpp::Event::Element(el)) = ev
                                && el.name() == "message"
                                && el.attr("type") == Some("error")
                                && let Some(id) = el.attr("id")
                            {
                                tally.lock().unwrap().bounced.insert(id.to_owned());
                            }
                        }
                    }
                }
            }
            // Collect what is still in flight.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while let Ok(aviary_xmpp::Event::Element(el)) = rx
                .next_event_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                if el.name() == "message"
                    && let Some(b) = el.child_text("body", ns::CLIENT)
                {
                    *tally
                        .lock()
                        .unwrap()
                        .delivered
                        .entry(b.into_owned())
                        .or_default() += 1;
                }
            }
            while let Ok(aviary_xmpp::Event::Element(el)) =
                tx.next_event_within(Duration::from_millis(200)).await
            {
                if el.attr("type") == Some("error")
                    && let Some(id) = el.attr("id")
                {
                    tally.lock().unwrap().bounced.insert(id.to_owned());
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));
    let victim = "s2";
    let killed_at = Instant::now();
    tally.lock().unwrap().killed_at = Some(killed_at);
    cluster.kill(victim).unwrap();
    // Keep the load on through the lease expiry and recovery.
    std::thread::sleep(lease + Duration::from_secs(6));
    stop.store(true, std::sync::atomic::Ordering::Release);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Whatever went to the offline store instead: log the receivers in again.
    let offline: HashSet<String> = rt.block_on(async {
        let mut got = HashSet::new();
        for (_, r) in &pairs {
            let mut c = RawClient::login(edges[1], "localhost", r, "pw", Some("after"))
                .await
                .unwrap();
            c.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
            while let Ok(aviary_xmpp::Event::Element(el)) =
                c.next_event_within(Duration::from_millis(700)).await
            {
                if el.name() == "message"
                    && el.has_child("delay", ns::DELAY)
                    && let Some(b) = el.child_text("body", ns::CLIENT)
                {
                    got.insert(b.into_owned());
                }
            }
        }
        got
    });
    let t = tally.lock().unwrap();
    let delivered: HashSet<&String> = t.delivered.keys().collect();
    let duplicated = t.delivered.values().filter(|n| **n > 1).count();
    let lost: Vec<&String> = t
        .sent
        .iter()
        .filter(|m| !delivered.contains(m) && !offline.contains(*m) && !t.bounced.contains(*m))
        .collect();
    println!(
        "node loss: sent {} delivered {} duplicated {} offline {} bounced {} lost {}",
        t.sent.len(),
        delivered.len(),
        duplicated,
        offline.len(),
        t.bounced.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} messages, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(duplicated, 0, "duplicated deliveries");
    // Every pair chats again within lease + 5 s of the kill (unaffected pairs at
    // once, pairs whose owner died once the partitions moved).
    let limit = lease + Duration::from_secs(5);
    let mut worst = Duration::ZERO;
    for i in 0..PAIRS {
        let first = t.first_after_kill.get(&i).copied();
        let took = first.map(|f| f - killed_at);
        assert!(
            took.is_some_and(|d| d <= limit),
            "pair {i} did not chat again within {limit:?} of the kill (took {took:?})"
        );
        worst = worst.max(took.unwrap_or_default());
    }
    println!("node loss: slowest pair chatted again {worst:?} after the kill");
    // Nothing is owned by the dead node any more.
    let claims = cluster.claims().unwrap();
    assert!(
        claims
            .iter()
            .all(|c| c.as_deref().is_some_and(|n| n != victim))
    );
    let _ = cluster.log_of(victim);
}
