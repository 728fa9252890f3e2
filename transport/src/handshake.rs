//! Handshake messages: the hello/ack that authenticates a connection at the application level,
//! and the join exchange by which a newcomer obtains its certificate.
//!
//! TLS alone is not enough: a client without a certificate still sees its `connect()` succeed
//! (TLS 1.3 lets the client finish first) and only fails at its first read. So no connection
//! counts as authenticated, and nothing is dispatched for it, until the server has checked the
//! peer's [`Handshake::Hello`] against its certificate and answered [`Handshake::HelloAck`].

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::id::NodeId;
use crate::identity::JoinRefusal;

/// The application protocol version carried in hellos and join requests.
pub const WIRE_PROTOCOL: u32 = 1;

/// Longest certificate accepted in a join reply, in bytes.
const CERT_BYTES_MAX: usize = 16 * 1024;

/// One handshake message; each is the body of a frame with [`crate::Header::Handshake`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// Client to server, first message on an mTLS connection.
    Hello {
        /// The client's protocol version.
        protocol: u32,
        /// The id the client's certificate must certify.
        node_id: NodeId,
    },
    /// Client to server, first message on the local channel (a Unix socket; see `local.rs`).
    /// The server has already checked that the client runs as the same user.
    LocalHello {
        /// The client's protocol version.
        protocol: u32,
        /// The client's node id.
        node_id: NodeId,
        /// The fingerprint of the client's cluster CA (32 bytes): a process of another cluster
        /// on the same host is refused, as TLS would refuse it.
        cluster: ByteBuf,
        /// The client's UDP address, under which the server files the connection.
        listen: std::net::SocketAddr,
        /// Whether this socket carries one bulk transfer rather than the message stream.
        bulk: bool,
    },
    /// Server to client: the connection is authenticated.
    HelloAck {
        /// The server's protocol version.
        protocol: u32,
        /// The server's node id.
        node_id: NodeId,
    },
    /// Server to client: the hello was refused; the connection closes.
    Refused {
        /// Why.
        reason: HandshakeRefusal,
    },
    /// A newcomer (no certificate yet) asks the head for one.
    JoinRequest {
        /// The newcomer's protocol version.
        protocol: u32,
        /// The token's secret (32 bytes).
        secret: ByteBuf,
        /// The newcomer's raw P-256 public key; its private half never leaves the newcomer.
        public_key: ByteBuf,
    },
    /// The head admits the newcomer.
    JoinAccepted {
        /// The id the head assigned.
        node_id: NodeId,
        /// The newcomer's certificate, DER.
        leaf: ByteBuf,
        /// The cluster CA certificate, DER.
        ca: ByteBuf,
    },
    /// The head refuses the newcomer.
    JoinRefused {
        /// Why.
        reason: JoinRefusal,
    },
}

/// Why a server refused a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HandshakeRefusal {
    /// The versions differ.
    #[error("protocol version mismatch (server speaks {server})")]
    Version {
        /// The server's version.
        server: u32,
    },
    /// The claimed node id is not the one the client's certificate certifies.
    #[error("the claimed node id does not match the client certificate")]
    IdentityMismatch,
    /// The client presented no certificate on the authenticated protocol.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// A message other than the one expected at this point arrived.
    #[error("unexpected handshake message")]
    Unexpected,
}

/// A handshake message failed to decode or validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeDecodeError {
    /// Not MessagePack of a handshake message.
    #[error("handshake message does not decode: {0}")]
    Decode(String),
    /// A field has an impossible length.
    #[error("handshake field `{field}` has length {len}, allowed {allowed}")]
    FieldLength {
        /// The field's name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// What is allowed.
        allowed: &'static str,
    },
}

