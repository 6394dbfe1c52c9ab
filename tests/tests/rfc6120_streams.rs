//! RFC 6120 end to end: stream negotiation (§4–§7), addressing and stamping (§8),
//! and the server's own iqs, driven over real sockets.

use aviary_sasl::Mechanism;
use aviary_tests::{RawClient, TestServer};
use aviary_xmpp::{Element, ns};

fn message(to: &str, body: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", "m1")
        .with_child(Element::new("body", ns::CLIENT).with_text(body))
}

#[tokio::test]
async fn rfc6120_two_users_exchange_messages_both_ways() {
    let server = TestServer::start();
    let (alice, apw) = server.new_account("alice").await;
    let (bob, bpw) = server.new_account("bob").await;
    let mut a = server.login(0, &alice, &apw, "phone").await;
    let mut b = server.login(1, &bob, &bpw, "laptop").await;
    let a_jid = a.jid.clone().unwrap();
    let b_jid = b.jid.clone().unwrap();
    assert_eq!(a_jid, format!("{alice}@localhost/phone"));

    a.send(&message(&b_jid, "hello bob")).await.unwrap();
    let got = b.next_matching(|e| e.name() == "message").await.unwrap();
    // RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
    assert_eq!(got.attr("from"), Some(a_jid.as_str()));
    assert_eq!(
        got.child_text("body", ns::CLIENT).as_deref(),
        Some("hello bob")
    );

    b.send(&message(&a_jid, "hi alice")).await.unwrap();
    let got = a.next_matching(|e| e.name() == "message").await.unwrap();
    assert_eq!(got.attr("from"), Some(b_jid.as_str()));
    assert_eq!(
        got.child_text("body", ns::CLIENT).as_deref(),
        Some("hi alice")
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn rfc6120_5_3_1_tls_is_mandatory_before_auth() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    let features = c.open().await.unwrap();
    let starttls = features.get_child("starttls", ns::TLS).unwrap();
    assert!(starttls.has_child("required", ns::TLS));
    // Only STARTTLS is offered before TLS.
    assert!(features.get_child("mechanisms", ns::SASL).is_none());
    c.send(
        &Element::new("auth", ns::SASL)
            .with_attr("mechanism", "PLAIN")
            .with_text("AGEAYg=="),
    )
    .await
    .unwrap();
    let failure = c.next_element().await.unwrap();
    assert!(failure.has_child("encryption-required", ns::SASL));
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized")
    );
}

#[tokio::test]
async fn rfc6120_6_sasl_offers_scram_plus_and_xep0440_bindings_after_tls() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.open().await.unwrap();
    let features = c.starttls().await.unwrap();
    let mechs = c.mechanisms();
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.iter().any(|x| x == m), "{m} missing from {mechs:?}");
    }
    let cb = features
        .get_child("sasl-channel-binding", ns::SASL_CB)
        .unwrap();
    let types: Vec<_> = cb.children().filter_map(|c| c.attr("type")).collect();
    assert!(types.contains(&"tls-exporter"), "{types:?}");
    assert!(types.contains(&"tls-server-end-point"), "{types:?}");
}

#[tokio::test]
async fn rfc6120_6_every_mechanism_authenticates() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("mech").await;
    for mech in [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ] {
        let mut c = RawClient::connect(server.endpoint(0), &server.domain)
            .await
            .unwrap();
        c.open().await.unwrap();
        c.starttls().await.unwrap();
        let r = c.authenticate(mech, &user, &pw).await.unwrap();
        assert_eq!(r, Ok(()), "{mech}");
        c.bind(None).await.unwrap();
    }
}

#[tokio::test]
async fn xep0368_direct_tls_login() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("direct").await;
    let mut c = RawClient::connect_direct_tls(server.c2s_tls[0], &server.domain)
        .await
        .unwrap();
    let features = c.open().await.unwrap();
    assert!(features.get_child("starttls", ns::TLS).is_none());
    assert_eq!(
        c.authenticate(Mechanism::ScramSha256Plus, &user, &pw)
            .await
            .unwrap(),
        Ok(())
    );
    let jid = c.bind(Some("tls")).await.unwrap();
    assert!(jid.ends_with("/tls"));
}

#[tokio::test]
async fn rfc6120_6_5_10_wrong_password_is_not_authorized() {
    let server = TestServer::start();
    let (user, _) = server.new_account("wrong").await;
    for mech in [Mechanism::ScramSha256, Mechanism::Plain] {
        let mut c = RawClient::connect(server.endpoint(0), &server.domain)
            .await
            .unwrap();
        c.open().await.unwrap();
        c.starttls().await.unwrap();
        let r = c
            .authenticate(mech, &user, "not the password")
            .await
            .unwrap();
        assert_eq!(r, Err("not-authorized".to_string()), "{mech}");
    }
    // Unknown accounts fail the same way.
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.open().await.unwrap();
    c.starttls().await.unwrap();
    let r = c
        .authenticate(Mechanism::ScramSha256, "nobody-here", "x")
        .await
        .unwrap();
    assert_eq!(r, Err("not-authorized".to_string()));
}

#[tokio::test]
async fn rfc6120_6_4_5_too_many_failures_end_the_stream() {
    let server = TestServer::start();
    let (user, _) = server.new_account("retry").await;
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.open().await.unwrap();
    c.starttls().await.unwrap();
    for _ in 0..2 {
        let r = c
            .authenticate(Mechanism::ScramSha1, &user, "bad")
            .await
            .unwrap();
        assert_eq!(r, Err("not-authorized".to_string()));
    }
    let r = c
        .authenticate(Mechanism::ScramSha1, &user, "bad")
        .await
        .unwrap();
    assert_eq!(r, Err("not-authorized".to_string()));
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("policy-violation")
    );
}

