//! The `aviary` binary's library half: configuration, CLI commands, certificate
//! handling and the wiring of a node. Kept as a library so end-to-end tests can start
//! real nodes in-process.
#![forbid(unsafe_code)]

pub mod admin;
pub mod certs;
pub mod cli;
pub mod config;
pub mod entry;
pub mod ops;
pub mod server;

pub use config::Config;
