//! The transport's view of a [`NodeId`] (defined in `manta-proto`): the DNS names under which
//! certificates carry it.

pub use manta_proto::{NodeId, ParseIdError as ParseNodeIdError};

/// The DNS suffix under which a node's id is written into its certificate's subject
/// alternative names, so that a peer can check a claimed id against the certificate.
pub(crate) const NODE_NAME_SUFFIX: &str = ".node.manta";

/// The name every certificate of a cluster carries; a client dialling an address whose
/// node id it does not know yet verifies the server against it.
pub(crate) const CLUSTER_SERVER_NAME: &str = "cluster.manta";

/// The DNS name `id` is certified under (`<hex>.node.manta`).
pub(crate) fn dns_name(id: &NodeId) -> String {
    format!("{id}{NODE_NAME_SUFFIX}")
}
