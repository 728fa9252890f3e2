//! `manta-proto`: what every Manta process shares on the wire, below every other crate: the ids
//! (of nodes, objects, actors, jobs, workers and leases) with their one hex form, and parsed
//! addresses. A CLI, a dashboard or an operator that talks to a cluster needs this crate and the
//! transport, not the services' own crates.

pub mod hex;
mod ids;

pub use ids::{ActorId, JobId, LeaseId, NodeId, ObjectId, OwnerAddress, ParseIdError, RandomError, WorkerId};
