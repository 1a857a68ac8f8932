//! The DRBD fence-peer handler's input: the local agent's `GET /v1/fence-peer` answer, decoded
//! as the handler's HTTP client does (`reqwest::Response::json`, which is
//! `serde_json::from_slice`) into `agent::status::FencePeerAnswer`. Must not panic; what it
//! accepts re-encodes and decodes to the same answer.
#![no_main]
use agent::status::FencePeerAnswer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = serde_json::from_slice::<FencePeerAnswer>(data) else {
        return;
    };
    let again = serde_json::to_vec(&a).expect("an answer encodes");
    let back: FencePeerAnswer =
        serde_json::from_slice(&again).unwrap_or_else(|e| panic!("re-encoded answer: {e}"));
    assert_eq!(back, a);
});