#[tokio::test]
async fn per_account_throttling_answers_temporary_auth_failure() {
    let server = TestServer::start_with(|c| {
        c.auth.max_failures_per_account = 2;
        c.auth.max_failures_per_connection = 10;
    });
    let (user, pw) = server.new_account("locked").await;
    let mut c = RawClient::connect(server.endpoint(0), &server.domain)
        .await
        .unwrap();
    c.open().await.unwrap();
    c.starttls().await.unwrap();
    for _ in 0..2 {
        let r = c
            .authenticate(Mechanism::ScramSha256, &user, "bad")
            .await
            .unwrap();
        assert_eq!(r, Err("not-authorized".to_string()));
    }
    // Even the right password is refused while the account is throttled.
    let r = c
        .authenticate(Mechanism::ScramSha256, &user, &pw)
        .await
        .unwrap();
    assert_eq!(r, Err("temporary-auth-failure".to_string()));
}

#[tokio::test]
async fn rfc6120_7_server_generated_resource() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("gen").await;
    let c = RawClient::login(server.endpoint(0), &server.domain, &user, &pw, None)
        .await
        .unwrap();
    let jid = c.jid.clone().unwrap();
    let resource = jid.split_once('/').unwrap().1;
    assert!(resource.len() >= 8, "{jid}");
}

#[tokio::test]
async fn rfc6120_7_7_2_2_newer_session_wins_and_older_gets_conflict() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("dup").await;
    let mut first = server.login(0, &user, &pw, "same").await;
    let mut second = server.login(1, &user, &pw, "same").await;
    assert_eq!(
        first.expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    // The newer session keeps working: ping the server.
    second
        .send(
            &Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", "p1")
                .with_attr("to", "localhost")
                .with_child(Element::new("ping", ns::PING)),
        )
        .await
        .unwrap();
    let pong = second
        .next_matching(|e| e.attr("id") == Some("p1"))
        .await
        .unwrap();
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn rfc6120_4_9_3_6_unknown_host_is_refused() {
    let server = TestServer::start();
    let mut c = RawClient::connect(server.endpoint(0), "not-served.test")
        .await
        .unwrap();
    c.send_xml(
        "<stream:stream to='not-served.test' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await
    .unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("host-unknown")
    );
}

#[tokio::test]
async fn rfc6120_8_1_2_1_spoofed_from_is_rejected() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("spoof").await;
    let mut c = server.login(0, &user, &pw, "r").await;
    c.send_xml(
        "<message to='someone@localhost' from='admin@localhost/x'><body>hi</body></message>",
    )
    .await
    .unwrap();
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("invalid-from")
    );
}

#[tokio::test]
async fn server_iqs_disco_ping_version_time_and_unknown() {
    let server = TestServer::start();
    let (user, pw) = server.new_account("iq").await;
    let mut c = server.login(0, &user, &pw, "r").await;
    let ask = |id: &str, payload: Element| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("to", "localhost")
            .with_child(payload)
    };
    // XEP-0030
    c.send(&ask("d1", Element::new("query", ns::DISCO_INFO)))
        .await
        .unwrap();
    let r = c
        .next_matching(|e| e.attr("id") == Some("d1"))
        .await
        .unwrap();
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    let id = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("server"), Some("im"))
    );
    // XEP-0092
    c.send(&ask("v1", Element::new("query", ns::VERSION)))
        .await
        .unwrap();
    let r = c
        .next_matching(|e| e.attr("id") == Some("v1"))
        .await
        .unwrap();
    let q = r.get_child("query", ns::VERSION).unwrap();
    assert_eq!(q.child_text("name", ns::VERSION).as_deref(), Some("Aviary"));
    // XEP-0202
    c.send(&ask("t1", Element::new("time", ns::TIME)))
        .await
        .unwrap();
    let r = c
        .next_matching(|e| e.attr("id") == Some("t1"))
        .await
        .unwrap();
    let utc = r
        .get_child("time", ns::TIME)
        .unwrap()
        .child_text("utc", ns::TIME)
        .unwrap()
        .into_owned();
    assert!(utc.ends_with('Z') && utc.len() >= 20, "{utc}");
    // Unknown payload: service-unavailable (RFC 6120 §8.4).
    c.send(&ask("u1", Element::new("query", "urn:example:unknown")))
        .await
        .unwrap();
    let r = c
        .next_matching(|e| e.attr("id") == Some("u1"))
        .await
        .unwrap();
    assert_eq!(r.attr("type"), Some("error"));
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZAS)
    );
    // An iq without id is a bad request (RFC 6120 §8.2.3).
    c.send_xml("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await
        .unwrap();
    let r = c.next_matching(|e| e.name() == "iq").await.unwrap();
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("bad-request", ns::STANZAS)
    );
}

#[tokio::test]
async fn xep0077_registration_conflict_and_disabled() {
    let server = TestServer::start();
    let (user, _) = server.new_account("reg").await;
    let err = server.register(&user, "again").await.unwrap_err();
    assert!(format!("{err:#}").contains("conflict"), "{err:#}");

    let closed = TestServer::start_with(|c| c.registration.enabled = false);
    let mut c = RawClient::connect(closed.endpoint(0), &closed.domain)
        .await
        .unwrap();
    c.open().await.unwrap();
    let features = c.starttls().await.unwrap();
    assert!(
        features
            .get_child("register", ns::REGISTER_FEATURE)
            .is_none()
    );
    assert!(closed.register("someone", "pw").await.is_err());
}
