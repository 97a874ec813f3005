//! Pub/sub frames as the broker reads them from a trusted peer's connection (port 1002): a
//! stream of length-prefixed JSON frames, read until the stream ends or a frame is refused.
//! Each frame read is written again and must read back equal; `subscribe` and `publish`
//! frames then drive a broker the way `Pubsub::serve` does (patterns, topics, fan-out to a
//! queue that fills), and every topic the broker took matches itself.
#![no_main]

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use pilot::config::PubsubConfig;
use pilot::identity::Identity;
use pilot::services::frame;
use pilot::services::pubsub::broker::Broker;
use pilot::services::pubsub::topic::{matches, validate_pattern, validate_topic};
use pilot::services::pubsub::wire::{Frame, ENVELOPE_ROOM};

fuzz_target!(|data: &[u8]| {
    let limits = PubsubConfig {
        subscriber_queue: 4,
        max_data_bytes: 1024,
        max_topics: 16,
        max_patterns: 4,
        ..PubsubConfig::default()
    };
    let max = limits.max_data_bytes + ENVELOPE_ROOM;
    let publisher = Identity::from_seed([1; 32]).public_key();
    let mut broker = Broker::new(limits);
    let (id, mut queue) = broker.add_subscriber(Some(publisher)).expect("room for one");
    let mut input = data;
    loop {
        let got = frame::read::<_, Frame>(&mut input, max)
            .now_or_never()
            .expect("reading from memory never waits");
        let Ok(Some(f)) = got else {
            break;
        };
        let bytes = frame::encode(&f, usize::MAX).expect("a frame that was read encodes");
        let back: Frame = frame::decode(&bytes[4..]).expect("an encoded frame decodes");
        assert_eq!(back, f);
        match f {
            Frame::Subscribe { topic, .. } => {
                let taken = broker.add_pattern(id, &topic).is_ok();
                if taken {
                    assert!(validate_pattern(&topic).is_ok());
                }
            }
            Frame::Publish { topic, data, .. } => {
                if let Ok(out) = broker.publish(publisher, &topic, data, 0) {
                    assert!(validate_topic(&topic).is_ok());
                    assert!(matches(&topic, &topic));
                    assert!(out.seq >= 1);
                }
            }
            _ => {}
        }
        // Drain now and then, so both the full and the empty queue are exercised.
        if bytes.len() % 3 == 0 {
            while queue.rx.try_recv().is_ok() {}
        }
    }
    for s in broker.subscribers() {
        assert!(s.queued <= 4);
    }
});
