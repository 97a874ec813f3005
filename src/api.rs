//! The local API: newline-delimited JSON over a Unix socket that only the owner can open.
//!
//! Each connection carries requests, one JSON object per line, each answered by one line: an
//! [`Envelope`], the same shape `pilotctl --json` prints. Requests are tagged by `cmd`. A line
//! that is not a valid request is answered with an `invalid_argument` error and the connection
//! stays usable; a line longer than [`MAX_LINE`] closes the connection.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{ErrorCode, PilotError};

/// The longest request line the daemon reads.
pub const MAX_LINE: usize = 64 * 1024;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Identity, address, mode, uptime.
    Info {},
    /// Change the hostname this node claims.
    SetHostname {
        /// The new name.
        hostname: String,
    },
    /// Graceful shutdown.
    Shutdown {},
    /// The peer table with per-peer traffic and drop counters.
    Peers {},
    /// Ask a peer for trust.
    Handshake {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// Why, shown to the peer (at most 256 bytes).
        #[serde(default)]
        justification: Option<String>,
    },
    /// Trust requests waiting for our decision.
    Pending {},
    /// Approve a pending request.
    Approve {
        /// Whose.
        peer: String,
    },
    /// Reject a pending request.
    Reject {
        /// Whose.
        peer: String,
        /// Why, shown to the peer.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Withdraw trust (tears the tunnel down on both sides).
    Untrust {
        /// From whom.
        peer: String,
    },
    /// Every trust record.
    Trust {},
    /// Open a byte stream to a peer's overlay port; after the reply line the connection carries
    /// the stream's bytes both ways.
    Connect {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// The peer's overlay TCP port.
        port: u16,
    },
    /// Wait for one peer to connect to our overlay port; after the reply line the connection
    /// carries the stream's bytes both ways.
    Listen {
        /// Our overlay TCP port.
        port: u16,
    },
    /// Queue a message for a peer's inbox (delivered with retries until acked).
    SendMessage {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// The payload (for `json`, JSON text).
        data: String,
        /// `json` (default) or `text`.
        #[serde(default, rename = "type")]
        kind: Option<String>,
    },
    /// The messages in our inbox.
    Inbox {
        /// Delete them after listing.
        #[serde(default)]
        clear: bool,
    },
    /// Messages not yet acked by their recipients.
    Outbox {},
    /// Look up an exact hostname at the registries.
    Find {
        /// The hostname.
        hostname: String,
    },
    /// Probe a trusted peer over its current path (signed control probes, no TUN needed):
    /// round-trip times and the path.
    Ping {
        /// Hostname, address, overlay IPv6 or public key.
        peer: String,
        /// How many probes (1–100, default 4), 250 ms apart.
        #[serde(default)]
        count: Option<u32>,
    },
    /// Forward an overlay TCP port to a local `HOST:PORT`.
    Expose {
        /// The overlay port.
        port: u16,
        /// The local target.
        to: String,
    },
    /// The exposed ports.
    ExposeList {},
    /// Stop forwarding an overlay port.
    ExposeRemove {
        /// The overlay port.
        port: u16,
    },
}

/// A reply: `{"status":"ok","data":…}` or `{"status":"error","code":…,"message":…,"hint":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Envelope {
    /// Success with its data.
    Ok {
        /// The command's result.
        data: serde_json::Value,
    },
    /// Failure.
    Error(PilotError),
}

impl Envelope {
    /// A success envelope around any serialisable data.
    pub fn ok<T: Serialize>(data: &T) -> Self {
        match serde_json::to_value(data) {
            Ok(data) => Envelope::Ok { data },
            Err(e) => Envelope::Error(PilotError::internal(format!("cannot encode reply: {e}"))),
        }
    }

    /// Turns the envelope into a result.
    pub fn into_result(self) -> Result<serde_json::Value, PilotError> {
        match self {
            Envelope::Ok { data } => Ok(data),
            Envelope::Error(e) => Err(e),
        }
    }
}

