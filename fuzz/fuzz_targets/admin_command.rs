//! `POST /v1/admin/{cluster}` on the witness: the operator's command body. Decoded exactly as
//! `witness::api::admin` does it (`serde_json::from_slice::<AdminCommand>`, then the room name
//! check); what it accepts must re-encode and decode to the same command, and then goes to an
//! arbiter that knows rooms `a` and `b`, whose later steps the rest of the input chooses.
#![no_main]
use fuzz_support::{arbiter_step, cluster, drive_arbiter, lease_request, Choices};
use libfuzzer_sys::fuzz_target;
use proto::arbiter::{Arbiter, ArbiterConfig, ArbiterInput};
use proto::wire::AdminCommand;
use proto::Millis;

fuzz_target!(|data: &[u8]| {
    let (body, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // The same two calls as the admin handler (witness/src/api.rs, `admin_inner`).
    let Ok(cmd) = serde_json::from_slice::<AdminCommand>(body) else {
        return;
    };
    if let AdminCommand::ForceSurvivor { room, .. } = &cmd {
        if proto::ids::check_name("room", room.as_str()).is_err() {
            return;
        }
    }
    let again = serde_json::to_vec(&cmd).expect("a decoded admin command encodes");
    let back: AdminCommand = serde_json::from_slice(&again)
        .unwrap_or_else(|e| panic!("a re-encoded admin command does not decode: {e}"));
    assert_eq!(back, cmd, "an admin command changed through re-encoding");

    let now = Millis(1_000_000);
    let mut a = Arbiter::create(ArbiterConfig::default(), cluster(), now);
    // Rooms a and b have called: a1 (choice 0) and b1 (choice 2), both active and paired.
    for n in [0u8, 2] {
        let mut c = Choices::new(&[]);
        let mut req = lease_request(&mut c, &cluster());
        req.room = proto::RoomId::new(if n == 0 { "a" } else { "b" });
        req.node = proto::NodeId::new(if n == 0 { "a1" } else { "b1" });
        req.phase = proto::wire::NodePhase::Active;
        req.peer_contact = true;
        req.peer_reachable = true;
        arbiter_step(&mut a, now, ArbiterInput::Lease(req));
    }
    arbiter_step(&mut a, now, ArbiterInput::Admin(cmd));
    drive_arbiter(&mut a, now, &mut Choices::new(rest), 32);
});
