//! The example exchanges of RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256).
//!
//! The client reproduces them byte for byte. The server cannot be given a fixed nonce:
//! rsasl draws its 24-character server nonce from `rand::thread_rng()` inside the
//! mechanism, with no hook to replace it (and the RFC nonces are 18 and 30 characters).
//! So the server side is checked as far as a random nonce allows: its server-first
//! message is exact apart from the nonce, the stored keys reproduce the RFC's server
//! signature and accept the RFC's client proof, and the RFC client completes an
//! exchange against the server.

// Test helpers outside #[test] functions: a panic there is a failed assertion too,
// as clippy.toml allows inside the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aviary_sasl::client::ScramClient;
use aviary_sasl::{ChannelBindings, Mechanism, ServerSession, Step, StoredCredentials};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Digest;

struct Vector {
    mech: Mechanism,
    client_nonce: &'static str,
    salt_b64: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
}

const RFC5802: Vector = Vector {
    mech: Mechanism::ScramSha1,
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    salt_b64: "QSXCR+Q6sek8bf92",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

const RFC7677: Vector = Vector {
    mech: Mechanism::ScramSha256,
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

fn client(v: &Vector) -> ScramClient {
    ScramClient::new(v.mech, "user", "pencil", &ChannelBindings::default())
        .unwrap()
        .with_nonce(v.client_nonce)
}

/// Credentials as the RFC's server holds them (same salt for both hashes: each vector
/// uses only one).
fn rfc_creds(v: &Vector) -> StoredCredentials {
    let salt = B64.decode(v.salt_b64).unwrap();
    StoredCredentials::derive_with_salts("pencil", 4096, &salt, &salt).unwrap()
}

fn client_reproduces(v: &Vector) {
    let mut client = client(v);
    assert_eq!(String::from_utf8(client.first()).unwrap(), v.client_first);
    let client_final = client.respond(v.server_first.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(client_final).unwrap(), v.client_final);
    client.verify(v.server_final.as_bytes()).unwrap();
}

#[test]
fn rfc5802_client_messages() {
    client_reproduces(&RFC5802);
}

#[test]
fn rfc7677_client_messages() {
    client_reproduces(&RFC7677);
}

#[test]
fn client_rejects_a_forged_server_signature() {
    let mut client = client(&RFC7677);
    client.respond(RFC7677.server_first.as_bytes()).unwrap();
    let forged = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(
        client.verify(forged.as_bytes()),
        Err(aviary_sasl::SaslError::ServerSignatureMismatch)
    );
}

fn hmac(mech: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mech {
        Mechanism::ScramSha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// The keys `derive` stores must produce the RFC's ServerSignature and accept the RFC's
/// ClientProof for the RFC's AuthMessage (RFC 5802 §3).
fn stored_keys_match(v: &Vector) {
    let creds = rfc_creds(v);
    let keys = match v.mech {
        Mechanism::ScramSha1 => &creds.sha1,
        _ => &creds.sha256,
    };
    let bare = &v.client_first[3..];
    let without_proof = &v.client_final[..v.client_final.find(",p=").unwrap()];
    let auth_message = format!("{bare},{},{without_proof}", v.server_first);

    let server_signature = hmac(v.mech, &keys.server_key, auth_message.as_bytes());
    assert_eq!(
        format!("v={}", B64.encode(server_signature)),
        v.server_final
    );

    let proof = B64
        .decode(&v.client_final[v.client_final.find(",p=").unwrap() + 3..])
        .unwrap();
    let client_signature = hmac(v.mech, &keys.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    let stored_key = match v.mech {
        Mechanism::ScramSha1 => sha1::Sha1::digest(&client_key).to_vec(),
        _ => sha2::Sha256::digest(&client_key).to_vec(),
    };
    assert_eq!(stored_key, keys.stored_key);
}

#[test]
fn rfc5802_stored_keys() {
    stored_keys_match(&RFC5802);
}

#[test]
fn rfc7677_stored_keys() {
    stored_keys_match(&RFC7677);
}

/// The server answers the RFC's client-first with the RFC's server-first apart from the
/// server half of the nonce, then accepts the RFC client.
fn server_follows(v: &Vector) {
    let creds = rfc_creds(v);
    let mut server = ServerSession::new(v.mech, ChannelBindings::default(), false);
    assert_eq!(
        server.step(v.client_first.as_bytes()),
        Step::NeedCredentials {
            username: "user".into()
        }
    );
    let Step::Challenge(server_first) = server.provide_credentials(Some(&creds)) else {
        panic!("expected server-first")
    };
    let server_first = String::from_utf8(server_first).unwrap();
    let prefix = format!("r={}", v.client_nonce);
    let suffix = format!(",s={},i=4096", v.salt_b64);
    let server_nonce = server_first
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(&suffix))
        .unwrap_or_else(|| panic!("unexpected server-first {server_first}"));
    assert_eq!(server_nonce.len(), 24);
    assert!(
        server_nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
    );

    let mut client = client(v);
    let client_final = client.respond(server_first.as_bytes()).unwrap();
    let Step::Success {
        username,
        authzid,
        additional_data: Some(server_final),
    } = server.step(&client_final)
    else {
        panic!("expected success")
    };
    assert_eq!((username.as_str(), authzid), ("user", None));
    client.verify(&server_final).unwrap();
}

#[test]
fn rfc5802_server_exchange() {
    server_follows(&RFC5802);
}

#[test]
fn rfc7677_server_exchange() {
    server_follows(&RFC7677);
}
