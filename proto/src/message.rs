//! What makes a type a wire message: serde, a reply type, and a stable id that names it on
//! the wire ([`WireMessage`], declared with [`wire_message!`](crate::wire_message)).

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use actix::Message;

/// A message that can be sent to a remote actor.
///
/// `ID` must be unique among the messages one actor accepts and must never change once
/// released: it is how a peer built from another version of the code names the message.
pub trait WireMessage:
    actix::Message<Result: Serialize + DeserializeOwned + Send> + Serialize + DeserializeOwned + Send + 'static
{
    /// The stable id of this message type.
    const ID: u32;
    /// Whether the handler *parks* the message: it answers when something happens later (a
    /// watch, a request queued for resources), not when the actor is done with it. A parked
    /// message holds its place in the actor's mailbox only until it is enqueued, so waiting
    /// watchers never fill the mailbox and starve the messages that would end their wait. The
    /// number of parked messages is bounded by their callers (one per watched thing).
    const PARKS: bool = false;
}

/// Declares a wire message: its reply type and its stable id.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Add(i64);
/// manta_proto::wire_message!(Add => i64, id = 1);
/// # #[derive(Serialize, Deserialize)]
/// # struct WaitFor(u64);
/// // Answered when something happens later: holds no mailbox place while it waits.
/// manta_proto::wire_message!(WaitFor => bool, id = 2, parks);
/// ```
#[macro_export]
macro_rules! wire_message {
    ($message:ty => $reply:ty, id = $id:expr) => {
        impl $crate::Message for $message {
            type Result = $reply;
        }
        impl $crate::WireMessage for $message {
            const ID: u32 = $id;
        }
    };
    ($message:ty => $reply:ty, id = $id:expr, parks) => {
        impl $crate::Message for $message {
            type Result = $reply;
        }
        impl $crate::WireMessage for $message {
            const ID: u32 = $id;
            const PARKS: bool = true;
        }
    };
}
