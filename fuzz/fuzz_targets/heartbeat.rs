//! The heartbeat between agents of the two rooms: the body of `POST /v1/heartbeat` (a ping,
//! decoded by `agent::net::decode_ping`) and its answer (a pong, decoded by
//! `agent::net::decode_pong`). The same bytes go to both decoders. Anything accepted must
//! re-encode and decode to the same value; a ping that names a configured peer is answered by
//! the agent's state machine, and a pong from a configured peer is taken in.
#![no_main]
use fuzz_support::{agent_config, agent_step, Choices};
use libfuzzer_sys::fuzz_target;
use proto::agent::{AgentInput, NodeAgent, RunState};
use proto::Millis;

fuzz_target!(|data: &[u8]| {
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let ping = agent::net::decode_ping(body).ok();
    let pong = agent::net::decode_pong(body).ok();
    if let Some(p) = &ping {
        let again = serde_json::to_vec(p).expect("a decoded ping encodes");
        let back = agent::net::decode_ping(&again)
            .unwrap_or_else(|e| panic!("a re-encoded ping is refused: {e}"));
        assert_eq!(&back, p, "a ping changed through re-encoding");
    }
    if let Some(p) = &pong {
        let again = serde_json::to_vec(p).expect("a decoded pong encodes");
        let back = agent::net::decode_pong(&again)
            .unwrap_or_else(|e| panic!("a re-encoded pong is refused: {e}"));
        assert_eq!(&back, p, "a pong changed through re-encoding");
    }
    let cfg = agent_config();
    let mut c = Choices::new(rest);
    let mut agent = NodeAgent::new(cfg.clone(), RunState::booted());
    let now = Millis(1_000_000);
    // A few steps chosen by the input first, so the ping or pong meets a running agent.
    fuzz_support::drive_agent(&mut agent, now, &mut c, 8);
    let now = Millis(2_000_000);
    // The shells let through only what names the certificate (ping) or the peer asked (pong).
    if let Some(p) = ping {
        if p.cluster == cfg.cluster && cfg.peers.contains(&p.node) {
            agent_step(&mut agent, now, AgentInput::Ping(p));
        }
    }
    if let Some(p) = pong {
        if p.cluster == cfg.cluster && cfg.peers.contains(&p.node) {
            agent_step(&mut agent, now, AgentInput::Pong(p));
        }
    }
    fuzz_support::drive_agent(&mut agent, now, &mut c, 16);
});
