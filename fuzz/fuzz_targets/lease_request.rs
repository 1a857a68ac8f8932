//! `POST /v1/lease` on the witness: the body a node (or anyone holding a node certificate)
//! sends. Decoded by the server's own `witness::api::parse_versioned` (its plain reader must
//! agree with serde_json on every body it accepts); what it accepts must
//! re-encode and decode to the same request, and a request the identity check would let through
//! (valid names) then goes to a fresh arbiter, then the rest of the input drives that arbiter.
#![no_main]
use fuzz_support::{arbiter_step, drive_arbiter, Choices};
use libfuzzer_sys::fuzz_target;
use proto::arbiter::{Arbiter, ArbiterConfig, ArbiterInput};
use proto::ids::check_name;
use proto::wire::LeaseRequest;
use proto::Millis;

fuzz_target!(|data: &[u8]| {
    // The body, then (after a NUL byte, which JSON text never holds) choices for more steps.
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // The plain reader (every renewal's path) must read a body exactly as serde_json does, or
    // leave it to serde_json: two parsers that disagree would be a way past the checks.
    if let Some(plain) = LeaseRequest::from_json_plain(body) {
        let by_serde: LeaseRequest = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("the plain reader accepts a body serde_json refuses: {e}"));
        assert_eq!(plain, by_serde, "the plain reader and serde_json read a body differently");
    }
    let Ok(req) = witness::api::parse_versioned::<LeaseRequest>(body, "the lease request") else {
        return;
    };
    let again = serde_json::to_vec(&req).expect("a decoded lease request encodes");
    match witness::api::parse_versioned::<LeaseRequest>(&again, "the re-encoded lease request") {
        Ok(back) => assert_eq!(back, req, "a lease request changed through re-encoding"),
        Err(r) => panic!("a re-encoded lease request is refused: {}", r.message),
    }
    // The server compares these names with the certificate's, whose names are checked.
    let names_ok = check_name("cluster", req.cluster.as_str()).is_ok()
        && check_name("room", req.room.as_str()).is_ok()
        && check_name("node", req.node.as_str()).is_ok();
    if !names_ok {
        return;
    }
    let now = Millis(1_000_000);
    let mut a = Arbiter::create(ArbiterConfig::default(), req.cluster.clone(), now);
    arbiter_step(&mut a, now, ArbiterInput::Lease(req));
    drive_arbiter(&mut a, now, &mut Choices::new(rest), 32);
});
