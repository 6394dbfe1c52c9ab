//! Shared fixtures for the integration tests: credentials derived once per test binary
//! (PBKDF2 is slow in debug builds) and a driver that runs a whole SCRAM exchange.
#![allow(dead_code)]

use std::sync::OnceLock;

use aviary_sasl::client::ScramClient;
use aviary_sasl::{ChannelBindings, Mechanism, ServerSession, Step, StoredCredentials};

pub const PASSWORD: &str = "pencil";
pub const USER: &str = "juliet";

/// Credentials for [`PASSWORD`], derived once.
pub fn creds() -> &'static StoredCredentials {
    static CREDS: OnceLock<StoredCredentials> = OnceLock::new();
    CREDS.get_or_init(|| StoredCredentials::derive(PASSWORD, aviary_sasl::MIN_ITERATIONS).unwrap())
}

pub fn exporter() -> Vec<u8> {
    (0u8..32).collect()
}

pub fn end_point() -> Vec<u8> {
    (100u8..132).collect()
}

/// A TLS 1.3 connection that can export both binding types.
pub fn both_bindings() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(exporter()),
        tls_server_end_point: Some(end_point()),
    }
}

/// How a driven exchange ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server said success and the client verified the server signature.
    Success {
        username: String,
        authzid: Option<String>,
    },
    /// The server failed at this step (1 = first message, 2 = credentials, 3 = final).
    Failure { at: u8, step: Step },
}

/// Runs a full exchange; `creds` is what the account lookup returns.
pub fn drive(
    mut client: ScramClient,
    server: &mut ServerSession,
    creds: Option<&StoredCredentials>,
) -> Outcome {
    let username = match server.step(&client.first()) {
        Step::NeedCredentials { username } => username,
        step => return Outcome::Failure { at: 1, step },
    };
    assert!(!username.is_empty());
    let server_first = match server.provide_credentials(creds) {
        Step::Challenge(data) => data,
        step => return Outcome::Failure { at: 2, step },
    };
    let client_final = client
        .respond(&server_first)
        .expect("client accepts server-first");
    match server.step(&client_final) {
        Step::Success {
            username,
            authzid,
            additional_data,
        } => {
            client
                .verify(&additional_data.expect("SCRAM success carries server-final"))
                .expect("server signature verifies");
            Outcome::Success { username, authzid }
        }
        step => Outcome::Failure { at: 3, step },
    }
}

/// A client and a server for `mech` on a connection with `cb`, where the server offered
/// -PLUS exactly when the connection has bindings. A client choosing a plain SCRAM
/// mechanism although -PLUS was offered cannot bind (RFC 5802 §6 would make it use
/// -PLUS otherwise), so it sends `n`.
pub fn pair(mech: Mechanism, password: &str, cb: &ChannelBindings) -> (ScramClient, ServerSession) {
    let client_cb = if mech.is_plus() {
        cb.clone()
    } else {
        ChannelBindings::default()
    };
    let client = ScramClient::new(mech, USER, password, &client_cb).unwrap();
    let server = ServerSession::new(mech, cb.clone(), !cb.is_empty());
    (client, server)
}
