//! rustls configurations for the three kinds of connection: a member serving, a member dialling,
//! and a newcomer dialling the head with only a join token (pinning the CA by fingerprint).
//!
//! Every config is built with the ring provider explicitly: with aws-lc-rs also in the graph,
//! rustls' default builders panic (rustls/rustls#2070).

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TransportConfig;
use crate::error::StartError;
use crate::identity::{Fingerprint, NodeIdentity};

/// ALPN of authenticated member connections.
pub(crate) const ALPN_MEMBER: &[u8] = b"manta/1";
/// ALPN of the join exchange (no client certificate).
pub(crate) const ALPN_JOIN: &[u8] = b"manta-join/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(error: impl std::fmt::Display) -> StartError {
    StartError::Tls(error.to_string())
}

fn roots(identity: &NodeIdentity) -> Result<Arc<RootCertStore>, StartError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(tls_error)?;
    Ok(Arc::new(roots))
}

/// QUIC-level settings shared by both directions.
pub(crate) fn quic_transport(config: &TransportConfig) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(config.bulk_streams_max.saturating_add(1)));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    transport.keep_alive_interval(Some(config.keep_alive_interval));
    // The idle timeout is clamped into QUIC's range; a config outside it falls back to 30 s.
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000)));
    transport.max_idle_timeout(Some(idle));
    Arc::new(transport)
}

/// The server side of a member: it requires a client certificate from the cluster CA on the
/// member protocol, and accepts certificate-less clients only for the join protocol (the
/// connection handler refuses them on anything else before reading a single message).
pub(crate) fn server_config(
    identity: &NodeIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, StartError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.private_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN_MEMBER.to_vec(), ALPN_JOIN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(quic_transport(config));
    Ok(server)
}

/// The client side of a member: presents its certificate, trusts only the cluster CA.
pub(crate) fn client_config(
    identity: &NodeIdentity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, StartError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain.clone(), identity.private_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN_MEMBER.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(quic_transport(config));
    Ok(client)
}

/// A client that has no certificate yet: it trusts a server whose chain contains a CA with the
/// join token's fingerprint and whose leaf that CA signed.
pub(crate) fn join_client_config(
    ca_fingerprint: Fingerprint,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, StartError> {
    let verifier = Arc::new(PinnedCaVerifier { ca_fingerprint, provider: provider() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(quic_transport(config));
    Ok(client)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    ca_fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| Fingerprint::of(cert) == self.ca_fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks that the peer's certificate (as quinn reports it) certifies `node_id`.
pub(crate) fn peer_certifies(peer_identity: Option<Box<dyn std::any::Any>>, node_id: crate::NodeId) -> bool {
    let Some(identity) = peer_identity else { return false };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return false };
    let Some(leaf) = chain.first() else { return false };
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = ServerName::try_from(crate::id::dns_name(&node_id)) else { return false };
    leaf.verify_is_valid_for_subject_name(&name).is_ok()
}
