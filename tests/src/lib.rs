//! Shared machinery for Aviary's end-to-end tests: the test PKI, the server fixture,
//! and a raw protocol client. The tests themselves live in `tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;
pub mod fixture;
pub mod http;
pub mod im;
pub mod pki;
pub mod raw;

pub use fixture::TestServer;
pub use im::{Account, Client, RosterItem, settle};
pub use raw::RawClient;
