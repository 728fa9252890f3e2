//! Manta's actor bus: actix actors made location-transparent over the QUIC transport.
//!
//! - [`spawn`] runs an actor under a supervisor (restarts after a panic, bounded mailbox) and
//!   returns a [`LocalRef`].
//! - [`Node`] is a process's presence on the bus: it registers local actors under names
//!   ([`Node::register`] with [`Routes`]) and resolves [`ActorAddress`]es (`node/name`) to
//!   [`ActorRef`]s, local or remote, which take the same `ask`/`tell` calls.
//! - Messages that cross processes implement [`WireMessage`] (serde + a stable id).
//!
//! This crate is the seam between Manta and actix: the rest of Manta uses the actix items
//! re-exported here and nothing else of actix.

mod address;
mod bulk;
mod error;
mod local;
mod node;
mod recipient;
mod remote;
mod service;
pub mod wire;

pub use actix::fut::WrapFuture;
pub use actix::{
    Actor, ActorContext, AsyncContext, AtomicResponse, Context, Handler, Message, MessageResult,
    ResponseActFuture, ResponseFuture,
};
pub use actix_rt::{Arbiter, ArbiterHandle, System};
pub use address::{ActorAddress, ParseAddressError};
pub use bulk::OutgoingBulk;
pub use error::{AskError, RegisterError};
pub use local::{panic_message, spawn, Admitted, LocalRef, SpawnOptions};
pub use manta_proto::wire_message;
pub use manta_proto::{Accepts, Protocol};
pub use node::{Node, Reply, Routes};
pub use recipient::Recipient;
pub use remote::{ActorRef, AnswerFuture};
pub use service::ServiceRef;
pub use wire::WireMessage;

/// Starts a thread running an actix system of its own and returns its arbiter, on which actors
/// can be spawned. Independent of any system the caller runs.
pub fn start_arbiter(name: &str) -> std::io::Result<ArbiterHandle> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let system = actix_rt::System::new();
        let _ = ready_tx.send(system.block_on(async { actix_rt::Arbiter::current() }));
        let _ = system.run();
    })?;
    ready_rx.recv().map_err(|_| std::io::Error::other("the arbiter thread died while starting"))
}
