//! PLAIN exchanges (RFC 4616) verified against stored SCRAM keys.

// Test helpers outside #[test] functions: a panic there is a failed assertion too,
// as clippy.toml allows inside the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aviary_sasl::client::plain;
use aviary_sasl::{ChannelBindings, Failure, Mechanism, ServerSession, Step};
use common::{PASSWORD, USER, creds};

fn new_server() -> ServerSession {
    ServerSession::new(Mechanism::Plain, ChannelBindings::default(), false)
}

fn lookup(server: &mut ServerSession, message: &[u8]) -> Step {
    match server.step(message) {
        Step::NeedCredentials { username } => {
            assert_eq!(username, USER);
            assert!(server.credentials_check_is_expensive());
            server.provide_credentials(Some(creds()))
        }
        step => step,
    }
}

#[test]
fn correct_password_succeeds() {
    let mut server = new_server();
    assert_eq!(
        lookup(&mut server, &plain(None, USER, PASSWORD)),
        Step::Success {
            username: USER.into(),
            authzid: None,
            additional_data: None
        }
    );
}

#[test]
fn authzid_is_passed_through() {
    let mut server = new_server();
    assert_eq!(
        lookup(
            &mut server,
            &plain(Some("juliet@example.com"), USER, PASSWORD)
        ),
        Step::Success {
            username: USER.into(),
            authzid: Some("juliet@example.com".into()),
            additional_data: None
        }
    );
}

#[test]
fn password_is_saslprepped_like_the_stored_keys() {
    // U+00AD SOFT HYPHEN maps to nothing (RFC 4013 §2.2).
    let mut server = new_server();
    assert!(matches!(
        lookup(&mut server, &plain(None, USER, "pen\u{AD}cil")),
        Step::Success { .. }
    ));
}

#[test]
fn wrong_password_is_not_authorized() {
    for password in ["pencil2", "Pencil", "pencil ", "x"] {
        let mut server = new_server();
        assert_eq!(
            lookup(&mut server, &plain(None, USER, password)),
            Step::Failure(Failure::NotAuthorized),
            "{password:?}"
        );
    }
}

#[test]
fn unknown_user_is_not_authorized() {
    let mut server = new_server();
    assert!(matches!(
        server.step(&plain(None, "nobody", PASSWORD)),
        Step::NeedCredentials { .. }
    ));
    assert_eq!(
        server.provide_credentials(None),
        Step::Failure(Failure::NotAuthorized)
    );
}

#[test]
fn malformed_messages_are_malformed_request() {
    for bad in [
        &b"juliet"[..],
        b"\0juliet",
        b"\0juliet\0",
        b"\0\0pencil",
        b"a\0juliet\0pencil\0",
        b"\0juliet\0pencil\0extra",
        b"\xff\0juliet\0pencil",
        b"\0jul\xffiet\0pencil",
        b"\0juliet\0pen\xffcil",
        b"\0\x07\0pencil",
        b"\0\0\0",
    ] {
        let mut server = new_server();
        assert_eq!(
            server.step(bad),
            Step::Failure(Failure::MalformedRequest),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn empty_initial_response_then_message() {
    let mut server = new_server();
    assert_eq!(server.step(b""), Step::Challenge(Vec::new()));
    assert!(matches!(
        lookup(&mut server, &plain(None, USER, PASSWORD)),
        Step::Success { .. }
    ));

    let mut server = new_server();
    assert_eq!(server.step(b""), Step::Challenge(Vec::new()));
    assert_eq!(server.step(b""), Step::Failure(Failure::MalformedRequest));
}

#[test]
fn step_after_the_outcome_is_malformed() {
    let mut server = new_server();
    assert!(matches!(
        lookup(&mut server, &plain(None, USER, PASSWORD)),
        Step::Success { .. }
    ));
    assert_eq!(
        server.step(&plain(None, USER, PASSWORD)),
        Step::Failure(Failure::MalformedRequest)
    );

    let mut server = new_server();
    assert_eq!(
        server.step(b"junk"),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        server.step(&plain(None, USER, PASSWORD)),
        Step::Failure(Failure::MalformedRequest)
    );
}