impl Handshake {
    /// Encodes the message as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain data types into memory cannot fail.
        rmp_serde::to_vec(self).expect("handshake messages encode into memory")
    }

    /// Decodes and validates a frame body. Bytes from the network: never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, HandshakeDecodeError> {
        let message: Handshake =
            rmp_serde::from_slice(bytes).map_err(|error| HandshakeDecodeError::Decode(error.to_string()))?;
        let check = |field, len: usize, ok: bool, allowed| {
            if ok {
                Ok(())
            } else {
                Err(HandshakeDecodeError::FieldLength { field, len, allowed })
            }
        };
        match &message {
            Handshake::JoinRequest { secret, public_key, .. } => {
                check("secret", secret.len(), secret.len() == 32, "32")?;
                check("public_key", public_key.len(), public_key.len() == 65, "65")?;
            }
            Handshake::LocalHello { cluster, .. } => {
                check("cluster", cluster.len(), cluster.len() == 32, "32")?;
            }
            Handshake::JoinAccepted { leaf, ca, .. } => {
                check("leaf", leaf.len(), !leaf.is_empty() && leaf.len() <= CERT_BYTES_MAX, "1..=16384")?;
                check("ca", ca.len(), !ca.is_empty() && ca.len() <= CERT_BYTES_MAX, "1..=16384")?;
            }
            _ => {}
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_node_id() -> impl Strategy<Value = NodeId> {
        any::<[u8; 16]>().prop_map(NodeId)
    }

    fn any_handshake() -> impl Strategy<Value = Handshake> {
        let refusal = prop_oneof![
            any::<u32>().prop_map(|server| HandshakeRefusal::Version { server }),
            Just(HandshakeRefusal::IdentityMismatch),
            Just(HandshakeRefusal::NoCertificate),
            Just(HandshakeRefusal::Unexpected),
        ];
        let join_refusal = prop_oneof![
            Just(JoinRefusal::TokenInvalid),
            Just(JoinRefusal::NotAdmitting),
            Just(JoinRefusal::BadPublicKey),
            Just(JoinRefusal::Version),
        ];
        // A socket address travels as ip and port (no IPv6 flow info or scope id).
        let listen = (any::<std::net::IpAddr>(), any::<u16>()).prop_map(std::net::SocketAddr::from);
        prop_oneof![
            (any::<u32>(), any_node_id())
                .prop_map(|(protocol, node_id)| Handshake::Hello { protocol, node_id }),
            (any::<u32>(), any_node_id())
                .prop_map(|(protocol, node_id)| Handshake::HelloAck { protocol, node_id }),
            (any::<u32>(), any_node_id(), any::<[u8; 32]>(), listen, any::<bool>()).prop_map(
                |(protocol, node_id, cluster, listen, bulk)| Handshake::LocalHello {
                    protocol,
                    node_id,
                    cluster: ByteBuf::from(cluster.to_vec()),
                    listen,
                    bulk
                }
            ),
            refusal.prop_map(|reason| Handshake::Refused { reason }),
            (any::<u32>(), any::<[u8; 32]>(), proptest::collection::vec(any::<u8>(), 65..=65)).prop_map(
                |(protocol, secret, public_key)| Handshake::JoinRequest {
                    protocol,
                    secret: ByteBuf::from(secret.to_vec()),
                    public_key: ByteBuf::from(public_key),
                }
            ),
            (
                any_node_id(),
                proptest::collection::vec(any::<u8>(), 1..600),
                proptest::collection::vec(any::<u8>(), 1..600)
            )
                .prop_map(|(node_id, leaf, ca)| Handshake::JoinAccepted {
                    node_id,
                    leaf: ByteBuf::from(leaf),
                    ca: ByteBuf::from(ca),
                }),
            join_refusal.prop_map(|reason| Handshake::JoinRefused { reason }),
        ]
    }

    proptest! {
        #[test]
        fn every_handshake_message_round_trips(message in any_handshake()) {
            prop_assert_eq!(Handshake::decode(&message.encode()), Ok(message));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Handshake::decode(&bytes);
        }
    }

    #[test]
    fn join_request_fields_are_length_checked() {
        let message = Handshake::JoinRequest {
            protocol: WIRE_PROTOCOL,
            secret: ByteBuf::from(vec![1u8; 31]),
            public_key: ByteBuf::from(vec![4u8; 65]),
        };
        assert!(matches!(
            Handshake::decode(&message.encode()),
            Err(HandshakeDecodeError::FieldLength { field: "secret", len: 31, .. })
        ));
    }

    #[test]
    fn node_ids_travel_as_bin_not_integer_arrays() {
        let message = Handshake::Hello { protocol: 1, node_id: NodeId([0xff; 16]) };
        // 0xff as a MessagePack integer takes two bytes; as bin, one. 16 ids bytes + small overhead.
        assert!(message.encode().len() < 30, "{} bytes", message.encode().len());
    }
}
