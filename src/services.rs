//! Agent services on overlay ports, the same in TUN and userspace mode (they use
//! [`crate::userspace::overlay_net::OverlayNet`]): echo on 7, byte streams on any port through
//! the local API (`connect`, `listen`; 1000 by convention), and messages on 1001.
//!
//! - [`dns`]: the resolver for `NAME.pilot` (not an overlay port: this host's programs ask it).
//! - [`echo`]: port 7.
//! - [`streams`]: byte streams on any port, for the API's `connect` and `listen`.
//! - [`messages`]: the message service (delivery and receipt).
//! - [`message_store`]: its wire frames and its inbox and outbox on disk.
//! - [`message_dedupe`]: the ids of stored messages, remembered apart from the inbox.
//! - [`message_journal`]: the inbox journal (group commit of received messages).
//! - [`files`]: resumable, verified file transfer on port 1004.
//! - [`pubsub`]: the publish/subscribe broker on 1002.
//! - [`frame`]: length-prefixed JSON frames of pub/sub and tasks.
//! - [`tasks`]: task delegation with signed state changes on 1003.

pub mod dns;
pub mod echo;
pub mod files;
pub mod frame;
pub mod message_dedupe;
pub mod message_journal;
pub mod message_outbox;
pub mod message_stats;
pub mod message_store;
pub mod messages;
pub mod pubsub;
pub mod streams;
pub mod tasks;

pub use echo::{start_echo, ECHO_PORT};
pub use files::Files;
pub use messages::{Delivery, Messages};

/// The conventional port of stdio streams (`pilotctl connect PEER 1000`).
pub const STREAM_PORT: u16 = 1000;
