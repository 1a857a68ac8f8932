//! The request reader's properties: the same bytes give the same requests and refusals
//! whatever the reads' boundaries, and framings that could be read two ways are refused.
use super::*;

const LIMIT: usize = 1024;

fn renewal(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/lease HTTP/1.1\r\nHost: w\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Every way of cutting `bytes` in two and in three gives the outcomes of the whole.
fn same_whatever_the_cuts(bytes: &[u8]) -> Vec<Outcome> {
    let whole = replay(&[bytes], LIMIT);
    let step = (bytes.len() / 40).max(1);
    for i in (0..=bytes.len()).step_by(step) {
        let (a, b) = bytes.split_at(i);
        assert_eq!(
            replay(&[a, b], LIMIT),
            whole,
            "cut at {i} of {:?}",
            String::from_utf8_lossy(bytes)
        );
        for j in (i..=bytes.len()).step_by(step * 3) {
            let (b1, b2) = b.split_at(j - i);
            assert_eq!(replay(&[a, b1, b2], LIMIT), whole, "cuts at {i}, {j}");
        }
    }
    whole
}

#[test]
fn requests_are_read_the_same_whatever_the_reads_boundaries() {
    let two = [
        renewal("{\"a\":1}", ""),
        renewal("{}", "Connection: close\r\n"),
    ]
    .concat();
    let out = same_whatever_the_cuts(&two);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        matches!(&out[0], Outcome::Request { body, keep_alive: true, .. } if body == b"{\"a\":1}"),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], Outcome::Request { body, keep_alive: false, .. } if body == b"{}"),
        "{out:?}"
    );

    let cont = renewal("{\"x\":2}", "Expect: 100-continue\r\n");
    assert!(
        matches!(&same_whatever_the_cuts(&cont)[0], Outcome::Request { body, .. } if body == b"{\"x\":2}")
    );

    let old = b"GET /v1/jwks?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.0\r\n\r\n";
    let out = same_whatever_the_cuts(old);
    assert!(
        matches!(&out[0], Outcome::Request { target, keep_alive: true, .. } if target == "/v1/jwks?x=1"),
        "{out:?}"
    );
    assert!(
        matches!(
            &out[1],
            Outcome::Request {
                keep_alive: false,
                head_only: true,
                ..
            }
        ),
        "{out:?}"
    );

    // Chunked: extensions and trailers read and dropped, the data joined.
    let chunked = b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\n{\"a\r\n4 \r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let out = same_whatever_the_cuts(chunked);
    assert!(
        matches!(&out[0], Outcome::Request { body, .. } if body == b"{\"a\":1}"),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], Outcome::Request { method, .. } if method == "GET"),
        "{out:?}"
    );
    let cut = b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    assert_eq!(same_whatever_the_cuts(cut), vec![Outcome::Gone]);

    // A truncated body is the peer going away, never a request.
    let cut = renewal("{\"abc\":1}", "");
    assert_eq!(
        same_whatever_the_cuts(&cut[..cut.len() - 2]),
        vec![Outcome::Gone]
    );
}

#[test]
fn framing_that_could_be_read_two_ways_is_refused() {
    let refused = |bytes: &[u8]| match same_whatever_the_cuts(bytes).last() {
        Some(Outcome::Refused { status, reason }) => (*status, *reason),
        other => panic!(
            "not refused: {other:?} for {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    assert_eq!(refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), (400, "bad_http"));
    assert_eq!(refused(b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), (501, "bad_http"));
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        (501, "bad_http")
    );
    let chunked =
        |body: &str| format!("POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    assert_eq!(refused(chunked("x\r\n").as_bytes()), (400, "bad_http"));
    assert_eq!(
        refused(chunked("+2\r\nab\r\n0\r\n\r\n").as_bytes()),
        (400, "bad_http")
    );
    assert_eq!(
        refused(chunked("2\r\nabc\r\n0\r\n\r\n").as_bytes()),
        (400, "bad_http")
    );
    assert_eq!(
        refused(chunked("2;a\nb\r\nab\r\n0\r\n\r\n").as_bytes()),
        (400, "bad_http")
    );
    assert_eq!(
        refused(chunked("fffffffffffffffff\r\n").as_bytes()),
        (400, "bad_http")
    );
    assert_eq!(
        refused(chunked("ffffffffffffffff\r\n").as_bytes()),
        (413, "body_too_large")
    );
    assert_eq!(
        refused(chunked(&format!("200\r\n{}\r\n201\r\n", "a".repeat(512))).as_bytes()),
        (413, "body_too_large")
    );
    assert_eq!(
        refused(chunked(&"1;e\r\na\r\n".repeat(800)).as_bytes()),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
        (501, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"),
        (413, "body_too_large")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\nContent Length: 2\r\n\r\nab"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/1.1\r\n Content-Length: 2\r\n\r\nab"),
        (400, "bad_http")
    );
    assert_eq!(
        refused(b"POST /v1/lease HTTP/2.0\r\n\r\n"),
        (400, "bad_http")
    );
    assert_eq!(refused(b"GET /\x01 HTTP/1.1\r\n\r\n"), (400, "bad_http"));
    let big = format!(
        "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
        "y".repeat(MAX_HEAD_BYTES)
    );
    assert_eq!(refused(big.as_bytes()), (431, "head_too_large"));
    // A refusal ends the connection: nothing after it is read as a request.
    let after = [
        &b"POST /v1/lease HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        &renewal("{}", ""),
    ]
    .concat();
    assert_eq!(replay(&[&after], LIMIT).len(), 1);
}
