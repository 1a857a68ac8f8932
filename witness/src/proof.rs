//! Signed lease proofs: every grant carries a JWT (EdDSA / Ed25519) naming the cluster, room,
//! node, epoch and mode, valid until the lease ends, so agents, DRBD handlers and auditors can
//! check a grant offline against the witness's JWKS (`GET /v1/jwks`).
//!
//! The signing key is generated once, kept in `<data_dir>/proof-key.pem` (mode 0600), and its
//! key id (`kid`) is the RFC 7638 thumbprint of the public key.
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProofError {
    #[error("cannot read the proof signing key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the proof signing key {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("the proof signing key {path} is not an Ed25519 PKCS#8 PEM key: {source}; move it away and a new key is generated (old proofs then no longer verify)")]
    BadKey {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot sign a proof: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("the proof does not verify: {0}")]
    Invalid(String),
}

/// The claims of a lease proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaims {
    /// Always `witness`.
    pub iss: String,
    /// The node's identity URI (`witness://cluster/room/node`).
    pub sub: String,
    pub cluster: String,
    pub room: String,
    pub node: String,
    pub epoch: u64,
    /// `paired` or `alone`.
    pub mode: String,
    /// For `alone`: `wait`, `allowed` or `release`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<String>,
    /// The lease's length as granted.
    pub valid_ms: u64,
    /// Issued at, seconds since the Unix epoch (witness wall clock).
    pub iat: u64,
    /// Expires, seconds since the Unix epoch: `floor((iat_ms + valid_ms) / 1000)`.
    pub exp: u64,
    /// Issued at, milliseconds since the Unix epoch.
    pub iat_ms: u64,
    /// Expires, milliseconds since the Unix epoch.
    pub exp_ms: u64,
    /// The signing key's id (also in the JWT header).
    pub kid: String,
}

/// Signs proofs with the witness's key.
///
/// The key pair is parsed once and kept (ring's Ed25519). `jsonwebtoken::encode` re-parsed the
/// PKCS#8 key and re-derived the public key (a second scalar multiplication) on every call,
/// which made it the largest single cost of a renewal; the token it produced is the same:
/// base64url(header) "." base64url(claims) "." base64url(Ed25519 signature).
pub struct ProofSigner {
    key: ring::signature::Ed25519KeyPair,
    /// base64url of the JSON header (`typ`, `alg`, `kid`), fixed for the key.
    header_b64: String,
    kid: String,
    jwks: JwkSet,
}

impl ProofSigner {
    /// Loads `path`, generating a new key there first if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<ProofSigner, ProofError> {
        if !path.exists() {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| {
                ProofError::Create {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            crate::certs::write_file(path, kp.serialize_pem().as_bytes(), true, false).map_err(
                |e| ProofError::Create {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                },
            )?;
            tracing::info!(path = %path.display(), "generated a new proof signing key");
        }
        let pem = std::fs::read(path).map_err(|source| ProofError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| ProofError::Create {
            path: path.to_path_buf(),
            reason,
        };
        let text = String::from_utf8(pem.clone()).map_err(|e| bad(format!("not PEM text: {e}")))?;
        let kp =
            rcgen::KeyPair::from_pem(&text).map_err(|e| bad(format!("not a private key: {e}")))?;
        if kp.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(bad(
                "not an Ed25519 key; move it away and a new one is generated".into(),
            ));
        }
        // Still checked with jsonwebtoken, so a key it would refuse is refused here too.
        jsonwebtoken::EncodingKey::from_ed_pem(&pem).map_err(|source| ProofError::BadKey {
            path: path.to_path_buf(),
            source,
        })?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&kp.serialize_der())
            .map_err(|e| bad(format!("not a usable Ed25519 PKCS#8 key: {e}")))?;
        let x = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            kp.public_key_raw(),
        );
        let mut jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            }),
        };
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|source| ProofError::BadKey {
                path: path.to_path_buf(),
                source,
            })?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header_json = serde_json::to_vec(&header)
            .map_err(|e| bad(format!("cannot encode the JWT header: {e}")))?;
        let header_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header_json);
        Ok(ProofSigner {
            key,
            header_b64,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys, as served at `/v1/jwks`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs a proof for a grant of `valid_ms` from now.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        cluster: &str,
        room: &str,
        node: &str,
        epoch: u64,
        mode: &str,
        takeover: Option<&str>,
        valid_ms: u64,
    ) -> Result<String, ProofError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let exp_ms = now_ms.saturating_add(valid_ms);
        let claims = LeaseClaims {
            iss: "witness".into(),
            sub: format!("witness://{cluster}/{room}/{node}"),
            cluster: cluster.into(),
            room: room.into(),
            node: node.into(),
            epoch,
            mode: mode.into(),
            takeover: takeover.map(str::to_string),
            valid_ms,
            iat: now_ms / 1000,
            exp: exp_ms / 1000,
            iat_ms: now_ms,
            exp_ms,
            kid: self.kid.clone(),
        };
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims_json = serde_json::to_vec(&claims)
            .map_err(|e| ProofError::Sign(jsonwebtoken::errors::Error::from(e)))?;
        let mut token =
            String::with_capacity(self.header_b64.len() + claims_json.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        b64.encode_string(&claims_json, &mut token);
        let sig = self.key.sign(token.as_bytes());
        token.push('.');
        b64.encode_string(sig.as_ref(), &mut token);
        Ok(token)
    }
}

