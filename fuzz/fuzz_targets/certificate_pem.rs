//! A certificate file (PEM) as `witness::tls::identities_in_pem` reads it (`witness certs`,
//! tests): must not panic, and every identity URI it returns carries a witness scheme.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto::ids::Identity;

fuzz_target!(|data: &[u8]| {
    if let Ok(uris) = witness::tls::identities_in_pem(data) {
        for u in uris {
            assert!(u.starts_with(Identity::NODE_SCHEME) || u.starts_with(Identity::ADMIN_SCHEME));
        }
    }
});
