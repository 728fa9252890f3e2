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
    /// A kept CA (`ClusterCa::to_bytes`) does not read back.
    #[error("the kept cluster CA does not read back: {0}")]
    BadKeptCa(String),
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
    /// What it was generated from, to keep it ([`ClusterCa::to_bytes`]).
    cluster_name: String,
    key_der: Vec<u8>,
}

/// How a kept CA's bytes begin.
const KEPT_CA_MAGIC: &[u8] = b"manta-ca-v1\n";

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint()).finish()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256) for a cluster called `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self, IdentityError> {
        let params = Self::params(cluster_name);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        let key_der = key.serialize_der();
        Ok(ClusterCa {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            cluster_name: cluster_name.to_owned(),
            key_der,
        })
    }

    /// The CA's certificate parameters: the same for a CA generated and one read back, so a
    /// leaf signed by either names the same issuer.
    fn params(cluster_name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("manta cluster CA {cluster_name}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }

    /// The CA as bytes to keep (a restarted head keeps its cluster): its name, its private key
    /// and its certificate. Whoever reads them can admit members: keep them as secret as the
    /// head's own key (the GCS writes them to a file only its user may read).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = KEPT_CA_MAGIC.to_vec();
        for part in [self.cluster_name.as_bytes(), &self.key_der, self.cert.as_ref()] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes
    }

    /// A secret derived from the CA's key (for a head's stateless-reset key: the same for the
    /// same CA, and telling nothing about the key).
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let mut input = b"manta derived secret\n".to_vec();
        input.extend_from_slice(purpose.as_bytes());
        input.push(0);
        input.extend_from_slice(&self.key_der);
        Fingerprint::of(&input).0
    }

    /// A CA kept with [`ClusterCa::to_bytes`]: the same certificate and key, so members that
    /// trust it trust the CA read back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let bad = |why: &str| IdentityError::BadKeptCa(why.to_owned());
        let mut rest = bytes.strip_prefix(KEPT_CA_MAGIC).ok_or_else(|| bad("not a kept CA (no header)"))?;
        let mut parts = Vec::with_capacity(3);
        for _ in 0..3 {
            let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(|| bad("cut short"))?;
            let length = u32::from_be_bytes(*length) as usize;
            if tail.len() < length {
                return Err(bad("cut short"));
            }
            parts.push(&tail[..length]);
            rest = &tail[length..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let cluster_name =
            std::str::from_utf8(parts[0]).map_err(|_| bad("the name is not UTF-8"))?.to_owned();
        let key = KeyPair::try_from(parts[1]).map_err(|error| bad(&format!("the key: {error}")))?;
        let cert = CertificateDer::from(parts[2].to_vec());
        let key_der = parts[1].to_vec();
        Ok(ClusterCa { issuer: Issuer::new(Self::params(&cluster_name), key), cert, cluster_name, key_der })
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

impl JoinToken {
    /// The SHA-256 of the secret: what a head keeps of a token it issued.
    pub fn secret_hash(&self) -> [u8; 32] {
        secret_hash(&self.secret)
    }
}

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

    /// Registers a token made earlier (a restarted head keeps its cluster's long-lived token).
    pub fn insert(&self, token: &JoinToken, token_use: TokenUse) {
        self.tokens.lock().insert(secret_hash(&token.secret), token_use);
    }

    /// Registers a token by the hash of its secret ([`JoinToken::secret_hash`]), as kept by a
    /// head that restarted (it keeps hashes, never secrets).
    pub fn insert_hash(&self, hash: [u8; 32], token_use: TokenUse) {
        self.tokens.lock().insert(hash, token_use);
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
    fn a_kept_ca_reads_back_and_its_leaves_chain_to_the_same_root() {
        let ca = ClusterCa::generate("kept").unwrap();
        let kept = ca.to_bytes();
        let back = ClusterCa::from_bytes(&kept).unwrap();
        assert_eq!(back.fingerprint(), ca.fingerprint());
        // A leaf the CA read back signs verifies against the original root.
        let identity = back.issue(NodeId::random().unwrap()).unwrap();
        let anchors = [webpki::anchor_from_trusted_cert(ca.cert_der()).unwrap()];
        let leaf = webpki::EndEntityCert::try_from(&identity.chain[0]).unwrap();
        let verified = leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            rustls_pki_types::UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        );
        assert!(verified.is_ok(), "{:?}", verified.map(drop).err());
        // Damaged bytes are a typed error, never a panic.
        let damaged =
            [Vec::new(), KEPT_CA_MAGIC.to_vec(), kept[..40].to_vec(), [kept.clone(), vec![0]].concat()];
        for bytes in damaged {
            assert!(matches!(ClusterCa::from_bytes(&bytes), Err(IdentityError::BadKeptCa(_))));
        }
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
