//! `witness status` on the operator's terminal: the status port's JSON as the CLI renders it
//! (`witness::client::render_table`). A status document from a broken or hostile witness may be
//! refused but must not crash the operator's tool.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = witness::client::render_table(&v);
});
