//! Benchmarks live in `benches/`; this empty library only gives the package a
//! target. Run them with `cargo bench -p aviary-benches`.
#![forbid(unsafe_code)]
