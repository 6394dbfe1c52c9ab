//! Aviary's benchmarks: criterion benchmarks of hot paths live in `benches/` (run them
//! with `cargo bench -p aviary-benches`); the [`loadgen`] module is the XMPP load
//! generator behind the `loadgen` binary (see `benches/README.md`).
#![forbid(unsafe_code)]

pub mod loadgen;
