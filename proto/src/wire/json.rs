//! The lease request and reply as JSON, without serde's generic machinery: the witness reads
//! and writes one of each per renewal, and through `serde_json` that was a third of its CPU per
//! renewal (UTF-8 checked again for every key, every field name matched through a visitor, every
//! key escaped on the way out).
//!
//! Neither defines the wire format; the serde derives in [`super`] do, and these agree with them
//! byte for byte (the tests compare them on generated messages):
//! - [`LeaseRequest::from_json_plain`] reads only the plain form an agent sends (serde's own
//!   compact output: the keys in their declared order, no whitespace, no escapes) and answers
//!   `None` for anything else, which the caller then reads with `serde_json` as before, so every
//!   refusal and its message stay serde's.
//! - [`LeaseReply::write_json`] writes what `serde_json::to_writer` writes, escapes included.
use super::{
    LeaseMode, LeaseReply, LeaseRequest, MemberEntry, MemberStatus, Membership, NodePhase,
    PeerReport, TakeoverPermit, Verdict,
};
use crate::ids::Epoch;

/// A cursor over a JSON text that gives up (`None`) at the first thing outside the plain form.
struct Plain<'a> {
    /// What is left to read.
    rest: &'a [u8],
}

impl<'a> Plain<'a> {
    /// Takes `text` if it comes next.
    fn lit(&mut self, text: &[u8]) -> bool {
        match self.rest.strip_prefix(text) {
            Some(tail) => {
                self.rest = tail;
                true
            }
            None => false,
        }
    }

    /// Takes `text`, or gives up.
    fn expect(&mut self, text: &[u8]) -> Option<()> {
        self.lit(text).then_some(())
    }

    /// A string without escapes (serde writes none unless the text holds a quote, a backslash
    /// or a control character), borrowed from the text.
    fn str(&mut self) -> Option<&'a str> {
        self.expect(b"\"")?;
        let len = self.rest.iter().position(|&b| b == b'"')?;
        let (s, tail) = self.rest.split_at(len);
        if s.iter().any(|&b| b < 0x20 || b == b'\\') {
            return None;
        }
        self.rest = &tail[1..];
        std::str::from_utf8(s).ok()
    }

    /// An unsigned integer without leading zeros that fits a u64 (a sign, fraction or exponent
    /// is refused by what the caller expects next).
    fn u64(&mut self) -> Option<u64> {
        let digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (number, tail) = self.rest.split_at(digits);
        if digits == 0 || (digits > 1 && number[0] == b'0') {
            return None;
        }
        let mut n: u64 = 0;
        for d in number {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.rest = tail;
        Some(n)
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true") {
            Some(true)
        } else if self.lit(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// `key` and its value (read by `value`) if the key comes next, else `None`.
    fn field<T>(
        &mut self,
        key: &[u8],
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.lit(key) {
            value(self).map(Some)
        } else {
            Some(None)
        }
    }
}

fn phase(p: &mut Plain<'_>) -> Option<NodePhase> {
    Some(if p.lit(b"\"active\"") {
        NodePhase::Active
    } else if p.lit(b"\"starting\"") {
        NodePhase::Starting
    } else if p.lit(b"\"fencing\"") {
        NodePhase::Fencing
    } else if p.lit(b"\"fenced\"") {
        NodePhase::Fenced
    } else {
        return None;
    })
}

fn peer_report(p: &mut Plain<'_>) -> Option<PeerReport> {
    p.expect(b"{\"node\":")?;
    let node = p.str()?.into();
    let vouched_ms_ago = p.field(b",\"vouched_ms_ago\":", Plain::u64)?;
    let answered_ms_ago = p.field(b",\"answered_ms_ago\":", Plain::u64)?;
    let unvouched_ms = p.field(b",\"unvouched_ms\":", Plain::u64)?;
    p.expect(b"}")?;
    Some(PeerReport {
        node,
        vouched_ms_ago,
        answered_ms_ago,
        unvouched_ms,
    })
}

fn peer_reports(p: &mut Plain<'_>) -> Option<Vec<PeerReport>> {
    p.expect(b"[")?;
    let mut v = Vec::new();
    if p.lit(b"]") {
        return Some(v);
    }
    loop {
        v.push(peer_report(p)?);
        if p.lit(b"]") {
            return Some(v);
        }
        p.expect(b",")?;
    }
}

impl LeaseRequest {
    /// Reads a lease request in the plain form an agent sends (serde's own output: its keys in
    /// their order, no whitespace, no escapes); `None` for anything else, including every
    /// malformed body, which the caller reads with `serde_json` instead. What it returns is what
    /// `serde_json` returns for the same text.
    pub fn from_json_plain(raw: &[u8]) -> Option<LeaseRequest> {
        let mut p = Plain { rest: raw };
        p.expect(b"{\"version\":")?;
        let version = p.u32()?;
        p.expect(b",\"cluster\":")?;
        let cluster = p.str()?.into();
        p.expect(b",\"room\":")?;
        let room = p.str()?.into();
        p.expect(b",\"node\":")?;
        let node = p.str()?.into();
        p.expect(b",\"epoch\":")?;
        let epoch = Epoch(p.u64()?);
        p.expect(b",\"phase\":")?;
        let phase = phase(&mut p)?;
        p.expect(b",\"peer_contact\":")?;
        let peer_contact = p.bool()?;
        p.expect(b",\"peer_reachable\":")?;
        let peer_reachable = p.bool()?;
        p.expect(b",\"claim\":")?;
        let claim = p.bool()?;
        p.expect(b",\"takeover\":")?;
        let takeover = p.bool()?;
        p.expect(b",\"health\":")?;
        let health = p.u32()?;
        let peers = p.field(b",\"peers\":", peer_reports)?;
        let members_version = p.field(b",\"members_version\":", Plain::u64)?;
        let address = p.field(b",\"address\":", Plain::str)?;
        p.expect(b"}")?;
        if !p.rest.is_empty() {
            return None;
        }
        Some(LeaseRequest {
            version,
            cluster,
            room,
            node,
            epoch,
            phase,
            peer_contact,
            peer_reachable,
            claim,
            takeover,
            health,
            peers: peers.unwrap_or_default(),
            members_version: members_version.unwrap_or(0),
            address: address.map(str::to_string),
        })
    }
}

/// "00" to "99": two digits per division, half the divisions of one digit at a time.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Appends `n` in decimal.
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        plain_from = i + 1;
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

fn takeover_text(t: TakeoverPermit) -> &'static str {
    match t {
        TakeoverPermit::Wait => "wait",
        TakeoverPermit::Allowed => "allowed",
        TakeoverPermit::Release => "release",
    }
}

