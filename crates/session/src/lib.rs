//! The session layer: one actix actor per bare JID (the single writer of that user's
//! live state), the registry that finds and starts them, the stanzas the server
//! answers itself, and the in-process [`aviary_router::Router`].
#![forbid(unsafe_code)]

pub mod actor;
pub mod cluster;
pub mod metrics;
mod persist;
pub mod router;
pub mod server;
pub mod users;

pub use aviary_im::user::Settings;
pub use router::LocalRouter;
pub use server::{ServerInfo, SoftwareVersion};
pub use users::Users;
