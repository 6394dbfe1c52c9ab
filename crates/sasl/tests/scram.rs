//! SCRAM exchanges between the independent test client and the server: every
//! mechanism and binding type, and the ways an exchange must fail.

// Test helpers outside #[test] functions: a panic there is a failed assertion too,
// as clippy.toml allows inside the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aviary_sasl::client::{ClientBinding, ScramClient};
use aviary_sasl::{
    ChannelBindings, Decoy, Failure, Mechanism, ServerSession, Step, TLS_EXPORTER,
    TLS_SERVER_END_POINT,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Outcome, PASSWORD, USER, both_bindings, creds, drive, end_point, exporter, pair};

const SCRAM: [Mechanism; 2] = [Mechanism::ScramSha1, Mechanism::ScramSha256];
const PLUS: [Mechanism; 2] = [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus];

fn assert_success(outcome: Outcome) {
    match outcome {
        Outcome::Success { username, authzid } => {
            assert_eq!(username, USER);
            assert_eq!(authzid, None);
        }
        other => panic!("expected success, got {other:?}"),
    }
}

fn assert_failure(outcome: Outcome, at: u8, failure: Failure) {
    match outcome {
        Outcome::Failure { at: got_at, step } => {
            assert_eq!((got_at, step), (at, Step::Failure(failure)));
        }
        other => panic!("expected {failure} at step {at}, got {other:?}"),
    }
}

#[test]
fn plain_scram_without_bindings() {
    for mech in SCRAM {
        let (client, mut server) = pair(mech, PASSWORD, &ChannelBindings::default());
        assert_eq!(client.first()[0], b'n');
        assert_success(drive(client, &mut server, Some(creds())));
    }
}

#[test]
fn plain_scram_when_client_could_bind_but_plus_was_not_offered() {
    for mech in SCRAM {
        let cb = both_bindings();
        let client = ScramClient::new(mech, USER, PASSWORD, &cb).unwrap();
        assert_eq!(client.first()[0], b'y');
        let mut server = ServerSession::new(mech, cb, false);
        assert_success(drive(client, &mut server, Some(creds())));
    }
}

#[test]
fn plain_scram_with_n_flag_while_plus_offered() {
    for mech in SCRAM {
        let client = ScramClient::new(mech, USER, PASSWORD, &ChannelBindings::default()).unwrap();
        let mut server = ServerSession::new(mech, both_bindings(), true);
        assert_success(drive(client, &mut server, Some(creds())));
    }
}

#[test]
fn plus_with_each_binding_type() {
    let only_exporter = ChannelBindings {
        tls_exporter: Some(exporter()),
        tls_server_end_point: None,
    };
    let only_end_point = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(end_point()),
    };
    for mech in PLUS {
        for (cb, expected_flag) in [
            (&only_exporter, "p=tls-exporter,"),
            (&only_end_point, "p=tls-server-end-point,"),
            (&both_bindings(), "p=tls-exporter,"),
        ] {
            let (client, mut server) = pair(mech, PASSWORD, cb);
            assert!(client.first().starts_with(expected_flag.as_bytes()));
            assert_success(drive(client, &mut server, Some(creds())));
        }
        // A client may pick either type the connection has.
        let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
        let client = client.with_binding(ClientBinding::Use {
            name: TLS_SERVER_END_POINT.into(),
            data: end_point(),
        });
        assert_success(drive(client, &mut server, Some(creds())));
    }
}

