//! Cluster identities: the cluster CA, the leaf certificate each node or client holds, and the
//! join tokens that let a new member obtain its certificate from the head.
//!
//! Every certificate of a cluster is signed by the CA created with the cluster. A leaf names its
//! holder's [`NodeId`] as the DNS name `<id>.node.manta`, so a peer can check an id claimed in the
//! application-level hello against the certificate without parsing X.509 itself.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use ring::digest::{digest, SHA256};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::id::{NodeId, CLUSTER_SERVER_NAME};

/// Creating or using an identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen refused to build a key or a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// A public key sent by a joining member is not an uncompressed P-256 point.
    #[error("the public key is not an uncompressed P-256 point ({len} bytes)")]
    BadPublicKey {
        /// Length of the key that was sent.
        len: usize,
    },
}

impl From<manta_proto::RandomError> for IdentityError {
    fn from(_: manta_proto::RandomError) -> Self {
        IdentityError::Random
    }
}

/// SHA-256 of a certificate's DER bytes: how a join token names the CA it trusts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        let hash = digest(&SHA256, der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(hash.as_ref());
        Fingerprint(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&manta_proto::hex::encode(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The cluster's certificate authority. Only the head holds it; it signs every member's leaf.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint()).finish()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256) for a cluster called `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self, IdentityError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("manta cluster CA {cluster_name}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate, DER-encoded: the trust root every member holds.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// Issues a complete identity (fresh key pair and certificate) for `node_id`.
    pub fn issue(&self, node_id: NodeId) -> Result<NodeIdentity, IdentityError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign_leaf(node_id, &key)?;
        Ok(NodeIdentity {
            node_id,
            chain: vec![cert, self.cert.clone()],
            key: Arc::new(PrivatePkcs8KeyDer::from(key.serialize_der())),
            ca: self.cert.clone(),
        })
    }

    /// Signs a certificate for a key whose private half stays with the joining member.
    /// `public_key` is the raw uncompressed P-256 point (65 bytes, leading 0x04).
    pub fn sign_public_key(
        &self,
        node_id: NodeId,
        public_key: &[u8],
    ) -> Result<CertificateDer<'static>, IdentityError> {
        if public_key.len() != 65 || public_key[0] != 0x04 {
            return Err(IdentityError::BadPublicKey { len: public_key.len() });
        }
        self.sign_leaf(node_id, &RawP256PublicKey(public_key))
    }

    fn sign_leaf(
        &self,
        node_id: NodeId,
        key: &impl PublicKeyData,
    ) -> Result<CertificateDer<'static>, IdentityError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id.to_string());
        params.distinguished_name = name;
        params.subject_alt_names = vec![
            SanType::DnsName(crate::id::dns_name(&node_id).try_into()?),
            SanType::DnsName(CLUSTER_SERVER_NAME.try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(key, &self.issuer)?.der().clone())
    }
}

/// A public key received from a joining member, in the shape rcgen signs.
struct RawP256PublicKey<'a>(&'a [u8]);

impl PublicKeyData for RawP256PublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// What a node or client presents to its peers: its id, its certificate chain (leaf first, then
/// the CA), its private key and the CA certificate it trusts.
#[derive(Clone)]
pub struct NodeIdentity {
    pub(crate) node_id: NodeId,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivatePkcs8KeyDer<'static>>,
    pub(crate) ca: CertificateDer<'static>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .field("ca", &Fingerprint::of(&self.ca))
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Assembles an identity from parts obtained elsewhere (the join exchange, a file).
    pub fn from_parts(
        node_id: NodeId,
        leaf: CertificateDer<'static>,
        key_pkcs8: Vec<u8>,
        ca: CertificateDer<'static>,
    ) -> Self {
        NodeIdentity {
            node_id,
            chain: vec![leaf, ca.clone()],
            key: Arc::new(PrivatePkcs8KeyDer::from(key_pkcs8)),
            ca,
        }
    }

    /// The id this identity certifies.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The fingerprint of the CA this identity trusts.
    pub fn ca_fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.ca)
    }

    /// The certificate chain presented to peers: the leaf, then the CA.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The CA certificate this identity trusts.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The private key, PKCS#8 DER. Secret: store it with owner-only permissions.
    pub fn private_key_pkcs8(&self) -> &[u8] {
        self.key.secret_pkcs8_der()
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Whether a join token may be used once or until it is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// Consumed by the first successful join.
    OneTime,
    /// Accepted until revoked: for clients that come and go.
    LongLived,
}

/// A join token: the fingerprint of the CA a newcomer must find at the head, and a secret the
/// head checks. Written as `manta-join-v1.<ca fingerprint hex>.<secret hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The CA the newcomer pins when it connects to the head.
    pub ca_fingerprint: Fingerprint,
    /// The shared secret; the head stores only its hash.
    pub secret: [u8; 32],
}

const TOKEN_PREFIX: &str = "manta-join-v1";

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}", self.ca_fingerprint, manta_proto::hex::encode(&self.secret))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "JoinToken {{ ca_fingerprint: {}, secret: <hidden> }}", self.ca_fingerprint)
    }
}

/// A string that is not a join token was given where one was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed join token: expected `{TOKEN_PREFIX}.<64 hex>.<64 hex>`")]
pub struct ParseTokenError;

impl FromStr for JoinToken {
    type Err = ParseTokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(fingerprint), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseTokenError);
        };
        Ok(JoinToken {
            ca_fingerprint: Fingerprint(manta_proto::hex::decode_array(fingerprint).ok_or(ParseTokenError)?),
            secret: manta_proto::hex::decode_array(secret).ok_or(ParseTokenError)?,
        })
    }
}

