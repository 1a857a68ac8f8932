//! The witness's answer to a lease request, as the agent reads it
//! (`agent::net::decode_lease_reply`): anything accepted must re-encode and decode to the same
//! reply; a reply addressed to this node (as the agent checks) goes to its state machine.
#![no_main]
use fuzz_support::{agent_config, agent_step, drive_agent, Choices};
use libfuzzer_sys::fuzz_target;
use proto::agent::{AgentInput, NodeAgent, RunState};
use proto::Millis;

fuzz_target!(|data: &[u8]| {
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(reply) = agent::net::decode_lease_reply(body) else {
        return;
    };
    let again = serde_json::to_vec(&reply).expect("a decoded lease reply encodes");
    // The witness writes replies with its own writer: byte for byte what serde_json writes.
    let mut written = Vec::new();
    reply.write_json(&mut written);
    assert_eq!(
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(&again),
        "the witness's reply writer and serde_json differ"
    );
    let back = agent::net::decode_lease_reply(&again)
        .unwrap_or_else(|e| panic!("a re-encoded lease reply is refused: {e}"));
    assert_eq!(back, reply, "a lease reply changed through re-encoding");
    let cfg = agent_config();
    if (&reply.cluster, &reply.room, &reply.node) != (&cfg.cluster, &cfg.room, &cfg.node) {
        return;
    }
    let mut c = Choices::new(rest);
    let mut agent = NodeAgent::new(cfg, RunState::booted());
    let now = Millis(1_000_000);
    drive_agent(&mut agent, now, &mut c, 4);
    let now = Millis(2_000_000);
    let sent_at = now - c.u64();
    agent_step(&mut agent, now, AgentInput::LeaseReply { sent_at, reply });
    drive_agent(&mut agent, now, &mut c, 16);
});