#[test]
fn authzid_is_returned_unescaped_for_the_edge_to_check() {
    for mech in [Mechanism::ScramSha256, Mechanism::ScramSha1Plus] {
        let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
        let client = client.with_authzid("juliet@capulet,lit=");
        match drive(client, &mut server, Some(creds())) {
            Outcome::Success { username, authzid } => {
                assert_eq!(username, USER);
                assert_eq!(authzid.as_deref(), Some("juliet@capulet,lit="));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn wrong_password_is_not_authorized_at_the_end() {
    for mech in SCRAM.into_iter().chain(PLUS) {
        let (client, mut server) = pair(mech, "pencil2", &both_bindings());
        assert_failure(
            drive(client, &mut server, Some(creds())),
            3,
            Failure::NotAuthorized,
        );
    }
}

#[test]
fn wrong_binding_data_is_not_authorized() {
    for mech in PLUS {
        for (name, data) in [
            (TLS_EXPORTER, vec![0xAA; 32]),
            (TLS_EXPORTER, end_point()),
            (TLS_SERVER_END_POINT, exporter()),
            (TLS_EXPORTER, Vec::new()),
        ] {
            let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
            let client = client.with_binding(ClientBinding::Use {
                name: name.into(),
                data,
            });
            assert_failure(
                drive(client, &mut server, Some(creds())),
                3,
                Failure::NotAuthorized,
            );
        }
    }
}

#[test]
fn unavailable_binding_type_fails_before_the_lookup() {
    let only_end_point = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(end_point()),
    };
    for mech in PLUS {
        for name in ["tls-unique", TLS_EXPORTER] {
            let (client, mut server) = pair(mech, PASSWORD, &only_end_point);
            let client = client.with_binding(ClientBinding::Use {
                name: name.into(),
                data: exporter(),
            });
            assert_failure(
                drive(client, &mut server, Some(creds())),
                1,
                Failure::NotAuthorized,
            );
        }
    }
}

#[test]
fn y_flag_while_plus_offered_is_a_downgrade() {
    for mech in SCRAM {
        let cb = both_bindings();
        let client = ScramClient::new(mech, USER, PASSWORD, &cb).unwrap();
        let mut server = ServerSession::new(mech, cb, true);
        assert_failure(
            drive(client, &mut server, Some(creds())),
            1,
            Failure::NotAuthorized,
        );
    }
}

#[test]
fn binding_flag_must_match_the_mechanism() {
    for mech in PLUS {
        for binding in [ClientBinding::NotSupported, ClientBinding::NotAdvertised] {
            let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
            let client = client.with_binding(binding);
            assert_failure(
                drive(client, &mut server, Some(creds())),
                1,
                Failure::MalformedRequest,
            );
        }
    }
    for mech in SCRAM {
        let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
        let client = client.with_binding(ClientBinding::Use {
            name: TLS_EXPORTER.into(),
            data: exporter(),
        });
        assert_failure(
            drive(client, &mut server, Some(creds())),
            1,
            Failure::MalformedRequest,
        );
    }
}

/// Splits a server-first message into (nonce, salt, iterations).
fn server_first_parts(message: &[u8]) -> (String, Vec<u8>, u32) {
    let text = std::str::from_utf8(message).unwrap();
    let parts: Vec<&str> = text.split(',').collect();
    assert_eq!(parts.len(), 3, "{text}");
    (
        parts[0].strip_prefix("r=").unwrap().to_owned(),
        B64.decode(parts[1].strip_prefix("s=").unwrap()).unwrap(),
        parts[2].strip_prefix("i=").unwrap().parse().unwrap(),
    )
}

fn unknown_user_first(user: &str, decoy: Option<Decoy>) -> (String, Vec<u8>, u32) {
    let client =
        ScramClient::new(Mechanism::ScramSha256, user, PASSWORD, &Default::default()).unwrap();
    let mut server = ServerSession::new(Mechanism::ScramSha256, Default::default(), false);
    if let Some(decoy) = decoy {
        server = server.with_decoy(decoy);
    }
    assert!(matches!(
        server.step(&client.first()),
        Step::NeedCredentials { .. }
    ));
    let Step::Challenge(server_first) = server.provide_credentials(None) else {
        panic!("an unknown user must get a server-first message")
    };
    server_first_parts(&server_first)
}

#[test]
fn unknown_user_looks_like_a_real_account_until_the_proof() {
    let decoy = Decoy::new([42; 32], 12_345);
    let (_, salt_a, iterations) = unknown_user_first("nobody", Some(decoy.clone()));
    assert_eq!(iterations, 12_345);
    assert_eq!(salt_a.len(), aviary_sasl::SALT_LEN);
    // The same salt every time (a real account's salt does not change either), also from
    // another edge configured with the same secret...
    let (_, salt_again, _) = unknown_user_first("nobody", Some(Decoy::new([42; 32], 12_345)));
    assert_eq!(salt_a, salt_again);
    // ...but different per user and per secret.
    let (_, salt_b, _) = unknown_user_first("somebody", Some(decoy));
    assert_ne!(salt_a, salt_b);
    let (_, salt_c, _) = unknown_user_first("nobody", Some(Decoy::new([43; 32], 12_345)));
    assert_ne!(salt_a, salt_c);
    // The process default is stable too.
    assert_eq!(
        unknown_user_first("nobody", None).1,
        unknown_user_first("nobody", None).1
    );

    for mech in SCRAM.into_iter().chain(PLUS) {
        let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
        assert_failure(drive(client, &mut server, None), 3, Failure::NotAuthorized);
    }
}

#[test]
fn server_nonce_is_fresh_and_extends_the_client_nonce() {
    let nonce = |_| {
        let (client, mut server) = pair(
            Mechanism::ScramSha256,
            PASSWORD,
            &ChannelBindings::default(),
        );
        let client = client.with_nonce("clientnonce");
        server.step(&client.first());
        let Step::Challenge(sf) = server.provide_credentials(Some(creds())) else {
            panic!()
        };
        server_first_parts(&sf).0
    };
    let (a, b) = (nonce(0), nonce(1));
    assert!(a.starts_with("clientnonce") && a.len() > "clientnonce".len());
    assert_ne!(a, b);
}

/// Runs up to the client-final message and returns it with the server waiting for it.
fn up_to_final(mech: Mechanism) -> (Vec<u8>, ServerSession, ScramClient) {
    let (mut client, mut server) = pair(mech, PASSWORD, &both_bindings());
    assert!(matches!(
        server.step(&client.first()),
        Step::NeedCredentials { .. }
    ));
    let Step::Challenge(sf) = server.provide_credentials(Some(creds())) else {
        panic!()
    };
    let client_final = client.respond(&sf).unwrap();
    (client_final, server, client)
}

fn replace_attr(message: &[u8], attr: &str, value: &str) -> Vec<u8> {
    let text = std::str::from_utf8(message).unwrap();
    text.split(',')
        .map(|p| {
            if p.starts_with(attr) {
                format!("{attr}{value}")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

#[test]
fn tampered_client_final_is_not_authorized() {
    let (good, ..) = up_to_final(Mechanism::ScramSha256);
    let text = String::from_utf8(good.clone()).unwrap();
    let nonce = text
        .split(',')
        .nth(1)
        .unwrap()
        .strip_prefix("r=")
        .unwrap()
        .to_owned();
    let proof = B64
        .decode(text.rsplit(',').next().unwrap().strip_prefix("p=").unwrap())
        .unwrap();
    let mut flipped = proof.clone();
    flipped[0] ^= 1;
    for bad in [
        replace_attr(&good, "r=", &format!("{nonce}x")),
        replace_attr(&good, "r=", &nonce[..nonce.len() - 1]),
        replace_attr(&good, "p=", &B64.encode(&flipped)),
        replace_attr(&good, "p=", &B64.encode(&proof[..16])),
        // The binding of another header: the client-first said n,,.
        replace_attr(&good, "c=", &B64.encode(b"y,,")),
        replace_attr(&good, "c=", "biws"),
    ] {
        let (_, mut server, _) = up_to_final(Mechanism::ScramSha256);
        assert_eq!(
            server.step(&bad),
            Step::Failure(Failure::NotAuthorized),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
}

#[test]
fn replayed_client_final_is_not_authorized() {
    let (old_final, ..) = up_to_final(Mechanism::ScramSha1);
    let (_, mut server, _) = up_to_final(Mechanism::ScramSha1);
    assert_eq!(
        server.step(&old_final),
        Step::Failure(Failure::NotAuthorized)
    );
}

#[test]
fn malformed_client_final_is_malformed_request() {
    for bad in [
        &b"garbage"[..],
        // Each of these panics inside rsasl 2.3.1's ClientFinal::parse.
        b"c",
        b"c=biws,r",
        b"c=biws,r=x,p",
        b"c=biws",
        b"c=biws,r=x,p=AAAA,x=extension",
        b"c=biws,r=x,e=ext,p=AAAA",
        b"c=b,r=x,p=AAAA",
        b"c=biws,r=x,p=!!!!",
        b"\0\0\0",
    ] {
        let (_, mut server, _) = up_to_final(Mechanism::ScramSha256);
        assert_eq!(server.step(bad), Step::Failure(Failure::MalformedRequest));
    }
}

#[test]
fn malformed_client_first_is_malformed_request() {
    for bad in [
        // rsasl 2.3.1 panics on the first two and reads "zz" as an authzid in the third;
        // the strict parser in front of it must stop all of them.
        &b"n,,n"[..],
        b"n,a,n=u,r=x",
        b"n,b=zz,n=u,r=x",
        b"n,,n=juliet",
        b"n,,m=ext,n=juliet,r=abc",
        b"n,,n=juliet,r=abc,x=extension",
        b"n,a,n=juliet,r=abc",
        b"n,a=\xff\xfe,n=juliet,r=abc",
        b"n,,n=jul=iet,r=abc",
        b"q,,n=juliet,r=abc",
        b"n,,n=\xc3\x28,r=abc",
    ] {
        let mut server = ServerSession::new(Mechanism::ScramSha256, Default::default(), false);
        assert_eq!(
            server.step(bad),
            Step::Failure(Failure::MalformedRequest),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn username_is_unescaped_and_prepared_before_the_lookup() {
    let mut server = ServerSession::new(Mechanism::ScramSha1, Default::default(), false);
    assert_eq!(
        server.step("n,,n=I\u{AD}X=2C=3D,r=abc".as_bytes()),
        Step::NeedCredentials {
            username: "IX,=".into()
        }
    );

    let client = ScramClient::new(
        Mechanism::ScramSha256,
        "a,b=c",
        PASSWORD,
        &Default::default(),
    )
    .unwrap();
    let mut server = ServerSession::new(Mechanism::ScramSha256, Default::default(), false);
    match drive(client, &mut server, Some(creds())) {
        Outcome::Success { username, .. } => assert_eq!(username, "a,b=c"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_initial_response_gets_an_empty_challenge_once() {
    let (client, mut server) = pair(
        Mechanism::ScramSha256,
        PASSWORD,
        &ChannelBindings::default(),
    );
    assert_eq!(server.step(b""), Step::Challenge(Vec::new()));
    assert_success(drive(client, &mut server, Some(creds())));

    let mut server = ServerSession::new(Mechanism::ScramSha256, Default::default(), false);
    assert_eq!(server.step(b""), Step::Challenge(Vec::new()));
    assert_eq!(server.step(b""), Step::Failure(Failure::MalformedRequest));
}

#[test]
fn calls_out_of_order_end_the_exchange() {
    // Step after success.
    let (client_final, mut server, _) = up_to_final(Mechanism::ScramSha256);
    assert!(matches!(server.step(&client_final), Step::Success { .. }));
    assert_eq!(
        server.step(&client_final),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        server.provide_credentials(Some(creds())),
        Step::Failure(Failure::MalformedRequest)
    );

    // Step after failure.
    let (_, mut server, _) = up_to_final(Mechanism::ScramSha256);
    assert_eq!(
        server.step(b"junk"),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        server.step(b"c=biws,r=a,p=AAAA"),
        Step::Failure(Failure::MalformedRequest)
    );

    // Credentials before the first message; a step while the lookup is pending.
    let (client, mut server) = pair(Mechanism::ScramSha1, PASSWORD, &ChannelBindings::default());
    assert_eq!(
        server.provide_credentials(Some(creds())),
        Step::Failure(Failure::MalformedRequest)
    );
    let mut server2 = ServerSession::new(Mechanism::ScramSha1, Default::default(), false);
    assert!(matches!(
        server2.step(&client.first()),
        Step::NeedCredentials { .. }
    ));
    assert_eq!(
        server2.step(&client.first()),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        server2.provide_credentials(Some(creds())),
        Step::Failure(Failure::MalformedRequest)
    );
    drop(server);

    // Abort.
    let (client, mut server) = pair(Mechanism::ScramSha1, PASSWORD, &ChannelBindings::default());
    assert!(matches!(
        server.step(&client.first()),
        Step::NeedCredentials { .. }
    ));
    assert_eq!(server.abort(), Step::Failure(Failure::Aborted));
    assert_eq!(
        server.provide_credentials(Some(creds())),
        Step::Failure(Failure::MalformedRequest)
    );
}

#[test]
fn corrupt_stored_keys_are_a_temporary_failure() {
    let mut broken = creds().clone();
    broken.sha256.stored_key.pop();
    let (client, mut server) = pair(
        Mechanism::ScramSha256,
        PASSWORD,
        &ChannelBindings::default(),
    );
    assert_failure(
        drive(client, &mut server, Some(&broken)),
        2,
        Failure::TemporaryAuthFailure,
    );

    // The other hash is unaffected.
    let (client, mut server) = pair(Mechanism::ScramSha1, PASSWORD, &ChannelBindings::default());
    assert_success(drive(client, &mut server, Some(&broken)));
}

#[test]
fn scram_credentials_check_is_cheap() {
    let (client, mut server) = pair(
        Mechanism::ScramSha256,
        PASSWORD,
        &ChannelBindings::default(),
    );
    assert_eq!(server.mechanism(), Mechanism::ScramSha256);
    server.step(&client.first());
    assert!(!server.credentials_check_is_expensive());
}

#[test]
fn sessions_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ServerSession>();
    send_sync::<ScramClient>();
    send_sync::<aviary_sasl::StoredCredentials>();
    send_sync::<Step>();
}
