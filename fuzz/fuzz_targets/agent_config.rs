//! The agent's `agent.toml`, read by `agent::Config::load` (no environment override). A
//! configuration it accepts must validate again, name the node with valid names, carry timings
//! whose derived waits compute and outlast what they must, and give a fence budget that
//! computes.
#![no_main]
use fuzz_support::{check_accepted_timings, scratch_file, write_scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("agent.toml");
    write_scratch(&path, data);
    let Ok(cfg) = agent::Config::load(&path, &|_| None) else {
        return;
    };
    if let Err(e) = cfg.validate() {
        panic!("an accepted configuration does not validate again: {e}");
    }
    let names = cfg.names();
    assert!(proto::ids::check_name("cluster", names.cluster.as_str()).is_ok());
    assert!(proto::ids::check_name("room", names.room.as_str()).is_ok());
    assert!(proto::ids::check_name("node", names.node.as_str()).is_ok());
    check_accepted_timings("timings", &cfg.timings);
    // The fence budget sums these deadlines (agent::drivers::FenceDrivers::budget): it must
    // compute, not wrap, whatever the file says.
    let _ = agent::drivers::budget(
        [
            cfg.vm.deadline_ms,
            cfg.drbd.deadline_ms,
            cfg.kubernetes.deadline_ms,
        ]
        .map(std::time::Duration::from_millis),
    );
});
