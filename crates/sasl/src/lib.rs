//! Server-side SASL for XMPP (RFC 6120 §6) as a pure, sans-IO state machine:
//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), their channel-binding `-PLUS`
//! variants with `tls-exporter` (RFC 9266) and `tls-server-end-point` (RFC 5929), and
//! PLAIN (RFC 4616).
//!
//! The SCRAM and PLAIN mechanisms themselves run in [rsasl]; this crate adapts them to
//! an XMPP edge: it pauses for the asynchronous account lookup ([`Step::NeedCredentials`]),
//! validates every client message before rsasl sees it (so no input can panic), detects
//! channel-binding downgrades, answers unknown accounts with a decoy instead of an early
//! failure, and maps outcomes to RFC 6120 §6.5 conditions. The edge owns sockets,
//! base64 and XML; accounts store [`StoredCredentials`], never passwords.
//!
//! ```
//! use aviary_sasl::client::ScramClient;
//! use aviary_sasl::*;
//!
//! let cb = ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: None };
//! let offered = offered_mechanisms(true, &cb, false);
//! let mech = offered[0]; // SCRAM-SHA-256-PLUS
//! // On a blocking thread in real code: PBKDF2.
//! let creds = StoredCredentials::derive("pencil", 4096)?;
//!
//! let mut client = ScramClient::new(mech, "juliet", "pencil", &cb)?;
//! let mut server = ServerSession::new(mech, cb.clone(), offered.iter().any(|m| m.is_plus()));
//! assert_eq!(server.step(&client.first()), Step::NeedCredentials { username: "juliet".into() });
//! let Step::Challenge(server_first) = server.provide_credentials(Some(&creds)) else { panic!() };
//! let client_final = client.respond(&server_first)?;
//! let Step::Success { username, additional_data: Some(server_final), .. } =
//!     server.step(&client_final) else { panic!() };
//! assert_eq!(username, "juliet");
//! client.verify(&server_final)?;
//! # Ok::<(), aviary_sasl::SaslError>(())
//! ```
//!
//! [rsasl]: https://docs.rs/rsasl
#![forbid(unsafe_code)]

mod backend;
pub mod client;
mod credentials;
mod error;
mod mechanism;
mod scram_msg;
mod server;

pub use credentials::{
    Decoy, MIN_ITERATIONS, RECOMMENDED_ITERATIONS, SALT_LEN, ScramKeys, StoredCredentials,
};
pub use error::{Failure, SaslError};
pub use mechanism::{
    ChannelBindings, Mechanism, TLS_EXPORTER, TLS_SERVER_END_POINT, offered_mechanisms,
};
pub use server::{ServerSession, Step};
