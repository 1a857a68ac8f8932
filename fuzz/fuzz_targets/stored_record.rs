//! A cluster record as the witness reads it back from sled at start
//! (`witness::store::decode_record`, what `Store::load` runs): a corrupted or hand-edited value
//! must not crash the witness. Anything accepted must re-encode and decode to the same record;
//! it then restarts an arbiter (`Arbiter::restart`, as the cluster table does), which the rest
//! of the input drives.
#![no_main]
use fuzz_support::{cluster, drive_arbiter, Choices};
use libfuzzer_sys::fuzz_target;
use proto::arbiter::{Arbiter, ArbiterConfig};
use proto::Millis;

fuzz_target!(|data: &[u8]| {
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(record) = witness::store::decode_record(body) else {
        return;
    };
    let again = serde_json::to_vec(&record).expect("a decoded record encodes");
    let back = witness::store::decode_record(&again)
        .unwrap_or_else(|e| panic!("a re-encoded record does not decode: {e}"));
    assert_eq!(back, record, "a record changed through re-encoding");
    let now = Millis(1_000_000);
    let mut a = Arbiter::restart(ArbiterConfig::default(), cluster(), record, now);
    drive_arbiter(&mut a, now, &mut Choices::new(rest), 32);
});
