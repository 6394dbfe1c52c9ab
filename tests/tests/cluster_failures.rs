//! Losing an edge, Redis, or the CQL store (ARCHITECTURE §4).
//!
//! - An edge killed with SIGKILL: its users' resources leave the directory within
//!   the lease, and their contacts see them go unavailable.
//! - Redis restarted (empty) and the CQL store stopped: new logins fail with a clear
//!   error, nothing is acknowledged that was not stored or delivered (a message is
//!   delivered or bounced, never lost), and service resumes when the dependency is
//!   back. An edge whose lease was lost (Redis came back empty) closes the client
//!   streams the cluster no longer knows, and those clients log in again.

use aviary_directory::Locations;
use aviary_tests::RawClient;
use aviary_tests::cluster::{Cluster, PrivateDep, deps};
use aviary_tests::im::{Client, subscribe_to};
use aviary_xmpp::{BareJid, Element, ns};
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_secs(3);

async fn register(addr: std::net::SocketAddr, user: &str) {
    RawClient::register(addr, "localhost", user, "pw")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn user(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn chat(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", body)
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

/// Waits for `body` to arrive at `rx`, or for `tx` to get it bounced; returns
/// "delivered" or "bounced" (it must be one of them, within `limit`).
async fn fate(rx: &mut RawClient, tx: &mut RawClient, body: &str, limit: Duration) -> &'static str {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "message {body} was neither delivered nor bounced: lost"
        );
        tokio::select! {
            ev = rx.next_event_within(left) => {
                if let Ok(aviary_xmpp::Event::Element(el)) = ev
                    && el.child_text("body", ns::CLIENT).as_deref() == Some(body)
                {
                    return "delivered";
                }
            }
            ev = tx.next_event_within(left) => {
                if let Ok(aviary_xmpp::Event::Element(el)) = ev
                    && el.attr("type") == Some("error")
                    && el.attr("id") == Some(body)
                {
                    return "bounced";
                }
            }
        }
    }
}

