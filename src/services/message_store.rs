//! Messages (overlay port 1001): asynchronous JSON or text messages to a peer's persistent
//! inbox, never lost.
//!
//! - The sender writes each message to its **outbox** (one file per message, fsynced) before
//!   `send-message` returns, and a delivery task retries with backoff until the peer acks. The
//!   outbox survives restarts.
//! - The receiver writes the message to its **inbox** (fsynced, renamed into place) *before*
//!   it acks, and drops duplicates by `(sender, id)`, so a retry after a lost ack is harmless.
//! - The sender is the peer the overlay connection comes from: the data plane admits only
//!   trusted peers and checks that inner source addresses belong to them.
//!
//! Wire (v1, on a TCP stream to port 1001): frames of a 4-byte big-endian length and that many
//! bytes of JSON, at most [`MAX_FRAME`]. Sender → receiver: [`WireMessage`]; receiver → sender:
//! [`WireAck`]. Several messages may share one connection.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The overlay port of the message service.
pub const MESSAGE_PORT: u16 = 1001;
/// Largest frame accepted (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest message payload a user may send (leaves room for the envelope).
pub const MAX_DATA: usize = MAX_FRAME - 4096;

/// Errors of the message service.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame that is not the expected JSON.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Reading or writing a stream or file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<MessageError> for crate::error::PilotError {
    fn from(e: MessageError) -> Self {
        use crate::error::PilotError;
        match e {
            MessageError::TooLarge(_) => PilotError::invalid(
                e.to_string(),
                "send a smaller message (at most about 1 MiB)",
            ),
            MessageError::Malformed(_) | MessageError::Io(_) => {
                PilotError::internal(format!("the message service failed: {e}"))
            }
        }
    }
}

/// What kind of payload a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// `data` is a JSON value.
    Json,
    /// `data` is a string.
    Text,
}

/// A message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WireMessage {
    /// Protocol version (1).
    pub v: u8,
    /// 32 hex digits, random, chosen by the sender; with the sender's key, the dedupe key.
    pub id: String,
    /// Payload kind.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The payload.
    pub data: serde_json::Value,
    /// Sender's clock when the message was queued (unix ms), for display.
    pub sent_ms: u64,
}

/// The receiver's answer: the message is stored (or was already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireAck {
    /// Protocol version (1).
    pub v: u8,
    /// The id of the stored message.
    pub ack: String,
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), MessageError> {
    let body = serde_json::to_vec(value).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(MessageError::TooLarge(body.len()));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<Option<T>, MessageError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(MessageError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| MessageError::Malformed(e.to_string()))
}

/// A new random message id (32 hex digits).
pub fn new_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `id` has the shape of a message id (so it is safe in a file name).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    crate::state::paths::write_private_atomic(&dir.join(name), bytes)
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A message as kept in the inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxEntry {
    /// Sender's public key (base64).
    pub from: String,
    /// Sender's address (addr48 text).
    pub from_address: String,
    /// Sender's hostname, if known when it arrived.
    pub from_hostname: Option<String>,
    /// Message id.
    pub id: String,
    /// Payload kind.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// Payload.
    pub data: serde_json::Value,
    /// Sender's clock when queued (unix ms).
    pub sent_ms: u64,
    /// Our clock when stored (unix ms).
    pub received_ms: u64,
}

/// The persistent inbox: one file per message, named so that listing sorts by arrival.
pub struct Inbox {
    dir: PathBuf,
    seen: HashSet<(String, String)>,
}

impl Inbox {
    /// Opens (creating) the inbox in `dir` and loads the ids already stored.
    pub fn open(dir: PathBuf) -> Result<Self, MessageError> {
        ensure_dir(&dir)?;
        let mut seen = HashSet::new();
        for e in Self::read_all(&dir)? {
            seen.insert((e.from, e.id));
        }
        Ok(Inbox { dir, seen })
    }