fn status_text(s: MemberStatus) -> &'static str {
    match s {
        MemberStatus::Member => "member",
        MemberStatus::Excluded => "excluded",
        MemberStatus::Removed => "removed",
        MemberStatus::Decommissioned => "decommissioned",
    }
}

fn write_verdict(out: &mut Vec<u8>, v: &Verdict) {
    match v {
        Verdict::Grant { mode, valid_ms } => {
            out.extend_from_slice(b"{\"verdict\":\"grant\"");
            match mode {
                LeaseMode::Paired => out.extend_from_slice(b",\"mode\":\"paired\""),
                LeaseMode::Alone { takeover } => {
                    out.extend_from_slice(b",\"mode\":\"alone\"");
                    out.extend_from_slice(b",\"takeover\":");
                    write_str(out, takeover_text(*takeover));
                }
            }
            out.extend_from_slice(b",\"valid_ms\":");
            write_u64(out, *valid_ms);
        }
        Verdict::Fence { reason } => {
            out.extend_from_slice(b"{\"verdict\":\"fence\"");
            out.extend_from_slice(b",\"reason\":");
            write_str(out, reason);
        }
        Verdict::Retry { after_ms, reason } => {
            out.extend_from_slice(b"{\"verdict\":\"retry\"");
            out.extend_from_slice(b",\"after_ms\":");
            write_u64(out, *after_ms);
            out.extend_from_slice(b",\"reason\":");
            write_str(out, reason);
        }
    }
    out.push(b'}');
}

fn write_member(out: &mut Vec<u8>, m: &MemberEntry) {
    out.extend_from_slice(b"{\"node\":");
    write_str(out, m.node.as_str());
    out.extend_from_slice(b",\"room\":");
    write_str(out, m.room.as_str());
    out.extend_from_slice(b",\"status\":");
    write_str(out, status_text(m.status));
    if let Some(a) = &m.address {
        out.extend_from_slice(b",\"address\":");
        write_str(out, a);
    }
    out.push(b'}');
}

