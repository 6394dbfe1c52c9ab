//! Hot paths other than framing (issue 6): serialising a stanza for the socket, the
//! user logic a chat message runs through on its recipient's actor, and
//! authentication (a whole SCRAM exchange, and PLAIN's check against stored SCRAM
//! keys, which is one PBKDF2 on the server).
//!
//! Run with `cargo bench -p aviary-benches --bench hot_paths`.
// The inputs are constants: failing on them means a broken benchmark.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use aviary_im::blocking::BlockList;
use aviary_im::roster::Roster;
use aviary_im::user::{Action, Settings, User};
use aviary_sasl::client::ScramClient;
use aviary_sasl::{ChannelBindings, Mechanism, ServerSession, Step, StoredCredentials};
use aviary_xmpp::{BareJid, Element, Jid, Stanza, StanzaKind, ns, writer};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

fn chat(from: &str, to: &str) -> Stanza {
    let mut st = Stanza::new(
        StanzaKind::Message,
        Some(Jid::new(to).unwrap()),
        Some(Jid::new(from).unwrap()),
    );
    st.set_type_attr("chat");
    st.set_id("ktx72v49");
    st.element_mut().append_child(
        Element::new("body", ns::CLIENT).with_text("Art thou not Romeo, and a Montague?"),
    );
    st
}

fn serialise(c: &mut Criterion) {
    let st = chat("romeo@montague.lit/orchard", "juliet@capulet.lit/balcony");
    let mut g = c.benchmark_group("serialise");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chat message", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            writer::write_stanza(black_box(&st), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// Juliet online with one available resource, as her actor holds her.
fn juliet() -> User<u64> {
    let mut user = User::new(
        BareJid::new("juliet@capulet.lit").unwrap(),
        Arc::new(Settings::default()),
        true,
        Roster::new(1),
        BlockList::default(),
    );
    let mut out = Vec::new();
    user.bind("balcony", 1, 1, &mut out).expect("bind");
    let presence = Stanza::new(
        StanzaKind::Presence,
        None,
        Some(Jid::new("juliet@capulet.lit/balcony").unwrap()),
    );
    user.outbound(presence, &mut out);
    user
}

fn user_logic(c: &mut Criterion) {
    let mut g = c.benchmark_group("user logic");
    g.throughput(Throughput::Elements(1));
    for (name, to) in [
        ("chat to the full JID", "juliet@capulet.lit/balcony"),
        ("chat to the bare JID", "juliet@capulet.lit"),
    ] {
        let mut user = juliet();
        let st = chat("romeo@montague.lit/orchard", to);
        g.bench_function(name, |b| {
            let mut out: Vec<Action<u64>> = Vec::with_capacity(4);
            b.iter_batched(
                || st.clone(),
                |st| {
                    out.clear();
                    user.inbound(st, &mut out);
                    assert!(matches!(out.first(), Some(Action::Deliver(1, _))));
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn authentication(c: &mut Criterion) {
    let iterations = aviary_sasl::MIN_ITERATIONS;
    let creds = StoredCredentials::derive("pencil", iterations).expect("derive");
    let mut g = c.benchmark_group("authentication");
    g.sample_size(20);
    // The client's half of SCRAM (one PBKDF2) is in this figure too: the server's
    // own share is a few HMACs and hashes.
    g.bench_function(
        format!("SCRAM-SHA-256 exchange, {iterations} iterations"),
        |b| {
            b.iter(|| {
                let cb = ChannelBindings::default();
                let mut client =
                    ScramClient::new(Mechanism::ScramSha256, "juliet", "pencil", &cb).unwrap();
                let mut server = ServerSession::new(Mechanism::ScramSha256, cb, false);
                assert!(matches!(
                    server.step(&client.first()),
                    Step::NeedCredentials { .. }
                ));
                let Step::Challenge(first) = server.provide_credentials(Some(&creds)) else {
                    panic!("no server-first");
                };
                let last = client.respond(&first).unwrap();
                let Step::Success {
                    additional_data, ..
                } = server.step(&last)
                else {
                    panic!("no success");
                };
                client.verify(&additional_data.unwrap()).unwrap();
            })
        },
    );
    // PLAIN against stored SCRAM keys: the server runs PBKDF2 itself.
    g.bench_function(format!("PLAIN check, {iterations} iterations"), |b| {
        b.iter(|| assert!(creds.verify_plain(black_box("pencil"))))
    });
    g.finish();
}

criterion_group!(benches, serialise, user_logic, authentication);
criterion_main!(benches);