impl From<Result<serde_json::Value, PilotError>> for Envelope {
    fn from(r: Result<serde_json::Value, PilotError>) -> Self {
        match r {
            Ok(data) => Envelope::Ok { data },
            Err(e) => Envelope::Error(e),
        }
    }
}

/// `info`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoData {
    /// addr48 in canonical text.
    pub address: String,
    /// Full overlay IPv6 address.
    pub ipv6: String,
    /// Claimed hostname, if any.
    pub hostname: Option<String>,
    /// Ed25519 public key, base64.
    pub public_key: String,
    /// `tun` or `userspace` (what runs, not what was asked).
    pub mode: String,
    /// Why this mode was chosen (e.g. why auto fell back to userspace).
    pub mode_reason: String,
    /// The overlay network /48.
    pub network: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Number of peers in the peer table.
    pub peers: usize,
    /// The daemon's process id.
    pub pid: u32,
    /// The state directory.
    pub state_dir: String,
    /// UDP port of the tunnel socket, once the data plane runs.
    pub listen_port: Option<u16>,
    /// Where the SOCKS5 proxy listens (userspace mode).
    #[serde(default)]
    pub socks5: Option<String>,
    /// pilot version.
    pub version: String,
}

/// `peers`' data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersData {
    /// One entry per peer, sorted by address.
    pub peers: Vec<crate::wg::PeerStatus>,
    /// Drops that belong to no known peer (`null` when no data plane runs).
    pub counters: Option<crate::wg::CountersSnapshot>,
}

/// `shutdown`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownData {
    /// Always true: the daemon stops after answering.
    pub stopping: bool,
}

/// Whether a message reached the peer's inbox yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// The peer acked it (it is in the peer's inbox).
    Delivered,
    /// Stored in our outbox; retried until the peer acks.
    Queued,
}

/// `send-message`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// The message id (the receiver dedupes by sender and id).
    pub id: String,
    /// The recipient's public key.
    pub to: crate::identity::PublicKey,
    /// The recipient's overlay IPv6.
    pub to_ipv6: std::net::Ipv6Addr,
    /// Delivered now, or queued for retries.
    pub status: DeliveryStatus,
}

/// `inbox`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxData {
    /// The messages, oldest first.
    pub messages: Vec<crate::services::message_store::InboxEntry>,
    /// Whether they were deleted after listing.
    pub cleared: bool,
}

/// `outbox`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxData {
    /// Messages not yet acked by their recipients.
    pub outbox: Vec<crate::services::message_store::OutboxEntry>,
}

/// `expose-list`'s data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExposeList {
    /// The exposed ports.
    pub exposed: Vec<crate::userspace::expose::Exposed>,
}

/// The first reply on a `connect` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectData {
    /// The peer's public key.
    pub peer: crate::identity::PublicKey,
    /// Its overlay IPv6.
    pub ipv6: std::net::Ipv6Addr,
    /// Its port.
    pub port: u16,
}

/// The first reply on a `listen` stream, once a peer connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenData {
    /// Our overlay port.
    pub port: u16,
    /// The connecting peer's overlay IPv6.
    pub peer_ipv6: std::net::Ipv6Addr,
    /// Its public key, if it is in the peer table.
    pub peer: Option<crate::identity::PublicKey>,
    /// Its hostname, if known.
    pub peer_hostname: Option<String>,
}

/// Parses one request line, mapping failures to a user-facing error.
pub fn parse_request(line: &str) -> Result<Request, PilotError> {
    serde_json::from_str(line).map_err(|e| {
        PilotError::invalid(
            format!("bad API request: {e}"),
            "send one JSON object per line, e.g. {\"cmd\":\"info\"}",
        )
    })
}

