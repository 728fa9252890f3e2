//! `manta-proto`: what every Manta process shares on the wire, below every other crate: the ids
//! (of nodes, objects, actors, jobs, workers and leases) with their one hex form, parsed
//! addresses, and every service's messages ([`gcs`], [`raylet`], [`worker`]: requests, replies,
//! records, errors), each a [`WireMessage`] with a stable id. A CLI, a dashboard or an operator
//! that talks to a cluster needs this crate and the transport, not the services' own crates.

pub mod gcs;
pub mod hex;
mod ids;
mod message;
pub mod placement;
pub mod raylet;
pub mod service;
pub mod worker;

pub use ids::{
    ActorId, JobId, LeaseId, NodeId, ObjectId, OwnerAddress, ParseIdError, PlacementGroupId, RandomError,
    WorkerId,
};
pub use message::{Message, WireMessage};
pub use service::{Accepts, Protocol};