/// Why the head refused a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    /// The secret matches no live token (wrong, revoked, or a one-time token already used).
    #[error("the join token is not valid here (unknown, revoked or already used)")]
    TokenInvalid,
    /// This node cannot issue certificates (it does not hold the cluster CA).
    #[error("this node does not admit new members")]
    NotAdmitting,
    /// The public key in the request is malformed.
    #[error("the public key in the join request is malformed")]
    BadPublicKey,
    /// The request's protocol version is not spoken here.
    #[error("unsupported protocol version")]
    Version,
    /// Something other than a join request came on the join protocol (a member's hello, say:
    /// members connect with their certificate, not through the join exchange).
    #[error("expected a join request on the join protocol, got another handshake message")]
    NotAJoinRequest,
}

/// The head's registry of live join tokens, keyed by the SHA-256 of their secret so a lookup
/// leaks nothing through timing about the secrets it holds.
#[derive(Debug, Default)]
pub struct TokenRegistry {
    tokens: Mutex<HashMap<[u8; 32], TokenUse>>,
}

impl TokenRegistry {
    /// Creates a token for the CA `ca` and registers it.
    pub fn create(&self, ca: &ClusterCa, token_use: TokenUse) -> Result<JoinToken, IdentityError> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| IdentityError::Random)?;
        self.tokens.lock().insert(secret_hash(&secret), token_use);
        Ok(JoinToken { ca_fingerprint: ca.fingerprint(), secret })
    }

    /// Revokes a token; later joins with it are refused. Returns whether it was live.
    pub fn revoke(&self, token: &JoinToken) -> bool {
        self.tokens.lock().remove(&secret_hash(&token.secret)).is_some()
    }

    /// Checks a presented secret, consuming it when it is a one-time token.
    pub(crate) fn redeem(&self, secret: &[u8]) -> Result<(), JoinRefusal> {
        let hash = secret_hash(secret);
        let mut tokens = self.tokens.lock();
        match tokens.get(&hash) {
            Some(TokenUse::LongLived) => Ok(()),
            Some(TokenUse::OneTime) => {
                tokens.remove(&hash);
                Ok(())
            }
            None => Err(JoinRefusal::TokenInvalid),
        }
    }
}

fn secret_hash(secret: &[u8]) -> [u8; 32] {
    Fingerprint::of(secret).0
}

/// A fresh P-256 key pair for a joining member: `(pkcs8 private key, raw public key)`.
pub(crate) fn generate_member_key() -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    Ok((key.serialize_der(), key.public_key_raw().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_token_prints_and_parses_back(fingerprint in any::<[u8; 32]>(), secret in any::<[u8; 32]>()) {
            let token = JoinToken { ca_fingerprint: Fingerprint(fingerprint), secret };
            prop_assert_eq!(token.to_string().parse::<JoinToken>(), Ok(token));
        }

        #[test]
        fn arbitrary_text_is_not_a_token(text in ".{0,200}") {
            let _ = text.parse::<JoinToken>();
        }
    }

    #[test]
    fn token_text_round_trip_hides_secret_in_debug() {
        let ca = ClusterCa::generate("t").unwrap();
        let registry = TokenRegistry::default();
        let token = registry.create(&ca, TokenUse::OneTime).unwrap();
        let parsed: JoinToken = token.to_string().parse().unwrap();
        assert_eq!(parsed, token);
        assert!(!format!("{token:?}").contains(&manta_proto::hex::encode(&token.secret)));
        assert_eq!("manta-join-v1.zz".parse::<JoinToken>(), Err(ParseTokenError));
        assert_eq!(format!("{token}.x").parse::<JoinToken>(), Err(ParseTokenError));
    }

    #[test]
    fn one_time_tokens_are_consumed_and_long_lived_ones_are_not() {
        let ca = ClusterCa::generate("t").unwrap();
        let registry = TokenRegistry::default();
        let once = registry.create(&ca, TokenUse::OneTime).unwrap();
        let many = registry.create(&ca, TokenUse::LongLived).unwrap();
        assert_eq!(registry.redeem(&once.secret), Ok(()));
        assert_eq!(registry.redeem(&once.secret), Err(JoinRefusal::TokenInvalid));
        assert_eq!(registry.redeem(&many.secret), Ok(()));
        assert_eq!(registry.redeem(&many.secret), Ok(()));
        assert!(registry.revoke(&many));
        assert_eq!(registry.redeem(&many.secret), Err(JoinRefusal::TokenInvalid));
        assert_eq!(registry.redeem(&[0u8; 32]), Err(JoinRefusal::TokenInvalid));
    }

    #[test]
    fn leaf_is_bound_to_its_node_id() {
        let ca = ClusterCa::generate("t").unwrap();
        let id = NodeId::random().unwrap();
        let identity = ca.issue(id).unwrap();
        let leaf = webpki::EndEntityCert::try_from(&identity.chain[0]).unwrap();
        let own = rustls_pki_types::ServerName::try_from(crate::id::dns_name(&id)).unwrap();
        assert!(leaf.verify_is_valid_for_subject_name(&own).is_ok());
        let other = NodeId::random().unwrap();
        let other = rustls_pki_types::ServerName::try_from(crate::id::dns_name(&other)).unwrap();
        assert!(leaf.verify_is_valid_for_subject_name(&other).is_err());
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        let ca = ClusterCa::generate("t").unwrap();
        let id = NodeId::random().unwrap();
        assert!(matches!(ca.sign_public_key(id, &[4u8; 10]), Err(IdentityError::BadPublicKey { len: 10 })));
        let (_, public) = generate_member_key().unwrap();
        assert!(ca.sign_public_key(id, &public).is_ok());
    }
}
