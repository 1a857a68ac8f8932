//! Which witness identity a certificate carries. The rule, the same for the witness (reading a
//! client's certificate) and the agent (its own certificate, a peer's server certificate, a
//! peer's client certificate):
//!
//! - the identity is a SAN URI with a witness scheme, `witness://<cluster>/<room>/<node>` (a
//!   node) or `witness-admin://<name>` (an operator); the subject CN and every other SAN (DNS
//!   names, IP addresses, URIs of other schemes) are ignored, so a certificate can also serve
//!   as an ordinary server certificate;
//! - exactly one such URI: none is "no identity", two are refused as ambiguous (a certificate
//!   must not let its holder choose who it is per request);
//! - the one URI must parse ([`proto::ids::Identity::parse_uri`]).
//!
//! Whether the identity is *the expected one* (this node, the peer in the other room) is the
//! caller's question; this module only says who the certificate claims to be. The chain has
//! been verified by rustls before any of this is asked.
use proto::ids::Identity;
use rustls_pki_types::CertificateDer;
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Why a certificate yields no usable witness identity.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the certificate is not valid X.509: {0}")]
    NotX509(String),
    #[error("the certificate's subject alternative names are malformed: {0}")]
    BadSan(String),
    #[error(
        "the certificate carries no witness identity (SAN URIs: {uris:?}): it needs a SAN URI \
         witness://<cluster>/<room>/<node> or witness-admin://<name> \
         (issue it with `witness certs node` or `witness certs admin`)"
    )]
    None { uris: Vec<String> },
    #[error(
        "the certificate carries {} witness identities ({}); it must carry exactly one",
        .0.len(),
        .0.join(", ")
    )]
    Ambiguous(Vec<String>),
    #[error("the certificate's witness identity {uri} is invalid: {reason}")]
    Invalid { uri: String, reason: String },
    #[error("no certificate in the PEM text")]
    NoPem,
    #[error("the PEM text does not parse: {0}")]
    Pem(String),
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, IdentityError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| IdentityError::NotX509(e.to_string()))
}

fn is_witness_uri(u: &str) -> bool {
    u.starts_with(Identity::NODE_SCHEME) || u.starts_with(Identity::ADMIN_SCHEME)
}

/// Every SAN URI of the certificate (all schemes), in certificate order.
fn san_uris(der: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::BadSan(e.to_string()))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The witness-scheme SAN URIs of a certificate, unparsed (for `witness certs` and tests).
pub fn identity_uris(der: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    let mut uris = san_uris(der)?;
    uris.retain(|u| is_witness_uri(u));
    Ok(uris)
}

/// The witness identity a certificate carries (see the module comment for the rule).
pub fn cert_identity(der: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
    let all = san_uris(der)?;
    let witness: Vec<&String> = all.iter().filter(|u| is_witness_uri(u)).collect();
    match witness.as_slice() {
        [one] => Identity::parse_uri(one).map_err(|reason| IdentityError::Invalid {
            uri: (*one).clone(),
            reason,
        }),
        [] => Err(IdentityError::None { uris: all.clone() }),
        many => Err(IdentityError::Ambiguous(
            many.iter().map(|u| (*u).clone()).collect(),
        )),
    }
}

/// Every witness identity URI in the first certificate of a PEM text.
pub fn identities_in_pem(pem: &[u8]) -> Result<Vec<String>, IdentityError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| IdentityError::Pem(e.to_string()))?;
    let first = certs.first().ok_or(IdentityError::NoPem)?;
    identity_uris(first)
}

/// A certificate's `notAfter` in seconds since the Unix epoch.
pub fn cert_not_after(der: &CertificateDer<'_>) -> Result<i64, IdentityError> {
    Ok(parse(der)?.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{ClusterId, NodeId, RoomId};
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    /// A self-signed certificate with the given CN and SANs (the chain is rustls's business).
    fn cert(cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        p.self_signed(&key).expect("sign").der().clone()
    }

    fn uri(u: &str) -> SanType {
        SanType::URI(u.try_into().expect("ia5"))
    }

    fn node(c: &str, r: &str, n: &str) -> Identity {
        Identity::Node {
            cluster: ClusterId::new(c),
            room: RoomId::new(r),
            node: NodeId::new(n),
        }
    }

    #[test]
    fn a_node_certificate_names_its_node_among_other_names() {
        let c = cert(
            "witness://c1/a/n1",
            vec![
                SanType::DnsName("n1.example".try_into().expect("dns")),
                SanType::IpAddress("10.0.0.1".parse().expect("ip")),
                uri("spiffe://example/ns/n1"),
                uri("witness://c1/a/n1"),
            ],
        );
        assert_eq!(cert_identity(&c), Ok(node("c1", "a", "n1")));
        assert_eq!(identity_uris(&c), Ok(vec!["witness://c1/a/n1".to_string()]));
    }

    #[test]
    fn the_certificate_of_another_node_names_that_node_not_ours() {
        let ours = cert("n1", vec![uri("witness://c1/a/n1")]);
        let other = cert("n1", vec![uri("witness://c1/b/n2")]);
        let id = cert_identity(&other).expect("identity");
        assert_eq!(id, node("c1", "b", "n2"));
        assert_ne!(id, cert_identity(&ours).expect("identity"));
    }

    #[test]
    fn an_operator_certificate_carries_an_admin_identity() {
        let c = cert("ops", vec![uri("witness-admin://ops")]);
        assert_eq!(
            cert_identity(&c),
            Ok(Identity::Admin { name: "ops".into() })
        );
    }

    #[test]
    fn a_certificate_without_identity_is_refused_even_with_a_witness_cn() {
        // The CN is what `witness certs` writes for humans; only the SAN URI is an identity.
        let c = cert(
            "witness://c1/a/n1",
            vec![SanType::DnsName("n1.example".try_into().expect("dns"))],
        );
        let e = cert_identity(&c).expect_err("no identity");
        assert_eq!(e, IdentityError::None { uris: vec![] });
        assert!(e.to_string().contains("witness certs node"), "{e}");
        let c = cert("x", vec![uri("spiffe://example/x")]);
        assert_eq!(
            cert_identity(&c),
            Err(IdentityError::None {
                uris: vec!["spiffe://example/x".into()]
            })
        );
        let c = cert("x", vec![]);
        assert_eq!(cert_identity(&c), Err(IdentityError::None { uris: vec![] }));
    }

    #[test]
    fn two_identities_are_ambiguous_even_when_one_is_malformed() {
        let c = cert(
            "x",
            vec![uri("witness://c1/a/n1"), uri("witness-admin://ops")],
        );
        assert!(matches!(cert_identity(&c), Err(IdentityError::Ambiguous(v)) if v.len() == 2));
        let c = cert("x", vec![uri("witness://c1/a/n1"), uri("witness://c1/a")]);
        assert!(matches!(
            cert_identity(&c),
            Err(IdentityError::Ambiguous(_))
        ));
    }

    #[test]
    fn a_malformed_identity_is_refused_with_its_uri() {
        let c = cert("x", vec![uri("witness://c1/a")]);
        let e = cert_identity(&c).expect_err("malformed");
        assert!(
            matches!(&e, IdentityError::Invalid { uri, .. } if uri == "witness://c1/a"),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(matches!(
            cert_identity(&der),
            Err(IdentityError::NotX509(_))
        ));
        assert!(matches!(
            cert_not_after(&der),
            Err(IdentityError::NotX509(_))
        ));
        assert_eq!(identities_in_pem(b"not pem"), Err(IdentityError::NoPem));
    }
}