fn write_membership(out: &mut Vec<u8>, m: &Membership) {
    out.extend_from_slice(b"{\"version\":");
    write_u64(out, m.version);
    out.extend_from_slice(b",\"members\":");
    out.push(b'[');
    for (i, e) in m.members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_member(out, e);
    }
    out.extend_from_slice(b"]}");
}

impl LeaseReply {
    /// Appends the reply as JSON: the bytes `serde_json::to_writer` writes for it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"version\":");
        write_u64(out, u64::from(self.version));
        out.extend_from_slice(b",\"cluster\":");
        write_str(out, self.cluster.as_str());
        out.extend_from_slice(b",\"room\":");
        write_str(out, self.room.as_str());
        out.extend_from_slice(b",\"node\":");
        write_str(out, self.node.as_str());
        out.extend_from_slice(b",\"epoch\":");
        write_u64(out, self.epoch.0);
        out.extend_from_slice(b",\"verdict\":");
        write_verdict(out, &self.verdict);
        if let Some(p) = &self.proof {
            out.extend_from_slice(b",\"proof\":");
            write_str(out, p);
        }
        if let Some(m) = &self.members {
            out.extend_from_slice(b",\"members\":");
            write_membership(out, m);
        }
        if let Some(t) = self.witness_ms {
            out.extend_from_slice(b",\"witness_ms\":");
            write_u64(out, t);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClusterId, NodeId, RoomId};
    use crate::wire::WIRE_VERSION;
    use proptest::prelude::*;

    const PLAIN: &str = r#"{"version":1,"cluster":"c-00","room":"a","node":"c-00-a","epoch":7,"phase":"active","peer_contact":true,"peer_reachable":true,"claim":false,"takeover":false,"health":100,"peers":[{"node":"c-00-b","vouched_ms_ago":412,"answered_ms_ago":412}],"members_version":3,"address":"127.0.0.1:7400"}"#;

    /// The plain reader agrees with serde: whenever it reads something, serde reads the same.
    fn agrees(raw: &[u8]) -> bool {
        let fast = LeaseRequest::from_json_plain(raw);
        if let Some(f) = &fast {
            let slow: LeaseRequest = serde_json::from_slice(raw).unwrap_or_else(|e| {
                panic!(
                    "{:?} read plainly, refused by serde: {e}",
                    String::from_utf8_lossy(raw)
                )
            });
            assert_eq!(f, &slow, "{:?}", String::from_utf8_lossy(raw));
        }
        fast.is_some()
    }