/// A blocking client of the local API (the CLI is one).
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon's socket. A missing socket or a refused connection means the
    /// daemon is not running; a permission error means it belongs to someone else.
    pub fn connect(path: &Path) -> Result<Self, PilotError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                PilotError::not_running(format!("no daemon is listening on {}", path.display()))
            }
            std::io::ErrorKind::PermissionDenied => PilotError::new(
                ErrorCode::Unauthorized,
                format!("permission denied on {}", path.display()),
                "the daemon's socket is owner-only: run pilotctl as the user that started the daemon",
            ),
            _ => PilotError::new(
                ErrorCode::ConnectionFailed,
                format!("cannot connect to {}: {e}", path.display()),
                "check $PILOT_SOCKET / $PILOT_HOME, or restart the daemon",
            ),
        })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| PilotError::internal(e.to_string()))?;
        let writer = stream
            .try_clone()
            .map_err(|e| PilotError::internal(e.to_string()))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends a stream request (`connect`, `listen`) and waits for its reply; on success the
    /// returned reader and writer carry the stream (read timeout cleared).
    pub fn open_stream(
        mut self,
        req: &Request,
    ) -> Result<(serde_json::Value, BufReader<UnixStream>, UnixStream), PilotError> {
        self.writer
            .set_read_timeout(None)
            .map_err(|e| PilotError::internal(e.to_string()))?;
        self.reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| PilotError::internal(e.to_string()))?;
        let v = self.call(req)?;
        Ok((v, self.reader, self.writer))
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, PilotError> {
        let mut line =
            serde_json::to_string(req).map_err(|e| PilotError::internal(e.to_string()))?;
        line.push('\n');
        let io_err = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                PilotError::new(
                    ErrorCode::Timeout,
                    "the daemon did not answer within 30 s",
                    "see $PILOT_HOME/daemon.log; restart it with `pilotctl daemon stop && pilotctl daemon start`",
                )
            } else {
                PilotError::new(
                    ErrorCode::ConnectionFailed,
                    format!("lost the connection to the daemon: {e}"),
                    "see $PILOT_HOME/daemon.log",
                )
            }
        };
        self.writer.write_all(line.as_bytes()).map_err(io_err)?;
        let mut reply = String::new();
        let n = self.reader.read_line(&mut reply).map_err(io_err)?;
        if n == 0 {
            return Err(PilotError::new(
                ErrorCode::ConnectionFailed,
                "the daemon closed the connection without answering",
                "see $PILOT_HOME/daemon.log",
            ));
        }
        let env: Envelope = serde_json::from_str(&reply)
            .map_err(|e| PilotError::internal(format!("unreadable reply from the daemon: {e}")))?;
        env.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ok_envelope_has_status_and_data() {
        let v = serde_json::to_value(Envelope::ok(&serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(v, serde_json::json!({"status": "ok", "data": {"a": 1}}));
    }

    #[test]
    fn error_envelope_has_code_message_hint() {
        let e = Envelope::Error(PilotError::new(ErrorCode::NotFound, "m", "h"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "error", "code": "not_found", "message": "m", "hint": "h"})
        );
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn requests_are_tagged_by_cmd() {
        assert_eq!(
            parse_request(r#"{"cmd":"info"}"#).unwrap(),
            Request::Info {}
        );
        assert_eq!(
            parse_request(r#"{"cmd":"set-hostname","hostname":"a"}"#).unwrap(),
            Request::SetHostname {
                hostname: "a".into()
            }
        );
        let e = parse_request(r#"{"cmd":"launch-missiles"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(parse_request(r#"{"cmd":"info","extra":1}"#).is_err());
    }

    proptest! {
        #[test]
        fn garbage_requests_are_errors_not_panics(s in ".{0,200}") {
            let _ = parse_request(&s);
        }

        #[test]
        fn envelopes_round_trip(msg in ".{0,40}", hint in ".{0,40}", n in any::<i64>()) {
            for e in [
                Envelope::ok(&serde_json::json!({"n": n, "s": msg.clone()})),
                Envelope::Error(PilotError::new(ErrorCode::Timeout, msg.clone(), hint.clone())),
            ] {
                let text = serde_json::to_string(&e).unwrap();
                let back: Envelope = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(back, e);
            }
        }
    }
}
