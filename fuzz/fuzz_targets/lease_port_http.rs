//! The lease port's HTTP/1.1 layer: the bytes of a connection, cut into reads where the input
//! says. Run through `witness::server::http1::replay` (the request reader `serve` runs): it
//! never panics, reads the same requests and refusals whatever the reads' boundaries, hands on
//! no body over the limit, refuses only with the statuses docs/witness.md lists, and stops at
//! the first refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use witness::server::http1::{replay, Outcome};

const LIMIT: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose two cut points in the rest.
    let (cuts, bytes) = match data {
        [a, b, rest @ ..] => ((*a as usize, *b as usize), rest),
        _ => return,
    };
    let whole = replay(&[bytes], LIMIT);
    let (i, j) = {
        let n = bytes.len().max(1);
        let (x, y) = (cuts.0 * n / 256, cuts.1 * n / 256);
        (x.min(y), x.max(y))
    };
    let cut = replay(&[&bytes[..i], &bytes[i..j], &bytes[j..]], LIMIT);
    assert_eq!(whole, cut, "the reads' boundaries changed what was read (cuts at {i}, {j})");
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    if bytes.len() <= 512 {
        assert_eq!(whole, replay(&one_by_one, LIMIT), "byte-by-byte reads changed what was read");
    }
    let mut body_bytes = 0usize;
    for (k, o) in whole.iter().enumerate() {
        match o {
            Outcome::Request { body, .. } => {
                assert!(body.len() <= LIMIT, "a body over the limit was handed on");
                body_bytes += body.len();
            }
            Outcome::Refused { status, .. } => {
                assert!(
                    matches!(status, 400 | 413 | 417 | 431 | 501),
                    "refused with {status}, which the layer never answers"
                );
                assert_eq!(k + 1, whole.len(), "something was read after a refusal");
            }
            Outcome::Gone => assert_eq!(k + 1, whole.len(), "something was read after the end"),
        }
    }
    assert!(body_bytes <= bytes.len(), "more body bytes than were received");
});
