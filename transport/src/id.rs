//! `NodeId`: the identity of a node or client in a cluster, bound to its certificate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The DNS suffix under which a node's id is written into its certificate's subject
/// alternative names, so that a peer can check a claimed id against the certificate.
pub(crate) const NODE_NAME_SUFFIX: &str = ".node.manta";

/// The name every certificate of a cluster carries; a client dialling an address whose
/// node id it does not know yet verifies the server against it.
pub(crate) const CLUSTER_SERVER_NAME: &str = "cluster.manta";

/// A 128-bit identifier of a node or client of a cluster, shown as 32 lower-case hex digits.
/// On the wire it is a 16-byte MessagePack `bin`, never an array of integers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A fresh random id from the operating system's secure random source.
    pub fn random() -> Result<Self, crate::IdentityError> {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| crate::IdentityError::Random)?;
        Ok(NodeId(bytes))
    }

    /// The DNS name this id is certified under (`<hex>.node.manta`).
    pub(crate) fn dns_name(&self) -> String {
        format!("{self}{NODE_NAME_SUFFIX}")
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        let array: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"16 bytes"))?;
        Ok(NodeId(array))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A string that is not 32 hex digits was given as a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 32 hex digits, got {0:?}")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = crate::hex::decode_array::<16>(text).ok_or_else(|| ParseNodeIdError(text.to_owned()))?;
        Ok(NodeId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = NodeId::random().unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!("xyz".parse::<NodeId>().is_err());
        assert!(format!("{text}0").parse::<NodeId>().is_err());
    }
}
