//! Graceful drain on SIGTERM (issue 5).
//!
//! - A stopping server closes its client streams with `<system-shutdown/>` (RFC 6120
//!   §4.9.3.17), or `<see-other-host/>` (§4.9.3.19) when `c2s.shutdown_redirect`
//!   names where clients should go instead.
//! - Under load, draining one edge and one session node of a cluster loses no
//!   message the server accepted: the edge stops being ready, closes its streams
//!   (the clients log in again through the other edge), and flushes what it had
//!   forwarded; the session node hands its partitions to the others, which take
//!   over without losing what was queued. A message counts as accepted when the
//!   server answered a ping (XEP-0199) the client sent after it on the same stream:
//!   the stream is processed in order (RFC 6120 §10.1).

use aviary_tests::cluster::Cluster;
use aviary_tests::http::get;
use aviary_tests::{RawClient, TestServer};
use aviary_xmpp::{Element, Event, ns};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn stopping_server_sends(redirect: Option<&str>) -> (String, String) {
    let redirect = redirect.map(str::to_owned);
    let server = TestServer::start_with(move |c| c.c2s.shutdown_redirect = redirect);
    let (user, pw) = server.new_account("drain").await;
    let mut c = server.login(0, &user, &pw, "r").await;
    c.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
    let stop = tokio::task::spawn_blocking(move || drop(server));
    let mut error = None;
    loop {
        match c.next_event_within(Duration::from_secs(10)).await {
            Ok(Event::Element(el)) if el.name() == "error" && el.ns() == ns::STREAM => {
                error = Some(el);
            }
            Ok(Event::StreamClose) | Err(_) => break,
            Ok(_) => {}
        }
    }
    stop.await.unwrap();
    let el = error.expect("a stream error before the stream closed");
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAMS)
        .expect("a defined condition");
    (cond.name().to_owned(), cond.text().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_says_system_shutdown() {
    if aviary_tests::fixture::cluster_mode() {
        return;
    }
    let (cond, _) = stopping_server_sends(None).await;
    assert_eq!(cond, "system-shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_sends_clients_to_the_configured_host() {
    if aviary_tests::fixture::cluster_mode() {
        return;
    }
    let (cond, host) = stopping_server_sends(Some("xmpp2.example.net:5222")).await;
    assert_eq!(
        (cond.as_str(), host.as_str()),
        ("see-other-host", "xmpp2.example.net:5222")
    );
}

const PAIRS: usize = 12;
const INTERVAL: Duration = Duration::from_millis(50);
/// A ping on a live stream is answered well within this, drain or not.
const PING_PATIENCE: Duration = Duration::from_secs(15);

fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", body)
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

fn ping(id: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", id)
        .with_attr("to", "localhost")
        .with_child(Element::new("ping", "urn:xmpp:ping"))
}

async fn register(addr: std::net::SocketAddr, user: &str) {
    RawClient::register(addr, "localhost", user, "pw")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Logs in (trying `first`, then the other edges) and sends initial presence,
/// retrying until `deadline`: while a node drains, logins may briefly fail.
async fn online(edges: &[SocketAddr], first: usize, user: &str, deadline: Instant) -> RawClient {
    let mut i = first;
    loop {
        match RawClient::login(
            edges[i % edges.len()],
            "localhost",
            user,
            "pw",
            Some("load"),
        )
        .await
        {
            Ok(mut c) => {
                if c.send(&Element::new("presence", ns::CLIENT)).await.is_ok() {
                    return c;
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "login {user}: {e:#}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Tally {
    /// Messages whose following ping was answered.
    accepted: HashSet<String>,
    /// Sent, but the stream ended before the ping's answer.
    unconfirmed: HashSet<String>,
    delivered: HashMap<String, usize>,
    bounced: HashSet<String>,
    /// Stream error conditions the clients saw.
    closed_with: Vec<String>,
}

/// Polls a node's `/readyz` until `done`, collecting the changes of status seen.
fn watch_readiness(addr: SocketAddr, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u16>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !done.load(Ordering::Acquire) {
            if let Ok((status, _)) = get(addr, "/readyz")
                && seen.last() != Some(&status)
            {
                seen.push(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    })
}

/// SIGTERM to `name`, watching its readiness meanwhile; returns the statuses seen
/// (e.g. `[200, 503]`).
fn drain(cluster: &mut Cluster, name: &str) -> Vec<u16> {
    let admin = cluster.node(name).unwrap().admin;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = watch_readiness(admin, done.clone());
    // Let the watcher see it ready first.
    let t0 = Instant::now();
    while get(admin, "/readyz").map(|r| r.0).ok() != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name} not ready before the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    cluster.stop(name).unwrap();
    println!("drain: {name} exited {:?} after SIGTERM", started.elapsed());
    done.store(true, Ordering::Release);
    watcher.join().unwrap()
}

#[test]
fn draining_an_edge_and_a_session_node_under_load_loses_nothing() {
    if aviary_tests::fixture::cluster_mode() {
        return; // This test makes its own cluster; once is enough.
    }
    let mut cluster = Cluster::start(3, 2, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let edges = cluster.edges();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let pid = std::process::id();
    let pairs: Vec<(String, String)> = (0..PAIRS)
        .map(|i| (format!("dsnd{i}-{pid}"), format!("drcv{i}-{pid}")))
        .collect();
    rt.block_on(async {
        for (s, r) in &pairs {
            register(edges[0], s).await;
            register(edges[0], r).await;
        }
    });
    // Each pair has one party on each edge, so the edge drain ends half the
    // senders' and half the receivers' streams.
    let mut tasks = Vec::new();
    for (i, (s, r)) in pairs.iter().enumerate() {
        let (s, r) = (s.clone(), r.clone());
        let (tally, stop, edges) = (tally.clone(), stop.clone(), edges.clone());
        tasks.push(rt.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let (se, re) = (i % 2, (i + 1) % 2);
            let mut rx = Some(online(&edges, re, &r, deadline).await);
            let mut tx = Some(online(&edges, se, &s, deadline).await);
            let to = format!("{r}@localhost/load");
            let mut n = 0u64;
            // The message waiting for its ping's answer.
            let mut waiting: Option<String> = None;
            let mut next = tokio::time::Instant::now();
            loop {
                if rx.is_none() {
                    rx = Some(online(&edges, re + 1, &r, deadline).await);
                }
                if tx.is_none() {
                    if let Some(m) = waiting.take() {
                        tally.lock().unwrap().unconfirmed.insert(m);
                    }
                    tx = Some(online(&edges, se + 1, &s, deadline).await);
                }
                let now = tokio::time::Instant::now();
                assert!(
                    waiting.is_none() || now < next + PING_PATIENCE,
                    "the server did not answer the ping after {waiting:?} in {PING_PATIENCE:?}"
                );
                if waiting.is_none() && now >= next {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    n += 1;
                    let body = format!("d-{i}-{n}");
                    let t = tx.as_mut().unwrap();
                    if t.send(&chat(&to, &body)).await.is_ok()
                        && t.send(&ping(&format!("p-{body}"))).await.is_ok()
                    {
                        waiting = Some(body);
                    } else {
                        tally.lock().unwrap().unconfirmed.insert(body);
                        tx = None;
                        continue;
                    }
                    next = now + INTERVAL;
                }
                let wait = Duration::from_millis(200);
                let (r, t) = (rx.as_mut().unwrap(), tx.as_mut().unwrap());
                tokio::select! {
                    ev = r.next_event_within(wait) => match ev {
                        Ok(Event::Element(el)) if el.name() == "message" => {
                            if let Some(b) = el.child_text("body", ns::CLIENT) {
                                *tally.lock().unwrap().delivered.entry(b.into_owned()).or_default() += 1;
                            }
                        }
                        Ok(Event::Element(el)) if el.name() == "error" => {
                            if let Some(c) = el.children().next() {
                                tally.lock().unwrap().closed_with.push(c.name().to_owned());
                            }
                        }
                        Ok(Event::StreamClose) => rx = None,
                        Err(e) if !e.to_string().contains("timed out") => rx = None,
                        _ => {}
                    },
                    ev = t.next_event_within(wait) => match ev {
                        Ok(Event::Element(el)) if el.name() == "iq" => {
                            let id = el.attr("id").unwrap_or_default();
                            if let Some(m) = waiting.take_if(|m| id == format!("p-{m}")) {
                                assert_eq!(el.attr("type"), Some("result"), "ping {id}");
                                tally.lock().unwrap().accepted.insert(m);
                            }
                        }
                        Ok(Event::Element(el)) if el.name() == "message" && el.attr("type") == Some("error") => {
                            if let Some(id) = el.attr("id") {
                                tally.lock().unwrap().bounced.insert(id.to_owned());
                            }
                        }
                        Ok(Event::Element(el)) if el.name() == "error" => {
                            if let Some(c) = el.children().next() {
                                tally.lock().unwrap().closed_with.push(c.name().to_owned());
                            }
                        }
                        Ok(Event::StreamClose) => tx = None,
                        Err(e) if !e.to_string().contains("timed out") => tx = None,
                        _ => {}
                    },
                }
            }
            // What is still in flight.
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            let r = rx.as_mut().unwrap();
            while let Ok(ev) = r.next_event_within(until.saturating_duration_since(tokio::time::Instant::now())).await {
                if let Event::Element(el) = ev
                    && el.name() == "message"
                    && let Some(b) = el.child_text("body", ns::CLIENT)
                {
                    *tally.lock().unwrap().delivered.entry(b.into_owned()).or_default() += 1;
                }
            }
        }));
    }

    std::thread::sleep(Duration::from_secs(2));
    let edge_ready = drain(&mut cluster, "e1");
    std::thread::sleep(Duration::from_secs(2));
    let session_ready = drain(&mut cluster, "s2");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Release);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Whatever went to the offline store instead: log the receivers in again.
    let offline: HashSet<String> = rt.block_on(async {
        let mut got = HashSet::new();
        for (_, r) in &pairs {
            // e1 (edges[0]) is gone.
            let mut c = RawClient::login(edges[1], "localhost", r, "pw", Some("after"))
                .await
                .unwrap();
            c.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
            while let Ok(Event::Element(el)) = c.next_event_within(Duration::from_millis(700)).await
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
    let lost: Vec<&String> = t
        .accepted
        .iter()
        .filter(|m| {
            !t.delivered.contains_key(*m) && !offline.contains(*m) && !t.bounced.contains(*m)
        })
        .collect();
    let duplicated = t.delivered.values().filter(|n| **n > 1).count();
    println!(
        "drain: accepted {} unconfirmed {} delivered {} offline {} bounced {} duplicated {} lost {}",
        t.accepted.len(),
        t.unconfirmed.len(),
        t.delivered.len(),
        offline.len(),
        t.bounced.len(),
        duplicated,
        lost.len()
    );
    println!("drain: readiness of e1 {edge_ready:?}");
    println!("drain: readiness of s2 {session_ready:?}");
    assert!(
        lost.is_empty(),
        "lost {} accepted messages, e.g. {:?}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        t.accepted.len() > PAIRS * 10,
        "too little load to mean anything"
    );
    assert_eq!(duplicated, 0, "duplicated deliveries");
    // The drained edge closed its streams with system-shutdown.
    assert!(
        t.closed_with.iter().any(|c| c == "system-shutdown"),
        "stream errors seen: {:?}",
        t.closed_with
    );
    // Both stopped being ready before they went away.
    for (name, seen) in [("e1", &edge_ready), ("s2", &session_ready)] {
        assert!(
            seen.contains(&503),
            "{name} never reported not-ready: {seen:?}"
        );
    }
}
