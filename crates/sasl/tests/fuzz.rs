//! Property tests: no input makes the server, the credential decoder or the client
//! helper panic, and no garbage authenticates.

// Test helpers outside #[test] functions: a panic there is a failed assertion too,
// as clippy.toml allows inside the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aviary_sasl::client::ScramClient;
use aviary_sasl::{ChannelBindings, Failure, Mechanism, ServerSession, Step, StoredCredentials};
use common::{PASSWORD, USER, both_bindings, creds, pair};
use proptest::prelude::*;

fn any_mechanism() -> impl Strategy<Value = Mechanism> {
    proptest::sample::select(Mechanism::ALL.to_vec())
}

/// Byte strings biased towards SCRAM's alphabet, so mutations reach deep into parsing.
fn scramish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => proptest::sample::select(b"npyrcsiam=,2C3D0+/xyzAB-.tls".to_vec()),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..96)
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        scramish_bytes()
    ]
}

/// Applies byte edits (replace, insert, delete) to a valid message.
fn mutate(mut message: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in edits {
        let at = at % (message.len() + 1);
        match op % 3 {
            0 if at < message.len() => message[at] = byte,
            1 => message.insert(at, byte),
            _ if at < message.len() => {
                message.remove(at);
            }
            _ => {}
        }
    }
    message
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

proptest! {
    #[test]
    fn first_message_never_panics(
        mech in any_mechanism(),
        plus_offered in any::<bool>(),
        input in any_input(),
    ) {
        let mut server = ServerSession::new(mech, both_bindings(), plus_offered);
        match server.step(&input) {
            Step::NeedCredentials { username } => {
                prop_assert!(!username.is_empty());
                // Continue with and without an account: still no panic, never success
                // for SCRAM (no proof yet).
                let next = server.provide_credentials(Some(creds()));
                let success = matches!(next, Step::Success { .. });
                prop_assert!(mech == Mechanism::Plain || !success, "SCRAM success without proof");
            }
            Step::Challenge(data) => prop_assert!(input.is_empty() && data.is_empty()),
            Step::Failure(_) => {}
            Step::Success { .. } => prop_assert!(false, "success without credentials"),
        }
    }

    #[test]
    fn final_message_never_panics_nor_authenticates(
        mech in proptest::sample::select(vec![
            Mechanism::ScramSha1, Mechanism::ScramSha256,
            Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus,
        ]),
        input in any_input(),
    ) {
        let (client, mut server) = pair(mech, PASSWORD, &both_bindings());
        let lookup = matches!(server.step(&client.first()), Step::NeedCredentials { .. });
        prop_assert!(lookup, "valid client-first refused");
        let challenge = matches!(server.provide_credentials(Some(creds())), Step::Challenge(_));
        prop_assert!(challenge, "no server-first");
        let failed = matches!(server.step(&input), Step::Failure(_));
        prop_assert!(failed, "garbage client-final accepted");
        prop_assert_eq!(server.step(&input), Step::Failure(Failure::MalformedRequest));
    }

    #[test]
    fn mutated_exchanges_never_panic(
        mech in proptest::sample::select(vec![Mechanism::ScramSha256, Mechanism::ScramSha1Plus]),
        first_edits in proptest::option::of(edits()),
        final_edits in edits(),
    ) {
        let (mut client, mut server) = pair(mech, PASSWORD, &both_bindings());
        let first = match &first_edits {
            Some(e) => mutate(client.first(), e),
            None => client.first(),
        };
        let Step::NeedCredentials { .. } = server.step(&first) else { return Ok(()) };
        let Step::Challenge(server_first) = server.provide_credentials(Some(creds())) else {
            return Ok(());
        };
        let Ok(client_final) = client.respond(&server_first) else { return Ok(()) };
        let mutated = mutate(client_final.clone(), &final_edits);
        let outcome = server.step(&mutated);
        if mutated != client_final {
            let success = matches!(outcome, Step::Success { .. });
            prop_assert!(!success, "a mutated client-final succeeded");
        }
    }

    #[test]
    fn credential_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(creds) = StoredCredentials::from_bytes(&bytes) {
            prop_assert_eq!(creds.to_bytes(), bytes);
        }
    }

    #[test]
    fn credential_decoding_of_mutations_never_panics(e in edits()) {
        let bytes = mutate(creds().to_bytes(), &e);
        if let Ok(decoded) = StoredCredentials::from_bytes(&bytes) {
            prop_assert_eq!(decoded.to_bytes(), bytes);
        }
    }

    #[test]
    fn client_never_panics_on_server_messages(
        server_first in any_input(),
        server_final in any_input(),
    ) {
        let mut client =
            ScramClient::new(Mechanism::ScramSha1, USER, PASSWORD, &ChannelBindings::default())
                .unwrap()
                .with_nonce("abc");
        // Most inputs are rejected before PBKDF2; keep those that are not cheap.
        let server_first = if server_first.starts_with(b"r=abc") { b"r=abcd,s=QUJD,i=1".to_vec() } else { server_first };
        if client.respond(&server_first).is_ok() {
            prop_assert!(client.verify(&server_final).is_err());
        }
    }
}
