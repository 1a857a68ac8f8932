//! The agent's state file (`<run_dir>/state.json`), read back by `agent::state::StateStore::load`
//! when the agent restarts on the same boot: a corrupted or truncated file must not crash the
//! agent. A state it resumes must re-encode to the same value and then run the node's state
//! machine (`NodeAgent::new`, as the shell does), which the rest of the input drives.
#![no_main]
use fuzz_support::{agent_config, drive_agent, scratch_file, write_scratch, Choices};
use libfuzzer_sys::fuzz_target;
use proto::agent::NodeAgent;
use proto::Millis;

/// The boot id the seed inputs carry; a file from another boot is ignored by design.
const BOOT_ID: &str = "fuzz-boot";

fuzz_target!(|data: &[u8]| {
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let path = scratch_file(agent::state::STATE_FILE);
    write_scratch(&path, body);
    let dir = path.parent().expect("the scratch file has a directory");
    let store = agent::state::StateStore::new(dir, BOOT_ID.into());
    let agent::state::Loaded::Resumed(p) = store.load() else {
        return;
    };
    let again = serde_json::to_vec(&p).expect("a resumed state encodes");
    let back: agent::state::Persisted = serde_json::from_slice(&again)
        .unwrap_or_else(|e| panic!("a re-encoded state file does not decode: {e}"));
    assert_eq!(back, *p, "a state file changed through re-encoding");
    let mut agent = NodeAgent::new(agent_config(), p.run);
    drive_agent(&mut agent, Millis(0), &mut Choices::new(rest), 32);
});