fn verify_inner(token: &str, jwks: &JwkSet, check_exp: bool) -> Result<LeaseClaims, ProofError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| ProofError::Invalid(format!("header: {e}")))?;
    if header.alg != Algorithm::EdDSA {
        return Err(ProofError::Invalid(format!(
            "algorithm {:?} is not EdDSA",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| ProofError::Invalid("the header names no key id (kid)".into()))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| ProofError::Invalid(format!("no key {kid} in the JWKS")))?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| ProofError::Invalid(format!("key {kid}: {e}")))?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.leeway = 0;
    v.validate_exp = check_exp;
    v.set_required_spec_claims(&["exp", "iss", "sub"]);
    v.set_issuer(&["witness"]);
    let data = jsonwebtoken::decode::<LeaseClaims>(token, &key, &v)
        .map_err(|e| ProofError::Invalid(e.to_string()))?;
    if data.claims.kid != kid {
        return Err(ProofError::Invalid(format!(
            "the claims name key {} but the header names {kid}",
            data.claims.kid
        )));
    }
    Ok(data.claims)
}

/// Verifies a proof against a JWKS: signature, issuer, key id, and that it has not expired.
pub fn verify(token: &str, jwks: &JwkSet) -> Result<LeaseClaims, ProofError> {
    verify_inner(token, jwks, true)
}

/// Verifies only the signature and claims, not expiry: for auditors checking old grants.
pub fn verify_signature(token: &str, jwks: &JwkSet) -> Result<LeaseClaims, ProofError> {
    verify_inner(token, jwks, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_proof_verifies_and_tampering_is_caught() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("k.pem");
        let s = ProofSigner::load_or_create(&p).expect("key");
        let t = s
            .sign("c", "a", "a1", 7, "alone", Some("wait"), 4000)
            .expect("sign");
        let c = verify(&t, s.jwks()).expect("verifies");
        assert_eq!(
            (c.cluster.as_str(), c.epoch, c.mode.as_str()),
            ("c", 7, "alone")
        );
        // Same key after a reload.
        let s2 = ProofSigner::load_or_create(&p).expect("reload");
        assert_eq!(s.kid(), s2.kid());
        // Flip one character of the payload.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut b = parts[1].clone().into_bytes();
        b[5] = if b[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(b).expect("ascii");
        assert!(verify(&parts.join("."), s.jwks()).is_err());
    }

    #[test]
    fn token_is_byte_identical_to_jsonwebtoken_encode() {
        // Ed25519 is deterministic: the same header, claims and key give the same token.
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("k.pem");
        let s = ProofSigner::load_or_create(&p).expect("key");
        let t = s
            .sign("c", "b", "b2", 3, "paired", None, 4000)
            .expect("sign");
        let claims = verify(&t, s.jwks()).expect("verifies");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(s.kid().to_string());
        let key =
            jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&p).expect("pem")).expect("key");
        let reference = jsonwebtoken::encode(&header, &claims, &key).expect("encode");
        assert_eq!(t, reference);
    }
}
