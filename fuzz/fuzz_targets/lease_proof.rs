//! A lease proof (a JWT signed by the witness) as `witness::proof::verify_signature` checks it
//! for an auditor. The input is either a whole token, or (first byte 1) an edit of a token this
//! process signed with its own key: bytes spliced in at a chosen place. Verification must not
//! panic, and whatever verifies must carry exactly the claims that were signed (no token the
//! fuzzer made up or altered may verify with other claims).
#![no_main]
use fuzz_support::scratch_file;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use witness::proof::{verify_signature, LeaseClaims, ProofSigner};

struct Signed {
    signer: ProofSigner,
    token: String,
    claims: LeaseClaims,
}

fn signed() -> &'static Signed {
    static S: OnceLock<Signed> = OnceLock::new();
    S.get_or_init(|| {
        let path = scratch_file("proof-key.pem");
        let signer = ProofSigner::load_or_create(&path)
            .unwrap_or_else(|e| panic!("cannot make the fuzz signing key: {e}"));
        let token = signer
            .sign("c", "a", "a1", 3, "alone", Some("allowed"), 4_000)
            .unwrap_or_else(|e| panic!("cannot sign: {e}"));
        let claims = verify_signature(&token, signer.jwks())
            .unwrap_or_else(|e| panic!("a fresh proof does not verify: {e}"));
        Signed {
            signer,
            token,
            claims,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = signed();
    let token = match data.split_first() {
        Some((1, rest)) if !rest.is_empty() => {
            let at = usize::from(rest[0]) * s.token.len() / 256;
            let mut t = s.token.as_bytes().to_vec();
            let cut = (at + rest.len().min(8)).min(t.len());
            t.splice(at..cut, rest[1..].iter().copied());
            t
        }
        _ => data.to_vec(),
    };
    let Ok(token) = String::from_utf8(token) else {
        return;
    };
    if let Ok(claims) = verify_signature(&token, s.signer.jwks()) {
        assert_eq!(
            claims, s.claims,
            "a token verified with claims that were never signed"
        );
    }
});
