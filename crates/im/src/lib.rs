//! RFC 6121 rules as plain data structures and functions.
//!
//! A user actor owns one [`user::User`] per bare JID and feeds it every event
//! (a bind, a stanza from one of the user's clients, a stanza addressed to the user);
//! the struct decides and returns [`user::Action`]s for the actor to carry out. No
//! I/O and no actor runtime here, so every rule is unit-tested directly and the same
//! logic serves the single-process and the clustered deployments.
#![forbid(unsafe_code)]

pub mod blocking;
pub mod datetime;
pub mod roster;
pub mod subscription;
pub mod user;
