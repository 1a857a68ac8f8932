//! A certificate's SAN URI as both shells turn it into an identity (`Identity::parse_uri`): what
//! it accepts has valid names and prints back to the same URI.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto::ids::{check_name, Identity};

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = Identity::parse_uri(uri) else {
        return;
    };
    assert_eq!(
        id.to_uri(),
        uri,
        "an identity does not print back to its URI"
    );
    match &id {
        Identity::Node {
            cluster,
            room,
            node,
        } => {
            assert!(check_name("cluster", cluster.as_str()).is_ok());
            assert!(check_name("room", room.as_str()).is_ok());
            assert!(check_name("node", node.as_str()).is_ok());
        }
        Identity::Admin { name } => assert!(check_name("admin", name).is_ok()),
    }
});
