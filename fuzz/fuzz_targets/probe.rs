//! Peer probes: `decode_unverified` then `verify`, as the node core does for a probe from a
//! trusted sender. A decoded probe re-encoded by a fixed identity (its key written over the
//! sender) must decode to the same probe and verify; decode(encode(x)) == x.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pilot::identity::Identity;
use pilot::wire::probe::{is_probe, Probe, LEN};

fn fuzz_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::from_seed([7; 32]))
}

fuzz_target!(|data: &[u8]| {
    let _ = is_probe(data);
    let Some(p) = Probe::decode_unverified(data) else {
        return;
    };
    assert_eq!(data.len(), LEN);
    let _ = p.verify(data);
    let id = fuzz_identity();
    let mine = Probe {
        sender: id.public_key(),
        ..p
    };
    let bytes = mine.encode(id);
    assert_eq!(bytes[..3], data[..3]);
    assert_eq!(
        bytes[35..LEN - 64],
        data[35..LEN - 64],
        "not canonical: {p:?}"
    );
    let back = Probe::decode_unverified(&bytes).expect("an encoded probe decodes");
    assert_eq!(back, mine);
    assert!(back.verify(&bytes));
});