    #[test]
    fn numbers_are_written_as_rust_writes_them() {
        let mut cases = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            u64::MAX,
            u64::MAX - 1,
        ];
        for p in 1..20u32 {
            let t = 10u64.pow(p);
            cases.extend([t - 1, t, t + 1]);
        }
        // A fixed pseudo-random walk over the whole range.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.extend([x, x >> (x % 64)]);
        }
        for n in cases {
            let mut out = b"x".to_vec();
            write_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes(), "{n}");
        }
    }

    #[test]
    fn what_an_agent_sends_is_read_plainly_as_serde_reads_it() {
        assert!(agrees(PLAIN.as_bytes()));
        let req: LeaseRequest = serde_json::from_str(PLAIN).expect("reads");
        assert!(agrees(&serde_json::to_vec(&req).expect("encodes")));
        // An older agent's request: no peers, membership version or address.
        assert!(agrees(
            br#"{"version":1,"cluster":"c","room":"a","node":"n","epoch":0,"phase":"starting","peer_contact":false,"peer_reachable":false,"claim":true,"takeover":true,"health":0}"#
        ));
        let edges = [
            PLAIN.replace(r#""room":"a""#, "\"room\":\"ä\u{7f}\""),
            PLAIN.replace(r#""health":100"#, r#""health":4294967295"#),
            PLAIN.replace(r#""epoch":7"#, r#""epoch":18446744073709551615"#),
            PLAIN.replace(r#""version":1"#, r#""version":0"#),
            PLAIN.replace(r#""phase":"active""#, r#""phase":"fenced""#),
            PLAIN.replace(r#""members_version":3"#, r#""members_version":0"#),
            PLAIN.replace(
                r#"{"node":"c-00-b","vouched_ms_ago":412,"answered_ms_ago":412}"#,
                "",
            ),
            PLAIN.replace(
                r#""answered_ms_ago":412"#,
                r#""answered_ms_ago":0,"unvouched_ms":9"#,
            ),
        ];
        for e in &edges {
            assert!(agrees(e.as_bytes()), "left to serde: {e}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        let cases = [
            // serde refuses these, with its own message.
            PLAIN.replace(r#""health":100"#, r#""health":100,"health":100"#),
            PLAIN.replace(r#""version":1"#, r#""version":1,"version":1"#),
            PLAIN.replace(r#""health":100"#, r#""health":100,"extra":1"#),
            PLAIN.replace(r#""health":100,"#, ""),
            PLAIN.replace(r#""health":100"#, r#""health":4294967296"#),
            PLAIN.replace(r#""epoch":7"#, r#""epoch":18446744073709551616"#),
            PLAIN.replace(r#""health":100"#, r#""health":0100"#),
            PLAIN.replace(r#""health":100"#, r#""health":100.0"#),
            PLAIN.replace(r#""health":100"#, r#""health":1e2"#),
            PLAIN.replace(r#""health":100"#, r#""health":-1"#),
            PLAIN.replace(r#""health":100"#, r#""health":null"#),
            PLAIN.replace(r#""phase":"active""#, r#""phase":"sleeping""#),
            PLAIN.replace(r#""phase":"active""#, r#""phase":"activ""#),
            PLAIN.replace(r#""claim":false"#, r#""claim":fals"#),
            PLAIN.replace(r#""claim":false"#, r#""claim":falsey"#),
            PLAIN.replace(r#""room":"a""#, "\"room\":\"a\u{1}\""),
            PLAIN.replace(r#","address""#, r#",,"address""#),
            PLAIN.replace(r#"412}]"#, r#"412},]"#),
            PLAIN.replace('}', "},"),
            format!("{PLAIN}x"),
            format!("\u{feff}{PLAIN}"),
            PLAIN[..PLAIN.len() - 1].to_string(),
            // serde reads these; the plain reader leaves them to it.
            PLAIN.replace(r#""room":"a""#, r#""room":"\u0061""#),
            PLAIN.replace(r#""room":"a""#, r#""r\u006fom":"a""#),
            PLAIN.replace(r#""epoch":7"#, r#""epoch":-0"#),
            PLAIN.replace(r#""address":"127.0.0.1:7400""#, r#""address":null"#),
            PLAIN.replace(r#","vouched_ms_ago":412"#, r#","vouched_ms_ago":null"#),
            PLAIN.replace(
                r#""room":"a","node":"c-00-a""#,
                r#""node":"c-00-a","room":"a""#,
            ),
            PLAIN.replace(':', ": "),
            format!(" {PLAIN}"),
            format!("{PLAIN}\n"),
            serde_json::to_string_pretty(
                &serde_json::from_str::<LeaseRequest>(PLAIN).expect("reads"),
            )
            .expect("encodes"),
        ];
        for c in &cases {
            assert!(!agrees(c.as_bytes()), "read plainly: {c}");
        }
        assert!(!agrees(b""));
        assert!(!agrees(b"[1]"));
        assert!(!agrees(b"{}"));
    }

    /// Names as agents write them, anything at all, and the characters JSON escapes.
    fn name() -> impl Strategy<Value = String> {
        let awkward = prop::sample::select(vec![
            'a', '"', '\\', '\u{0}', '\u{8}', '\t', '\n', '\u{c}', '\r', '\u{1f}', '\u{7f}', 'é',
            '/',
        ]);
        prop_oneof![
            "[a-z0-9.-]{0,12}",
            any::<String>(),
            prop::collection::vec(awkward, 0..8).prop_map(|v| v.into_iter().collect()),
        ]
    }

    prop_compose! {
        fn lease_request()(
            version in prop_oneof![Just(WIRE_VERSION), any::<u32>()],
            names in (name(), name(), name()),
            epoch in any::<u64>(),
            phase in 0..4usize,
            flags in any::<[bool; 4]>(),
            health in any::<u32>(),
            peers in prop::collection::vec(
                (name(), any::<Option<u64>>(), any::<Option<u64>>(), any::<Option<u64>>()), 0..3),
            members_version in prop_oneof![Just(0u64), any::<u64>()],
            address in prop::option::of(name()),
        ) -> LeaseRequest {
            LeaseRequest {
                version,
                cluster: ClusterId(names.0),
                room: RoomId(names.1),
                node: NodeId(names.2),
                epoch: Epoch(epoch),
                phase: [NodePhase::Starting, NodePhase::Active, NodePhase::Fencing, NodePhase::Fenced][phase],
                peer_contact: flags[0],
                peer_reachable: flags[1],
                claim: flags[2],
                takeover: flags[3],
                health,
                peers: peers.into_iter().map(|(n, v, a, u)| PeerReport {
                    node: n.as_str().into(),
                    vouched_ms_ago: v,
                    answered_ms_ago: a,
                    unvouched_ms: u,
                }).collect(),
                members_version,
                address,
            }
        }
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        let permit = prop_oneof![
            Just(TakeoverPermit::Wait),
            Just(TakeoverPermit::Allowed),
            Just(TakeoverPermit::Release)
        ];
        prop_oneof![
            any::<u64>().prop_map(|valid_ms| Verdict::Grant {
                mode: LeaseMode::Paired,
                valid_ms
            }),
            (permit, any::<u64>()).prop_map(|(takeover, valid_ms)| Verdict::Grant {
                mode: LeaseMode::Alone { takeover },
                valid_ms
            }),
            name().prop_map(|reason| Verdict::Fence { reason }),
            (any::<u64>(), name())
                .prop_map(|(after_ms, reason)| Verdict::Retry { after_ms, reason }),
        ]
    }

    fn membership() -> impl Strategy<Value = Membership> {
        let status = prop_oneof![
            Just(MemberStatus::Member),
            Just(MemberStatus::Excluded),
            Just(MemberStatus::Removed),
            Just(MemberStatus::Decommissioned)
        ];
        let entry = (name(), name(), status, prop::option::of(name())).prop_map(
            |(n, r, status, address)| MemberEntry {
                node: n.as_str().into(),
                room: r.as_str().into(),
                status,
                address,
            },
        );
        (any::<u64>(), prop::collection::vec(entry, 0..4))
            .prop_map(|(version, members)| Membership { version, members })
    }

    prop_compose! {
        fn lease_reply()(
            version in any::<u32>(),
            names in (name(), name(), name()),
            epoch in any::<u64>(),
            verdict in verdict(),
            proof in prop::option::of(name()),
            members in prop::option::of(membership()),
            witness_ms in any::<Option<u64>>(),
        ) -> LeaseReply {
            LeaseReply {
                version,
                cluster: ClusterId(names.0),
                room: RoomId(names.1),
                node: NodeId(names.2),
                epoch: Epoch(epoch),
                verdict,
                proof,
                members,
                witness_ms,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_encoded_request_is_read_as_serde_reads_it(req in lease_request(), pretty in any::<bool>()) {
            let raw = if pretty { serde_json::to_vec_pretty(&req) } else { serde_json::to_vec(&req) };
            let raw = raw.expect("encodes");
            let plain = agrees(&raw);
            // Only whitespace and escapes send a request serde writes to serde.
            let bare = |s: &str| !s.chars().any(|c| c < ' ' || c == '"' || c == '\\');
            let names_plain = bare(req.cluster.as_str()) && bare(req.room.as_str()) && bare(req.node.as_str())
                && req.peers.iter().all(|p| bare(p.node.as_str()))
                && req.address.as_deref().is_none_or(bare);
            prop_assert_eq!(plain, names_plain && !pretty);
        }

        #[test]
        fn a_cut_or_altered_request_is_refused_or_read_as_serde_reads_it(
            req in lease_request(), cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(), byte in prop::sample::select(b"{}[]\":,0123456789-.eE \\tfrnul\x00\x80ax".to_vec()),
        ) {
            let raw = serde_json::to_vec(&req).expect("encodes");
            agrees(&raw[..cut.index(raw.len() + 1)]);
            let mut altered = raw.clone();
            let i = at.index(altered.len());
            altered[i] = byte;
            agrees(&altered);
            altered.insert(i, byte);
            agrees(&altered);
            altered.remove(i);
            altered.remove(i);
            agrees(&altered);
        }

        #[test]
        fn every_reply_is_written_as_serde_writes_it(reply in lease_reply()) {
            let mut fast = Vec::new();
            reply.write_json(&mut fast);
            let slow = serde_json::to_vec(&reply).expect("encodes");
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow));
        }
    }
}