/// Like [`fate`], when the cluster may close either stream meanwhile: a closed
/// recipient logs in again (retrying until logins work) and sends initial presence,
/// which brings its offline messages (XEP-0160); a closed sender is no longer
/// watched.
async fn fate_across_reconnects(
    edge: std::net::SocketAddr,
    user: &str,
    mut rx: Option<RawClient>,
    mut tx: Option<RawClient>,
    body: &str,
    limit: Duration,
) -> &'static str {
    use aviary_xmpp::Event;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "message {body} was neither delivered nor bounced: lost"
        );
        let Some(r) = rx.as_mut() else {
            match RawClient::login(edge, "localhost", user, "pw", Some("again")).await {
                Ok(mut c) => {
                    c.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
                    rx = Some(c);
                }
                // Logins fail until the cluster has re-formed.
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
            continue;
        };
        let sender = async {
            match tx.as_mut() {
                Some(t) => t.next_event_within(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = r.next_event_within(left) => match ev {
                Ok(Event::Element(el)) => {
                    if el.child_text("body", ns::CLIENT).as_deref() == Some(body) {
                        return "delivered";
                    }
                }
                Ok(Event::StreamOpen(_)) => {}
                Ok(Event::StreamClose) | Err(_) => {
                    println!("{user}'s stream was closed: logging in again");
                    rx = None;
                }
            },
            ev = sender => match ev {
                Ok(Event::Element(el)) => {
                    if el.attr("type") == Some("error") && el.attr("id") == Some(body) {
                        return "bounced";
                    }
                }
                Ok(Event::StreamOpen(_)) => {}
                Ok(Event::StreamClose) | Err(_) => tx = None,
            },
        }
    }
}

/// Logs in, trying again until `deadline` (while the cluster re-forms, a login may
/// fail or time out).
async fn login_by(
    deadline: Instant,
    edge: std::net::SocketAddr,
    user: &str,
    res: &str,
) -> RawClient {
    loop {
        match RawClient::login(edge, "localhost", user, "pw", Some(res)).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "logins did not resume: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends a ping (XEP-0199) after what `c` sent so far and waits for its answer:
/// true once the server has processed everything before it, false if the stream
/// ended first.
async fn answered(c: &mut RawClient, tag: &str) -> bool {
    let id = format!("ping-{tag}");
    let ping = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", &id)
        .with_attr("to", "localhost")
        .with_child(Element::new("ping", "urn:xmpp:ping"));
    if c.send(&ping).await.is_err() {
        return false;
    }
    loop {
        match c.next_event_within(Duration::from_secs(20)).await {
            Ok(aviary_xmpp::Event::Element(el)) if el.attr("id") == Some(id.as_str()) => {
                return el.attr("type") == Some("result");
            }
            Ok(aviary_xmpp::Event::StreamClose) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sigkill_ends_its_sessions() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(3, 2, |_| {}))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let edges = cluster.edges();
    let (a, b) = (user("gone"), user("watch"));
    register(edges[0], &a).await;
    register(edges[1], &b).await;
    let acct = |u: &str| aviary_tests::im::Account {
        user: u.to_owned(),
        password: "pw".to_owned(),
        bare: format!("{u}@localhost"),
    };
    let (aa, ba) = (acct(&a), acct(&b));
    let mut ca = Client::new(
        RawClient::login(edges[0], "localhost", &a, "pw", Some("r"))
            .await
            .unwrap(),
        &aa,
    );
    let mut cb = Client::new(
        RawClient::login(edges[1], "localhost", &b, "pw", Some("r"))
            .await
            .unwrap(),
        &ba,
    );
    ca.available(None).await;
    cb.available(None).await;
    // b subscribes to a's presence (the helper consumes the presence that follows).
    subscribe_to(&mut cb, &mut ca).await;

    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill("e1")).unwrap();
    // RFC 6121 §4.5.2 on the server's behalf: a's contacts see it go.
    let p = cb
        .recv_within(LEASE + Duration::from_secs(10), |el| {
            el.name() == "presence"
                && el.attr("type") == Some("unavailable")
                && el.attr("from") == Some(&format!("{a}@localhost/r"))
        })
        .await;
    assert!(p.is_some(), "no unavailable presence after the edge died");
    // ... and a's resource is gone from the directory within the lease (+5 s).
    let dir = tokio::task::block_in_place(|| cluster.directory()).unwrap();
    let bare = BareJid::new(&format!("{a}@localhost")).unwrap();
    loop {
        let left = dir.resources(&bare).await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < LEASE + Duration::from_secs(5),
            "resources still recorded {:?} after the edge's lease",
            left
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "edge loss: resources gone {:?} after the kill",
        killed.elapsed()
    );
}

#[test]
fn redis_restart_fails_logins_clearly_and_recovers() {
    let (_, cql) = deps().unwrap_or_else(|e| panic!("{e:#}"));
    let redis = PrivateDep::start("redis.sh").unwrap_or_else(|e| panic!("{e:#}"));
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let cluster = Cluster::start_on(&url, &cql, 3, 2, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let edges = cluster.edges();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b, late) = (user("ra"), user("rb"), user("rlate"));
    rt.block_on(async {
        for (u, e) in [(&a, 0), (&b, 1), (&late, 0)] {
            register(edges[e], u).await;
        }
    });
    let (mut ca, cb) = rt.block_on(async {
        let mut ca = RawClient::login(edges[0], "localhost", &a, "pw", Some("r"))
            .await
            .unwrap();
        let mut cb = RawClient::login(edges[1], "localhost", &b, "pw", Some("r"))
            .await
            .unwrap();
        ca.send(&Element::new("presence", ns::CLIENT))
            .await
            .unwrap();
        cb.send(&Element::new("presence", ns::CLIENT))
            .await
            .unwrap();
        ca.send(&chat(&format!("{b}@localhost/r"), "before"))
            .await
            .unwrap();
        assert_eq!(
            fate(&mut cb, &mut ca, "before", Duration::from_secs(10)).await,
            "delivered"
        );
        (ca, cb)
    });

    redis.stop().unwrap();
    let outage = Instant::now();
    rt.block_on(async {
        // A login now cannot record its location: it fails, clearly.
        let r = RawClient::login(edges[0], "localhost", &late, "pw", Some("x")).await;
        let err = r.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            err.contains("bind failed") && err.contains("internal-server-error"),
            "login during the outage: {err:?}"
        );
        // A message during the outage is delivered later or bounced, never lost.
        ca.send(&chat(&format!("{b}@localhost/r"), "during"))
            .await
            .unwrap();
    });

    redis.restart().unwrap();
    println!("redis was down for {:?}", outage.elapsed());
    rt.block_on(async {
        // The restarted Redis is empty: the edges find their leases gone and close
        // the sessions the cluster no longer knows (a client logs in again), so the
        // recipient may have to come back for the message.
        let f = fate_across_reconnects(
            edges[1],
            &b,
            Some(cb),
            Some(ca),
            "during",
            Duration::from_secs(40),
        )
        .await;
        println!("redis restart: the message sent during the outage was {f}");
        // Service resumes: logins work again (the cluster re-forms on the empty Redis).
        let resumed = Instant::now() + Duration::from_secs(30);
        login_by(resumed, edges[0], &late, "y").await;
        // Messages flow again. An edge that noticed its lost lease late may still
        // close streams meanwhile, which loses nothing: only a message the server
        // accepted (a ping sent after it on the same stream was answered: XEP-0199,
        // and a stream is processed in order) must arrive.
        let mut cb = login_by(resumed, edges[1], &b, "after").await;
        cb.send(&Element::new("presence", ns::CLIENT))
            .await
            .unwrap();
        for attempt in 1.. {
            assert!(attempt <= 5, "no message accepted after the outage");
            let body = format!("after{attempt}");
            let mut ca = login_by(resumed, edges[0], &a, "after").await;
            ca.send(&chat(&format!("{b}@localhost"), &body))
                .await
                .unwrap();
            if !answered(&mut ca, &body).await {
                continue;
            }
            let f = fate_across_reconnects(
                edges[1],
                &b,
                Some(cb),
                Some(ca),
                &body,
                Duration::from_secs(20),
            )
            .await;
            assert_eq!(f, "delivered");
            break;
        }
    });
    drop(cluster);
}

#[test]
fn cql_outage_fails_logins_clearly_and_recovers() {
    let (redis_url, _) = deps().unwrap_or_else(|e| panic!("{e:#}"));
    let cassandra = PrivateDep::start("cassandra.sh").unwrap_or_else(|e| panic!("{e:#}"));
    let cql = format!("127.0.0.1:{}", cassandra.port);
    let cluster =
        Cluster::start_on(&redis_url, &cql, 3, 2, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    let edges = cluster.edges();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b, off, late) = (user("ca"), user("cb"), user("coff"), user("clate"));
    rt.block_on(async {
        for (u, e) in [(&a, 0), (&b, 1), (&off, 0), (&late, 1)] {
            register(edges[e], u).await;
        }
    });
    let mut ca = rt.block_on(async {
        let mut ca = RawClient::login(edges[0], "localhost", &a, "pw", Some("r"))
            .await
            .unwrap();
        ca.send(&Element::new("presence", ns::CLIENT))
            .await
            .unwrap();
        ca
    });
    cassandra.stop().unwrap();
    rt.block_on(async {
        // Authentication needs the account: a clear SASL failure.
        let mut c = RawClient::connect(edges[1], "localhost").await.unwrap();
        c.open().await.unwrap();
        c.starttls().await.unwrap();
        let r = c
            .authenticate(aviary_sasl::Mechanism::ScramSha256, &late, "pw")
            .await
            .unwrap();
        assert_eq!(
            r,
            Err("temporary-auth-failure".to_owned()),
            "login with the store down"
        );
        // A message to an offline user cannot be stored: the sender is told, it is
        // never silently dropped.
        ca.send(&chat(&format!("{off}@localhost"), "to-offline"))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the message to an offline user was neither stored nor bounced"
            );
            if let Ok(aviary_xmpp::Event::Element(el)) = ca.next_event_within(left).await
                && el.attr("id") == Some("to-offline")
                && el.attr("type") == Some("error")
            {
                break;
            }
        }
    });
    cassandra.restart().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match RawClient::login(edges[1], "localhost", &late, "pw", Some("y")).await {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "logins did not resume: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    drop(cluster);
}
