//! What the witness and the agent both need to agree on at the edge of a TLS connection: which
//! witness identity a certificate carries ([`cert`]), and how a flood of refused connections is
//! logged ([`loglimit`]). One copy, so the two programs cannot drift apart.

pub mod cert;
pub mod loglimit;

pub use cert::{cert_identity, cert_not_after, identities_in_pem, identity_uris, IdentityError};
pub use loglimit::LogLimiter;
