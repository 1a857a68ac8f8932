//! A client certificate (DER) as both shells read its identity: the witness
//! (`witness::tls::identity_of`, on the lease port) and the agent (`agent::tls::cert_identity`
//! on the heartbeat port, `cert_not_after` for expiry). Neither may panic; where both accept a
//! certificate they must name the same identity, and that identity's URI must parse back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto::ids::Identity;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let der = CertificateDer::from(data);
    let w = witness::tls::identity_of(&der);
    let a = agent::tls::cert_identity(&der);
    let _ = agent::tls::cert_not_after(&der);
    if let (Ok(w), Ok(a)) = (&w, &a) {
        assert_eq!(w, a, "the witness and the agent read different identities");
    }
    for id in [w.ok(), a.ok()].into_iter().flatten() {
        assert_eq!(Identity::parse_uri(&id.to_uri()).as_ref(), Ok(&id));
    }
});
