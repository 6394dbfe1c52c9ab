//! Interoperability with a third-party Rust client: tokio-xmpp 6 (crates.io) over
//! STARTTLS with SCRAM, trusting the per-run test CA.

use aviary_tests::TestServer;
use aviary_tests::pki::TestPki;
use futures::StreamExt;
use std::str::FromStr;
use std::time::Duration;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::{Client, Event, Stanza};

const TIMEOUT: Duration = Duration::from_secs(15);

async fn online(server: &TestServer, user: &str, password: &str, resource: &str) -> (Client, Jid) {
    TestPki::get().trust_globally();
    let jid = Jid::from_str(&format!("{user}@{}/{resource}", server.domain)).unwrap();
    let dns = DnsConfig::addr(&server.endpoint(0).to_string());
    let mut client = Client::new_starttls(jid, password, dns, Default::default());
    let bound = tokio::time::timeout(TIMEOUT, async {
        loop {
            match client.next().await {
                Some(Event::Online { bound_jid, .. }) => return bound_jid,
                Some(Event::Disconnected(e)) => panic!("{user} disconnected: {e}"),
                Some(_) => {}
                None => panic!("{user}: stream ended before going online"),
            }
        }
    })
    .await
    .expect("login timed out");
    (client, bound)
}

async fn next_chat(client: &mut Client) -> Message {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match client.next().await {
                Some(Event::Stanza(Stanza::Message(m))) if m.type_ == MessageType::Chat => {
                    return m;
                }
                Some(Event::Disconnected(e)) => panic!("disconnected: {e}"),
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
    })
    .await
    .expect("no message arrived")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_xmpp_two_users_chat_both_ways_over_starttls_scram() {
    let server = TestServer::start();
    let (alice, apw) = server.new_account("alice").await;
    let (bob, bpw) = server.new_account("bob").await;
    let (mut a, a_jid) = online(&server, &alice, &apw, "tx-a").await;
    let (mut b, b_jid) = online(&server, &bob, &bpw, "tx-b").await;
    assert_eq!(a_jid.to_string(), format!("{alice}@localhost/tx-a"));

    let hello = Message::chat(b_jid.clone()).with_body(Lang::new(), "hello from tokio-xmpp".into());
    a.send_stanza(hello.into()).await.unwrap();
    let got = next_chat(&mut b).await;
    assert_eq!(
        got.from.as_ref(),
        Some(&a_jid),
        "RFC 6120 §8.1.2.1 stamped from"
    );
    assert_eq!(
        got.get_best_body(vec![]).unwrap().1,
        "hello from tokio-xmpp"
    );

    let reply = Message::chat(a_jid.clone()).with_body(Lang::new(), "and back".into());
    b.send_stanza(reply.into()).await.unwrap();
    let got = next_chat(&mut a).await;
    assert_eq!(got.from.as_ref(), Some(&b_jid));
    assert_eq!(got.get_best_body(vec![]).unwrap().1, "and back");

    a.send_end().await.unwrap();
    b.send_end().await.unwrap();
}

/// The high-level `Client` retries a failed login forever (it never surfaces the
/// error), so this drives tokio-xmpp's own connector and SASL step directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_xmpp_wrong_password_fails() {
    use tokio_xmpp::connect::{ServerConnector, StartTlsServerConnector};
    TestPki::get().trust_globally();
    let server = TestServer::start();
    let (user, password) = server.new_account("carol").await;
    let jid = Jid::from(BareJid::from_str(&format!("{user}@{}", server.domain)).unwrap());
    let attempt = |pw: String| {
        let jid = jid.clone();
        let user = user.clone();
        let dns = DnsConfig::addr(&server.endpoint(0).to_string());
        async move {
            let connector = StartTlsServerConnector::from(dns);
            let (stream, cb) = connector
                .connect(&jid, "jabber:client", Default::default())
                .await
                .expect("connect");
            let (features, stream) = stream.recv_features().await.expect("features");
            let creds = sasl::common::Credentials::default()
                .with_username(user)
                .with_password(pw)
                .with_channel_binding(cb);
            tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds).await
        }
    };
    let bad = tokio::time::timeout(TIMEOUT, attempt("wrong password".into()))
        .await
        .unwrap();
    match bad {
        Err(tokio_xmpp::Error::Auth(e)) => {
            assert!(
                e.to_string().contains("NotAuthorized"),
                "RFC 6120 §6.5.10: {e}"
            )
        }
        Err(e) => panic!("expected an authentication failure, got {e}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    // The same path succeeds with the right password, so the failure above is the
    // password's doing.
    let good = tokio::time::timeout(TIMEOUT, attempt(password))
        .await
        .unwrap();
    assert!(good.is_ok(), "right password rejected");
}
