//! The join exchange: a newcomer holding only a join token obtains its certificate from the head.
//!
//! The newcomer dials the head with the `manta-join/1` protocol and no client certificate,
//! trusting the head only if the head's chain contains the CA the token names (by fingerprint).
//! It sends the token's secret and a public key it generated; its private key never leaves it.
//! The head checks the secret, assigns a node id and signs a certificate for that key.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde_bytes::ByteBuf;
use tracing::info;

use crate::config::TransportConfig;
use crate::endpoint::{read_handshake, Admission};
use crate::error::JoinError;
use crate::error::StreamError;
use crate::frame::{self, FrameDecoder, Header};
use crate::handshake::{Handshake, WIRE_PROTOCOL};
use crate::id::{NodeId, CLUSTER_SERVER_NAME};
use crate::identity::{
    generate_member_key, Fingerprint, IdentityError, JoinRefusal, JoinToken, NodeIdentity,
};

/// Obtains a certificate from the head at `head` with `token`. Must run inside a tokio runtime
/// (an actix `System` or `Arbiter` qualifies); see [`join_blocking`] otherwise.
pub async fn join(
    head: SocketAddr,
    token: &JoinToken,
    config: &TransportConfig,
) -> Result<NodeIdentity, JoinError> {
    let connect_error = |reason: String| JoinError::Connect { addr: head, reason };
    let client_config = crate::tls::join_client_config(token.ca_fingerprint, config)
        .map_err(|error| connect_error(error.to_string()))?;
    let bind: SocketAddr =
        if head.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal socket addresses parse");
    let endpoint = quinn::Endpoint::client(bind).map_err(|error| connect_error(error.to_string()))?;
    let timeout = config.handshake_timeout;
    let exchange = async {
        let quic = endpoint
            .connect_with(client_config, head, CLUSTER_SERVER_NAME)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let (mut send, recv) = quic.open_bi().await.map_err(|error| connect_error(error.to_string()))?;
        let mut recv = crate::local::ReadHalf::Quic(recv);
        let (private_key, public_key) = generate_member_key()?;
        let request = Handshake::JoinRequest {
            protocol: WIRE_PROTOCOL,
            secret: ByteBuf::from(token.secret.to_vec()),
            public_key: ByteBuf::from(public_key),
        };
        send.write_chunk(frame::encode(&Header::Handshake, &request.encode(), config.frame_bytes_max)?)
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        let mut decoder = FrameDecoder::new(config.frame_bytes_max);
        let reply = read_handshake(&mut recv, &mut decoder)
            .await
            .map_err(|error| JoinError::Protocol(error.to_string()))?;
        quic.close(quinn::VarInt::from_u32(0), b"joined");
        match reply {
            Handshake::JoinAccepted { node_id, leaf, ca } => {
                if Fingerprint::of(&ca) != token.ca_fingerprint {
                    return Err(JoinError::Protocol("the CA sent is not the one the token names".to_owned()));
                }
                let identity = NodeIdentity::from_parts(
                    node_id,
                    CertificateDer::from(leaf.into_vec()),
                    private_key,
                    CertificateDer::from(ca.into_vec()),
                );
                if !certifies(&identity, node_id) {
                    return Err(JoinError::Protocol(
                        "the certificate sent does not certify the id sent".to_owned(),
                    ));
                }
                Ok(identity)
            }
            Handshake::JoinRefused { reason } => Err(JoinError::Refused(reason)),
            _ => Err(JoinError::Protocol("unexpected handshake message".to_owned())),
        }
    };
    let outcome = tokio::time::timeout(timeout, exchange).await.map_err(|_| JoinError::Timeout(timeout))?;
    endpoint.wait_idle().await;
    outcome
}

impl From<crate::frame::FrameError> for JoinError {
    fn from(error: crate::frame::FrameError) -> Self {
        JoinError::Protocol(error.to_string())
    }
}

fn certifies(identity: &NodeIdentity, node_id: NodeId) -> bool {
    let chain: Vec<CertificateDer<'static>> = identity.chain.clone();
    crate::tls::peer_certifies(Some(Box::new(chain)), node_id)
}

/// [`join`] for code outside any async runtime: runs it on a short-lived thread of its own.
pub fn join_blocking(
    head: SocketAddr,
    token: &JoinToken,
    config: &TransportConfig,
) -> Result<NodeIdentity, JoinError> {
    let token = token.clone();
    let config = config.clone();
    let timeout = config.handshake_timeout;
    std::thread::spawn(move || actix_rt::System::new().block_on(join(head, &token, &config)))
        .join()
        .unwrap_or(Err(JoinError::Timeout(timeout)))
}

/// Server side of the exchange. Returns `Err` (and the caller closes the connection) for a
/// refused or malformed request; the refusal itself is sent to the newcomer first.
pub(crate) async fn serve(
    admission: Option<&Admission>,
    quic: &quinn::Connection,
    config: &TransportConfig,
) -> Result<(), StreamError> {
    let (mut send, recv) = quic.accept_bi().await?;
    let mut recv = crate::local::ReadHalf::Quic(recv);
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    let request = read_handshake(&mut recv, &mut decoder).await?;
    let outcome = admit(admission, request);
    let reply = match &outcome {
        Ok((node_id, leaf, ca)) => Handshake::JoinAccepted {
            node_id: *node_id,
            leaf: ByteBuf::from(leaf.to_vec()),
            ca: ByteBuf::from(ca.to_vec()),
        },
        Err(reason) => Handshake::JoinRefused { reason: *reason },
    };
    let frame = frame::encode(&Header::Handshake, &reply.encode(), config.frame_bytes_max)?;
    send.write_chunk(frame).await?;
    let _ = send.finish();
    // The newcomer closes once it has read the reply.
    let _ = tokio::time::timeout(Duration::from_secs(2), quic.closed()).await;
    match outcome {
        Ok((node_id, _, _)) => {
            info!(%node_id, remote = %quic.remote_address(), "admitted a new member");
            Ok(())
        }
        Err(reason) => Err(StreamError::JoinRefused(reason)),
    }
}

type Admitted = (NodeId, CertificateDer<'static>, CertificateDer<'static>);

fn admit(admission: Option<&Admission>, request: Handshake) -> Result<Admitted, JoinRefusal> {
    let Handshake::JoinRequest { protocol, secret, public_key } = request else {
        return Err(JoinRefusal::NotAJoinRequest);
    };
    if protocol != WIRE_PROTOCOL {
        return Err(JoinRefusal::Version);
    }
    let admission = admission.ok_or(JoinRefusal::NotAdmitting)?;
    admission.tokens.redeem(&secret)?;
    let node_id = NodeId::random().map_err(|_| JoinRefusal::NotAdmitting)?;
    let leaf = admission.ca.sign_public_key(node_id, &public_key).map_err(|error| match error {
        IdentityError::BadPublicKey { .. } => JoinRefusal::BadPublicKey,
        _ => JoinRefusal::NotAdmitting,
    })?;
    Ok((node_id, leaf, admission.ca.cert_der().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_hello_on_the_join_protocol_is_refused_for_what_it_is() {
        let hello = Handshake::Hello { protocol: WIRE_PROTOCOL, node_id: NodeId([7; 16]) };
        assert_eq!(admit(None, hello).unwrap_err(), JoinRefusal::NotAJoinRequest);
        let old = Handshake::JoinRequest {
            protocol: WIRE_PROTOCOL + 1,
            secret: ByteBuf::from(vec![0; 32]),
            public_key: ByteBuf::from(vec![0; 65]),
        };
        assert_eq!(admit(None, old).unwrap_err(), JoinRefusal::Version);
    }
}