    fn read_all(dir: &Path) -> Result<Vec<InboxEntry>, MessageError> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect())
    }

    /// Stores `entry` durably unless `(from, id)` is already stored; true if it is new.
    pub fn store(&mut self, entry: &InboxEntry) -> Result<bool, MessageError> {
        if !valid_id(&entry.id) {
            return Err(MessageError::Malformed(format!(
                "bad message id {:?}",
                entry.id
            )));
        }
        let key = (entry.from.clone(), entry.id.clone());
        if self.seen.contains(&key) {
            return Ok(false);
        }
        let name = format!("{:016}-{}.json", entry.received_ms, entry.id);
        let bytes =
            serde_json::to_vec_pretty(entry).map_err(|e| MessageError::Malformed(e.to_string()))?;
        write_atomic(&self.dir, &name, &bytes)?;
        self.seen.insert(key);
        Ok(true)
    }

    /// Every stored message, oldest first.
    pub fn list(&self) -> Result<Vec<InboxEntry>, MessageError> {
        Self::read_all(&self.dir)
    }

    /// Deletes every stored message (ids stay remembered for dedupe until restart).
    pub fn clear(&mut self) -> Result<usize, MessageError> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                std::fs::remove_file(p)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    /// Recipient's public key (base64).
    pub to: String,
    /// Recipient's overlay IPv6.
    #[schema(value_type = String)]
    pub to_ipv6: std::net::Ipv6Addr,
    /// The message.
    pub message: WireMessage,
}

/// The persistent outbox: one file per undelivered message.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`.
    pub fn open(dir: PathBuf) -> Result<Self, MessageError> {
        ensure_dir(&dir)?;
        Ok(Outbox { dir })
    }

    /// Stores a message durably.
    pub fn put(&self, e: &OutboxEntry) -> Result<(), MessageError> {
        let bytes =
            serde_json::to_vec_pretty(e).map_err(|e| MessageError::Malformed(e.to_string()))?;
        write_atomic(&self.dir, &format!("{}.json", e.message.id), &bytes)?;
        Ok(())
    }

    /// Every waiting message, oldest first (by queue time).
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, MessageError> {
        let mut v: Vec<OutboxEntry> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        v.sort_by_key(|e| e.message.sent_ms);
        Ok(v)
    }

    /// Removes a delivered message.
    pub fn remove(&self, id: &str) -> Result<(), MessageError> {
        if valid_id(id) {
            match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(from: &str, id: &str, ms: u64) -> InboxEntry {
        InboxEntry {
            from: from.into(),
            from_address: "0000.0000.0001".into(),
            from_hostname: None,
            id: id.into(),
            kind: MessageType::Json,
            data: serde_json::json!({"status": "operational"}),
            sent_ms: ms,
            received_ms: ms,
        }
    }

    #[test]
    fn inbox_stores_once_per_sender_and_id_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = Inbox::open(dir.path().join("inbox")).unwrap();
        let id = new_id();
        assert!(inbox.store(&entry("k1", &id, 1)).unwrap());
        assert!(
            !inbox.store(&entry("k1", &id, 2)).unwrap(),
            "duplicate stored"
        );
        assert!(
            inbox.store(&entry("k2", &id, 3)).unwrap(),
            "other sender, same id"
        );
        let mut again = Inbox::open(dir.path().join("inbox")).unwrap();
        assert_eq!(again.list().unwrap().len(), 2);
        assert!(
            !again.store(&entry("k1", &id, 4)).unwrap(),
            "dedupe lost on reopen"
        );
        assert_eq!(again.clear().unwrap(), 2);
        assert!(again.list().unwrap().is_empty());
    }

    #[test]
    fn inbox_refuses_ids_that_are_not_hex() {
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = Inbox::open(dir.path().join("inbox")).unwrap();
        assert!(inbox.store(&entry("k", "../../etc/passwd", 1)).is_err());
    }

    #[test]
    fn outbox_keeps_messages_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = Outbox::open(dir.path().join("outbox")).unwrap();
        let m = OutboxEntry {
            to: "k".into(),
            to_ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
            message: WireMessage {
                v: 1,
                id: new_id(),
                kind: MessageType::Text,
                data: "hi".into(),
                sent_ms: 5,
            },
        };
        out.put(&m).unwrap();
        let reopened = Outbox::open(dir.path().join("outbox")).unwrap();
        assert_eq!(reopened.pending().unwrap(), vec![m.clone()]);
        reopened.remove(&m.message.id).unwrap();
        assert!(reopened.pending().unwrap().is_empty());
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let m = WireMessage {
            v: 1,
            id: new_id(),
            kind: MessageType::Json,
            data: serde_json::json!({"task": "vector_search"}),
            sent_ms: 7,
        };
        write_frame(&mut a, &m).await.unwrap();
        let got: WireMessage = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got, m);
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<_, WireMessage>(&mut b).await,
            Err(MessageError::TooLarge(_))
        ));
        drop(a);
        assert!(read_frame::<_, WireMessage>(&mut b)
            .await
            .unwrap()
            .is_none());
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut r = &bytes[..];
                let _ = read_frame::<_, WireMessage>(&mut r).await;
            });
        }
    }
}
