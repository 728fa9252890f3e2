//! The ids of a cluster's things. Byte ids (nodes, objects, actors) are shown as lower-case hex
//! and travel as a MessagePack `bin` of their exact length, never an array of integers; counter
//! ids (jobs, workers, leases) are numbers. Every id parses back from what it displays.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not the text of an id (or of an address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid {what}")]
pub struct ParseIdError {
    /// What was expected.
    pub what: &'static str,
    /// What was given.
    pub text: String,
}

/// The operating system's secure random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system's secure random source failed")]
pub struct RandomError;

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// A fresh random id from the operating system's secure random source.
            pub fn random() -> Result<Self, RandomError> {
                let mut bytes = [0u8; $len];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                    .map_err(|_| RandomError)?;
                Ok($name(bytes))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
                let array: [u8; $len] = bytes.as_slice().try_into().map_err(|_| {
                    serde::de::Error::invalid_length(bytes.len(), &concat!(stringify!($len), " bytes"))
                })?;
                Ok($name(array))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&crate::hex::encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                crate::hex::decode_array::<$len>(text)
                    .map($name)
                    .ok_or_else(|| ParseIdError { what: $what, text: text.to_owned() })
            }
        }
    };
}

macro_rules! counter_id {
    ($(#[$doc:meta])* $name:ident($int:ty), $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map($name).map_err(|_| ParseIdError { what: $what, text: text.to_owned() })
            }
        }
    };
}

byte_id!(
    /// A 128-bit identifier of a node or client of a cluster, bound to its certificate; 32 hex
    /// digits.
    NodeId, 16, "node id (32 hex digits)"
);
byte_id!(
    /// An actor's id; 32 hex digits.
    ActorId, 16, "actor id (32 hex digits)"
);
byte_id!(
    /// A placement group's id; 32 hex digits.
    PlacementGroupId, 16, "placement group id (32 hex digits)"
);
byte_id!(
    /// An object's id: its owner's prefix and a counter; 40 hex digits.
    ObjectId, 20, "object id (40 hex digits)"
);
impl ObjectId {
    /// The id of an object its owner numbered `counter`: the owner's 12-byte prefix, then the
    /// counter, big-endian.
    pub fn from_parts(prefix: [u8; 12], counter: u64) -> ObjectId {
        let mut id = [0u8; 20];
        id[..12].copy_from_slice(&prefix);
        id[12..].copy_from_slice(&counter.to_be_bytes());
        ObjectId(id)
    }

    /// The owner's counter in this id (see [`ObjectId::from_parts`]).
    pub fn counter(&self) -> u64 {
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&self.0[12..]);
        u64::from_be_bytes(counter)
    }

    /// The id `n` after this one from the same owner: a task's return `n` when this is its
    /// first (an owner numbers a task's returns consecutively).
    pub fn following(&self, n: u64) -> ObjectId {
        let mut prefix = [0u8; 12];
        prefix.copy_from_slice(&self.0[..12]);
        ObjectId::from_parts(prefix, self.counter().wrapping_add(n))
    }
}

counter_id!(
    /// A job (one driver's run), numbered by the GCS from 1.
    JobId(u32), "job id"
);
counter_id!(
    /// A worker process of a node, numbered by its raylet.
    WorkerId(u64), "worker id"
);
counter_id!(
    /// A lease request, numbered by the raylet that received it.
    LeaseId(u64), "lease id"
);

/// Where an object's owner serves it: the transport address of the owning process, parsed once
/// where it enters (from a peer, a file, the user) and carried parsed. On the wire it is the
/// `host:port` text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerAddress(pub SocketAddr);

impl fmt::Display for OwnerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for OwnerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerAddress({})", self.0)
    }
}

impl FromStr for OwnerAddress {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse()
            .map(OwnerAddress)
            .map_err(|_| ParseIdError { what: "owner address (host:port)", text: text.to_owned() })
    }
}

impl Serialize for OwnerAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Formatted on the stack (every task push carries one): the longest address, an IPv6
        // one with a scope id, is 63 bytes.
        use std::io::Write as _;
        let mut buffer = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        if write!(cursor, "{}", self.0).is_ok() {
            let len = cursor.position() as usize;
            if let Ok(text) = std::str::from_utf8(&buffer[..len]) {
                return serializer.serialize_str(text);
            }
        }
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OwnerAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An object id keeps its owner's prefix and gives its counter back.
        #[test]
        fn an_object_id_is_its_prefix_then_its_counter(prefix: [u8; 12], counter: u64) {
            let id = ObjectId::from_parts(prefix, counter);
            prop_assert_eq!(&id.0[..12], &prefix[..]);
            prop_assert_eq!(id.counter(), counter);
        }

        #[test]
        fn every_id_parses_back_from_its_text_and_its_bytes(bytes in any::<[u8; 20]>(), n in any::<u64>()) {
            let object = ObjectId(bytes);
            prop_assert_eq!(object.to_string().parse::<ObjectId>(), Ok(object));
            let node = NodeId(bytes[..16].try_into().unwrap());
            prop_assert_eq!(node.to_string().parse::<NodeId>(), Ok(node));
            prop_assert_eq!(rmp_serde::from_slice::<NodeId>(&rmp_serde::to_vec(&node).unwrap()).unwrap(), node);
            prop_assert_eq!(rmp_serde::from_slice::<ObjectId>(&rmp_serde::to_vec(&object).unwrap()).unwrap(), object);
            prop_assert_eq!(LeaseId(n).to_string().parse::<LeaseId>(), Ok(LeaseId(n)));
        }
    }

    #[test]
    fn byte_ids_travel_as_bin_of_their_length_and_bad_text_is_an_error() {
        let encoded = rmp_serde::to_vec(&ActorId([7; 16])).unwrap();
        assert_eq!(&encoded[..2], &[0xc4, 16], "a bin 8 of 16 bytes");
        assert!("xyz".parse::<NodeId>().is_err());
        assert!(format!("{}0", NodeId([1; 16])).parse::<NodeId>().is_err());
        assert!("not an address".parse::<OwnerAddress>().is_err());
        let owner: OwnerAddress = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(
            rmp_serde::from_slice::<OwnerAddress>(&rmp_serde::to_vec(&owner).unwrap()).unwrap(),
            owner
        );
    }
}
