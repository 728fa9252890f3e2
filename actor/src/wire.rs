//! Messages that cross a process boundary.
//!
//! A message type sent to a remote actor is a wire type: plain data that derives `Serialize`
//! and `Deserialize`, with a stable numeric id that names it on the wire. Internal state never
//! crosses; components convert between their internal types and their wire types by hand.
//! Message and reply bodies are MessagePack; byte payloads should use `serde_bytes`.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::AskError;

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

/// Encodes a message or a reply.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, AskError> {
    rmp_serde::to_vec(value).map(Bytes::from).map_err(|error| AskError::Codec(error.to_string()))
}

/// Decodes a message or a reply received from the network.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AskError> {
    rmp_serde::from_slice(bytes).map_err(|error| AskError::Codec(error.to_string()))
}

/// Declares a wire message: its reply type and its stable id.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Add(i64);
/// manta_actor::wire_message!(Add => i64, id = 1);
/// # #[derive(Serialize, Deserialize)]
/// # struct WaitFor(u64);
/// // Answered when something happens later: holds no mailbox place while it waits.
/// manta_actor::wire_message!(WaitFor => bool, id = 2, parks);
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

/// Declares a message that stays in its process (no serde, no id): only its reply type.
///
/// ```
/// struct Tick;
/// manta_actor::local_message!(Tick => ());
/// ```
#[macro_export]
macro_rules! local_message {
    ($message:ty => $reply:ty) => {
        impl $crate::Message for $message {
            type Result = $reply;
        }
    };
}
