//! The admin endpoint of a running server (issue 5): `/metrics` in the Prometheus
//! text format, `/healthz` and `/readyz`.
//!
//! The metrics recorder is global to the process and this test binary's servers
//! share it, so the counters are checked as differences between two scrapes taken
//! around what the test does, in a single test: nothing else in this binary talks
//! to a server meanwhile.

use aviary_sasl::Mechanism;
use aviary_tests::http::{get, sample, sum};
use aviary_tests::{RawClient, TestServer};
use aviary_xmpp::{Element, ns};
use std::time::Duration;

fn scrape(server: &TestServer) -> String {
    let ops = server.ops.expect("the test server has an admin endpoint");
    let (status, body) = get(ops, "/metrics").unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (bounded) for the open-connection gauge to reach `want` streams in
/// `state`: a closed stream leaves the gauge when the server has noticed, just
/// after the client saw the end of the stream.
async fn streams(server: &TestServer, state: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(server);
        let now = sum(&m, "aviary_c2s_connections", &[("state", state)]);
        if now == want {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{state} streams stayed at {now}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_connections_auth_and_stanzas() {
    if aviary_tests::fixture::cluster_mode() {
        return; // The cluster's nodes are checked by the drain test.
    }
    let server = TestServer::start();
    let (a, pa) = server.new_account("ma").await;
    let (b, pb) = server.new_account("mb").await;

    let before = scrape(&server);
    let c = |m: &str, name: &str, labels: &[(&str, &str)]| sum(m, name, labels);
    assert!(
        sample(&before, "aviary_build_info", &[]).is_none(),
        "build_info has labels (version, role)"
    );
    assert_eq!(
        c(&before, "aviary_build_info", &[("role", "all")]),
        1.0,
        "build info for this role:\n{before}"
    );
    assert_eq!(
        c(&before, "aviary_c2s_connections", &[("state", "bound")]),
        0.0
    );

    // Two logins and one wrong password.
    let mut ca = server.login(0, &a, &pa, "r").await;
    let mut cb = server.login(0, &b, &pb, "r").await;
    let mut bad = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    bad.open().await.unwrap();
    bad.starttls().await.unwrap();
    let refused = bad
        .authenticate(Mechanism::ScramSha256, &a, "wrong")
        .await
        .unwrap();
    assert_eq!(refused, Err("not-authorized".to_owned()));

    // Three messages from a to b, one presence each.
    for s in [&mut ca, &mut cb] {
        s.send(&Element::new("presence", ns::CLIENT)).await.unwrap();
    }
    for i in 0..3 {
        ca.send(
            &Element::new("message", ns::CLIENT)
                .with_attr("to", server.bare(&b))
                .with_attr("type", "chat")
                .with_child(Element::new("body", ns::CLIENT).with_text(format!("m{i}"))),
        )
        .await
        .unwrap();
    }
    let mut got = 0;
    while got < 3 {
        let el = cb.next_element().await.unwrap();
        if el.name() == "message" {
            got += 1;
        }
    }

    let during = streams(&server, "bound", 2.0).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| c(&during, name, labels) - c(&before, name, labels);
    assert_eq!(
        delta("aviary_c2s_connections_total", &[("listener", "starttls")]),
        3.0,
        "connections accepted"
    );
    assert_eq!(
        delta("aviary_tls_handshakes_total", &[("result", "ok")]),
        3.0
    );
    assert_eq!(
        delta(
            "aviary_auth_attempts_total",
            &[("mechanism", "SCRAM-SHA-256"), ("result", "success")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "aviary_auth_attempts_total",
            &[("mechanism", "SCRAM-SHA-256"), ("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        delta("aviary_stanzas_in_total", &[("kind", "message")]),
        3.0,
        "messages received from clients"
    );
    assert!(delta("aviary_stanzas_in_total", &[("kind", "presence")]) >= 2.0);
    assert_eq!(
        delta("aviary_stanzas_out_total", &[("kind", "message")]),
        3.0,
        "messages written to clients"
    );
    assert!(
        delta("aviary_routing_latency_seconds_count", &[]) >= 3.0,
        "routing latency observed:\n{during}"
    );
    assert_eq!(
        c(
            &during,
            "aviary_c2s_connections",
            &[("transport", "starttls"), ("state", "bound")]
        ),
        2.0
    );
    assert_eq!(
        c(&during, "aviary_user_actors", &[]),
        2.0,
        "one actor per online user"
    );

    // Streams that end leave the gauge.
    ca.close().await.unwrap();
    cb.close().await.unwrap();
    drop(bad);
    streams(&server, "bound", 0.0).await;
    streams(&server, "negotiating", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_on_the_admin_port() {
    if aviary_tests::fixture::cluster_mode() {
        return;
    }
    let server = TestServer::start();
    let ops = server.ops.unwrap();
    assert_eq!(get(ops, "/healthz").unwrap().0, 200);
    // Ready once every check passes (at once here: the store was just opened).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(ops, "/readyz").unwrap();
        if status == 200 {
            assert_eq!(body.trim(), "ready");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("not ready: "), "{body}");
        assert!(std::time::Instant::now() < deadline, "still {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(ops, "/nothing-here").unwrap().0, 404);
}
