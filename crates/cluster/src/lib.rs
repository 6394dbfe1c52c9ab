//! The cluster layer.
#![forbid(unsafe_code)]

pub mod codec;
pub mod edge;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod ring;
pub mod server;
pub mod shards;
pub mod view;

/// Code generated from `proto/aviary/cluster/v1/cluster.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("aviary.cluster.v1");
}
