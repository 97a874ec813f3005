//! Task frames as the task service reads them from a trusted peer's connection (port 1003):
//! a stream of length-prefixed JSON frames. Each frame read is written again and must read
//! back equal; each `state` frame is then taken the way `Tasks::take_record` takes it, on the
//! worker's side (a NEW from the submitter) and on the submitter's side (a change from the
//! worker, for a task it submitted): signature, signer, payload hash, transitions, payload
//! parsing. Keys: submitter `Identity::from_seed([1; 32])`, worker `[2; 32]`.
#![no_main]

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use pilot::identity::Identity;
use pilot::services::frame;
use pilot::services::tasks::machine::Task;
use pilot::services::tasks::store::check_payload;
use pilot::services::tasks::wire::Frame;

const ID: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_750_000_000_000;
const DEADLINE: u64 = NOW + 3_600_000;

fuzz_target!(|data: &[u8]| {
    let (sub, work) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
    let mut submitted = Task::submit(
        &sub,
        ID.into(),
        work.public_key(),
        r#"{"task":{"op":"x"}}"#.into(),
        DEADLINE,
        NOW,
    );
    let mut received: Option<Task> = None;
    let mut input = data;
    loop {
        let got = frame::read::<_, Frame>(&mut input, 1 << 20)
            .now_or_never()
            .expect("reading from memory never waits");
        let Ok(Some(f)) = got else {
            break;
        };
        let bytes = frame::encode(&f, usize::MAX).expect("a frame that was read encodes");
        let back: Frame = frame::decode(&bytes[4..]).expect("an encoded frame decodes");
        assert_eq!(back, f);
        let Frame::State { record, payload, .. } = f else {
            continue;
        };
        if !check_payload(record.state, &payload) {
            continue;
        }
        let _ = record.verify();
        match &mut received {
            None => {
                received =
                    Task::receive_new(work.public_key(), sub.public_key(), &record, payload.clone(), NOW)
                        .ok();
            }
            Some(t) => {
                let _ = t.apply(sub.public_key(), &record, payload.clone(), NOW);
            }
        }
        let before = submitted.state;
        if submitted.apply(work.public_key(), &record, payload, NOW).unwrap_or(false) {
            assert!(pilot::services::tasks::machine::legal(before, submitted.state));
            assert!(submitted.records.iter().all(|r| r.verify()));
        }
    }
    submitted.tick(&sub, DEADLINE + 1);
});
