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

pub use manta_proto::WireMessage;

/// Encodes a message or a reply.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Bytes, AskError> {
    rmp_serde::to_vec(value).map(Bytes::from).map_err(|error| AskError::Codec(error.to_string()))
}

/// Decodes a message or a reply received from the network.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AskError> {
    rmp_serde::from_slice(bytes).map_err(|error| AskError::Codec(error.to_string()))
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
