//! `witness.toml`, read by `witness::Config::load_with` (the TLS files are not checked for
//! existence: the fuzzer's paths are not real files). A configuration it accepts must have sane
//! values: limits above zero, a tick in range, and for every cluster timings that validate and
//! whose derived waits compute without overflow and outlast what they must.
#![no_main]
use fuzz_support::{check_accepted_timings, scratch_file, write_scratch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("witness.toml");
    write_scratch(&path, data);
    let Ok(cfg) = witness::Config::load_with(&path, false) else {
        return;
    };
    let l = &cfg.limits;
    assert!(l.max_connections > 0 && l.max_clusters > 0);
    assert!(l.body_limit_bytes >= 512);
    assert!(l.header_timeout_ms > 0 && l.idle_timeout_ms > 0);
    assert!(l.requests_per_second_per_identity > 0);
    assert!((10..=1_000).contains(&cfg.tick_interval_ms));
    assert!(cfg.tls.reload_interval_ms >= 100);
    check_accepted_timings("defaults", &cfg.default_cluster.timings);
    for (name, c) in &cfg.clusters {
        assert!(proto::ids::check_name("cluster", name.as_str()).is_ok());
        check_accepted_timings(name.as_str(), &c.timings);
        if let Some(r) = &c.preferred_room {
            assert!(proto::ids::check_name("room", r.as_str()).is_ok());
        }
    }
    let _ = cfg.max_forgotten_state_wait_ms();
});
