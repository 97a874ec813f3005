//! The pub/sub wire format (v1) on overlay port 1002: frames of [`crate::services::frame`],
//! each one JSON object with `v` (the version) and `op` (which frame). docs/PROTOCOL.md
//! ("Publish/subscribe") gives the reason for each field.

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;

/// The overlay port of the pub/sub broker.
pub const PUBSUB_PORT: u16 = 1002;
/// The protocol version this node speaks.
pub const VERSION: u8 = 1;
/// Room for a frame's fields beside its data.
pub const ENVELOPE_ROOM: usize = 4096;

/// One event as the broker delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PubsubEvent {
    /// The key of the node that published it (stamped by the broker from the overlay
    /// connection, or the broker's own key for a local publish).
    pub publisher: PublicKey,
    /// The exact topic published to.
    pub topic: String,
    /// The topic's sequence number at the broker: 1, 2, 3, … per topic, so a gap shows events
    /// this subscriber missed (dropped for it, or published before it subscribed).
    pub seq: u64,
    /// The broker's clock when it took the event (unix ms), for latency and display.
    pub ts_ms: u64,
    /// The payload (UTF-8 text; encode binary data, e.g. base64).
    pub data: String,
    /// The broker's epoch (v1.1): raised at every start of the broker, whose sequence
    /// numbers then restart at 1, so a new epoch is a restart and not a gap. 0 (or absent)
    /// from a broker older than v1.1.
    #[serde(default)]
    pub epoch: u64,
}

/// An error code on the wire (and in the API's `hint`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireCode {
    /// A version this broker does not speak.
    BadVersion,
    /// A topic or pattern that is not valid.
    BadTopic,
    /// Data larger than the broker takes.
    TooLarge,
    /// This connection has as many patterns as the broker allows.
    TooManyPatterns,
    /// The broker has as many subscribers as it allows.
    TooManySubscribers,
    /// The broker tracks as many topics as it allows.
    TooManyTopics,
    /// A frame that could not be parsed, or that a side never sends.
    Malformed,
    /// A code from a newer version.
    #[serde(other)]
    Unknown,
}

impl WireCode {
    /// The code as text.
    pub fn as_str(self) -> &'static str {
        match self {
            WireCode::BadVersion => "bad_version",
            WireCode::BadTopic => "bad_topic",
            WireCode::TooLarge => "too_large",
            WireCode::TooManyPatterns => "too_many_patterns",
            WireCode::TooManySubscribers => "too_many_subscribers",
            WireCode::TooManyTopics => "too_many_topics",
            WireCode::Malformed => "malformed",
            WireCode::Unknown => "unknown",
        }
    }
}

/// One frame of the pub/sub protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Frame {
    /// Client → broker: deliver events whose topic matches `topic` (a pattern) on this
    /// connection.
    Subscribe {
        /// Protocol version.
        v: u8,
        /// The pattern.
        topic: String,
    },
    /// Client → broker: publish `data` on `topic` (exact).
    Publish {
        /// Protocol version.
        v: u8,
        /// The topic.
        topic: String,
        /// The payload.
        data: String,
    },
    /// Broker → client: the subscription to `topic` is in place.
    Subscribed {
        /// Protocol version.
        v: u8,
        /// The pattern, as given.
        topic: String,
    },
    /// Broker → client: the event was published.
    Published {
        /// Protocol version.
        v: u8,
        /// The topic.
        topic: String,
        /// Its sequence number.
        seq: u64,
        /// Subscribers it was queued for.
        subscribers: u32,
        /// Subscribers whose queue was full, so it was dropped for them.
        dropped: u32,
    },
    /// Broker → client: an event matching one of this connection's patterns.
    Event {
        /// Protocol version.
        v: u8,
        /// The event.
        #[serde(flatten)]
        event: PubsubEvent,
    },
    /// Either way: the last request was refused (the connection stays open), or the frame
    /// could not be read (the connection closes after it).
    Error {
        /// Protocol version.
        v: u8,
        /// What kind of error.
        code: WireCode,
        /// For humans (from a peer: escape before showing).
        message: String,
    },
}

impl Frame {
    /// An error frame.
    pub fn error(code: WireCode, message: impl Into<String>) -> Frame {
        Frame::Error {
            v: VERSION,
            code,
            message: message.into(),
        }
    }

    /// The frame's version field.
    pub fn version(&self) -> u8 {
        match self {
            Frame::Subscribe { v, .. }
            | Frame::Publish { v, .. }
            | Frame::Subscribed { v, .. }
            | Frame::Published { v, .. }
            | Frame::Event { v, .. }
            | Frame::Error { v, .. } => *v,
        }
    }
}

/// Parses one frame body (fuzzed: whatever a trusted peer sends).
pub fn parse(body: &[u8]) -> Result<Frame, crate::services::frame::FrameError> {
    crate::services::frame::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_is_flat_json_with_op_and_version() {
        let key = crate::identity::Identity::from_seed([1; 32]).public_key();
        let f = Frame::Event {
            v: 1,
            event: PubsubEvent {
                publisher: key,
                topic: "a.b".into(),
                seq: 7,
                ts_ms: 9,
                data: "x".into(),
                epoch: 3,
            },
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["op"], "event");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["epoch"], 3);
        // From a broker older than v1.1: no epoch, read as 0.
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("epoch");
        match serde_json::from_value::<Frame>(old).unwrap() {
            Frame::Event { event, .. } => assert_eq!(event.epoch, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(v["publisher"], key.to_string());
        let back = parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn an_unknown_error_code_from_a_newer_peer_still_parses() {
        let f = parse(br#"{"op":"error","v":1,"code":"brand_new","message":"m"}"#).unwrap();
        assert!(matches!(
            f,
            Frame::Error {
                code: WireCode::Unknown,
                ..
            }
        ));
        assert!(parse(br#"{"op":"nope","v":1}"#).is_err());
    }
}
