//! Messages (overlay port 1001): asynchronous JSON or text messages to a peer's persistent
//! inbox, never lost.
//!
//! - The sender writes each message to its **outbox** (a journal with group commit,
//!   [`super::message_outbox`]) before `send-message` returns, and a delivery task retries
//!   with backoff until the peer acks. The outbox survives restarts.
//! - The receiver writes the message to its **inbox** (a journal with group commit,
//!   [`super::message_journal`]) and waits for the line to be on disk *before* it acks, and
//!   drops duplicates by `(sender, id)`, so a retry after a lost ack is harmless.
//! - The sender is the peer the overlay connection comes from: the data plane admits only
//!   trusted peers and checks that inner source addresses belong to them.
//!
//! Wire (v1, on a TCP stream to port 1001): frames of a 4-byte big-endian length and that many
//! bytes of JSON, at most [`MAX_FRAME`]. Sender → receiver: [`WireMessage`]; receiver → sender:
//! [`WireAck`]. Several messages may share one connection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::MessagesConfig;
pub use crate::services::message_dedupe::{new_id, valid_id};
use crate::services::message_dedupe::{DedupeLimits, SeenIds};
use crate::services::message_journal::{Durable, InboxJournal, Meta, JOURNAL};

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
    /// The peer took longer than allowed to send a message or to take an ack.
    #[error("timed out {0}")]
    TimedOut(&'static str),
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
            MessageError::Malformed(_) | MessageError::Io(_) | MessageError::TimedOut(_) => {
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
    /// `data` is a string: the payload's bytes in standard base64 (with padding).
    Binary,
}

impl MessageType {
    /// The type named `text`, `json` or `binary`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "text" => Some(MessageType::Text),
            "json" => Some(MessageType::Json),
            "binary" => Some(MessageType::Binary),
            _ => None,
        }
    }

    /// Whether `data` has the shape this type requires: a string for `text`, a base64 string
    /// for `binary`, anything for `json`.
    pub fn fits(self, data: &serde_json::Value) -> bool {
        use base64::Engine;
        match self {
            MessageType::Json => true,
            MessageType::Text => data.is_string(),
            MessageType::Binary => data
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok()),
        }
    }
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
    /// For a reply: the id of the message it answers (one the recipient sent us). Absent on
    /// other messages, so that they stay byte for byte what v1 receivers know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
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

/// The receiver's refusal: the message is not stored (an inbox quota is reached); the sender
/// keeps it in its outbox, shows `reason` there and retries later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRefusal {
    /// Protocol version (1).
    pub v: u8,
    /// The id of the refused message.
    pub refused: String,
    /// Why, for the sender's user (text from a peer: escape before showing it).
    pub reason: String,
}

/// What the receiver answers to a message: an ack or a refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireReply {
    /// Stored (or stored before).
    Ack(WireAck),
    /// Not stored.
    Refused(WireRefusal),
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
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    read_frame_rest(r, first[0]).await.map(Some)
}

/// Reads one frame as [`read_frame`] does, waiting at most `idle` for it to start and then at
/// most `read` for the rest of it.
pub async fn read_frame_within<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    idle: std::time::Duration,
    read: std::time::Duration,
) -> Result<Option<T>, MessageError> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(idle, r.read(&mut first))
        .await
        .map_err(|_| MessageError::TimedOut("waiting for a message"))??;
    if n == 0 {
        return Ok(None);
    }
    tokio::time::timeout(read, read_frame_rest(r, first[0]))
        .await
        .map_err(|_| MessageError::TimedOut("reading a message"))?
        .map(Some)
}

/// The rest of a frame whose first length byte is `first`.
async fn read_frame_rest<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    first: u8,
) -> Result<T, MessageError> {
    let mut len = [first, 0, 0, 0];
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(MessageError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| MessageError::Malformed(e.to_string()))
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
    /// For a reply: the id of our message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
}

/// Why the inbox refuses to store a message: a quota of `[messages]` is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded(pub String);

/// What the inbox holds: messages and bytes, for one sender or all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    messages: usize,
    bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.messages += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: u64) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// What [`Inbox::store`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored now.
    New,
    /// Stored before (a retry): acked again, not stored twice.
    Duplicate,
    /// Not stored: a quota is reached; the sender keeps it and retries.
    Refused(QuotaExceeded),
}

/// The persistent inbox: the messages in the inbox journal ([`InboxJournal`], one
/// append-only file with group commit), quotas per sender and in total, and the dedupe record
/// of cleared messages ([`SeenIds`]), kept apart from the journal.
pub struct Inbox {
    journal: InboxJournal<InboxEntry>,
    seen: SeenIds,
    limits: MessagesConfig,
    per_sender: HashMap<String, Usage>,
    total: Usage,
}

impl Inbox {
    /// Opens (creating) the inbox in `dir` and its dedupe record at `seen`; replays the
    /// journal, takes in message files of the earlier one-file-per-message inbox, counts what
    /// the inbox holds and remembers the ids of its messages. `now_ms` expires old dedupe
    /// records.
    pub fn open(
        dir: PathBuf,
        seen: PathBuf,
        limits: &MessagesConfig,
        now_ms: u64,
    ) -> Result<Self, MessageError> {
        ensure_dir(&dir)?;
        let dedupe = DedupeLimits {
            capacity: limits.dedupe_max_ids,
            ttl_ms: limits.dedupe_days.saturating_mul(86_400_000),
        };
        let mut inbox = Inbox {
            seen: SeenIds::open(seen, dedupe, now_ms)?,
            journal: InboxJournal::open(dir.join(JOURNAL), |e: &InboxEntry| {
                (e.from.clone(), e.id.clone())
            })?,
            limits: limits.clone(),
            per_sender: HashMap::new(),
            total: Usage::default(),
        };
        inbox.take_in_legacy_files(&dir)?;
        let metas: Vec<Meta> = inbox.journal.live().cloned().collect();
        for m in metas {
            inbox.total.add(m.len);
            inbox
                .per_sender
                .entry(m.from.clone())
                .or_default()
                .add(m.len);
            let received_ms = inbox
                .journal
                .read(&m)
                .map_or(now_ms, |e: InboxEntry| e.received_ms);
            inbox.seen.remember(received_ms, m.from, m.id);
        }
        Ok(inbox)
    }

    /// Moves the message files of the earlier format (`RECEIVED_MS-SENDER-ID.json`, oldest
    /// name first) into the journal, durably, then deletes them; an unreadable file is left
    /// alone.
    fn take_in_legacy_files(&mut self, dir: &Path) -> Result<(), MessageError> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        let mut taken = Vec::new();
        for path in names {
            let entry: Option<InboxEntry> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(e) = entry.filter(|e| valid_id(&e.id)) else {
                tracing::warn!(file = %path.display(), "inbox file unreadable: left alone");
                continue;
            };
            if !self.journal.contains(&e.from, &e.id) {
                let line = InboxJournal::line(&e)?;
                self.journal.append(&e, &line)?;
            }
            taken.push(path);
        }
        self.journal.sync_now()?;
        for path in taken {
            std::fs::remove_file(path)?;
        }
        crate::state::files::sync_dir(dir)?;
        Ok(())
    }

    /// Which quota storing `bytes` more from `from` would break, if any.
    fn over_quota(&self, from: &str, bytes: u64) -> Option<QuotaExceeded> {
        let l = &self.limits;
        let mine = self.per_sender.get(from).copied().unwrap_or_default();
        let refuse = |what: &str| {
            Some(QuotaExceeded(format!(
                "the recipient's inbox is full ({what}); retrying until it is cleared"
            )))
        };
        if mine.messages + 1 > l.inbox_max_messages_per_sender {
            return refuse(&format!(
                "{} messages from you",
                l.inbox_max_messages_per_sender
            ));
        }
        if mine.bytes + bytes > l.inbox_max_bytes_per_sender {
            return refuse(&format!("{} bytes from you", l.inbox_max_bytes_per_sender));
        }
        if self.total.messages + 1 > l.inbox_max_messages {
            return refuse(&format!("{} messages", l.inbox_max_messages));
        }
        if self.total.bytes + bytes > l.inbox_max_bytes {
            return refuse(&format!("{} bytes", l.inbox_max_bytes));
        }
        None
    }

    /// Stores `entry` unless `(from, id)` was stored before or a quota is reached: one line
    /// appended to the journal, which is the inbox record and, while the message is in the
    /// inbox, its dedupe entry. Not durable yet: the caller acks after [`Self::durable`].
    pub fn store(&mut self, entry: &InboxEntry) -> Result<StoreOutcome, MessageError> {
        if !valid_id(&entry.id) {
            return Err(MessageError::Malformed(format!(
                "bad message id {:?}",
                entry.id
            )));
        }
        if self.journal.contains(&entry.from, &entry.id)
            || self.seen.contains(&entry.from, &entry.id)
        {
            return Ok(StoreOutcome::Duplicate);
        }
        let line = InboxJournal::line(entry)?;
        let bytes = line.len() as u64;
        if let Some(q) = self.over_quota(&entry.from, bytes) {
            return Ok(StoreOutcome::Refused(q));
        }
        self.journal.append(entry, &line)?;
        // The journal line is the dedupe record of this id until the message is cleared; its
        // line in the dedupe file is written then. Written now, it could outlive a journal
        // line lost in a crash and ack the sender's retry of a message no longer stored.
        self.seen
            .remember(entry.received_ms, entry.from.clone(), entry.id.clone());
        self.total.add(bytes);
        self.per_sender
            .entry(entry.from.clone())
            .or_default()
            .add(bytes);
        Ok(StoreOutcome::New)
    }

    /// Completes when every message stored so far is durable (one group commit of the
    /// journal shared with every message stored meanwhile; at once if nothing is pending).
    /// A duplicate is acked after this too, so that its ack never runs ahead of the
    /// original's commit.
    pub fn durable(&self) -> Durable {
        self.journal.durable()
    }

    /// Every stored message, oldest first.
    pub fn list(&self) -> Result<Vec<InboxEntry>, MessageError> {
        Ok(self
            .journal
            .live()
            .map(|m| self.journal.read(m))
            .collect::<std::io::Result<_>>()?)
    }

    /// Every stored message, oldest first, each deleted as it is listed: exactly the messages
    /// returned are removed (their ids stay in the dedupe record).
    pub fn take(&mut self) -> Result<Vec<InboxEntry>, MessageError> {
        self.select(&InboxFilter::default(), true)
    }

    /// The stored messages `filter` selects, oldest first; with `clear`, exactly those are
    /// deleted (their ids stay in the dedupe record), durably before this returns.
    pub fn select(
        &mut self,
        filter: &InboxFilter,
        clear: bool,
    ) -> Result<Vec<InboxEntry>, MessageError> {
        let mut taken = Vec::new();
        let mut sizes = Vec::new();
        for m in self.journal.live() {
            if filter.limit.is_some_and(|n| taken.len() >= n) {
                break;
            }
            let e = self.journal.read(m)?;
            if filter.matches(&e) {
                sizes.push(m.len);
                taken.push(e);
            }
        }
        if clear && !taken.is_empty() {
            // The cleared ids stay remembered: their dedupe lines are durable first.
            for e in &taken {
                self.seen.note(&e.from, &e.id, e.received_ms)?;
            }
            self.seen.sync()?;
            let keys: Vec<(String, String)> = taken
                .iter()
                .map(|e| (e.from.clone(), e.id.clone()))
                .collect();
            self.journal.delete(&keys)?;
            for (e, bytes) in taken.iter().zip(sizes) {
                self.total.sub(bytes);
                if let Some(u) = self.per_sender.get_mut(&e.from) {
                    u.sub(bytes);
                    if u.messages == 0 {
                        self.per_sender.remove(&e.from);
                    }
                }
            }
        }
        Ok(taken)
    }

    /// The stored message `id`, if the inbox holds it.
    pub fn get(&self, id: &str) -> Result<Option<InboxEntry>, MessageError> {
        match self.journal.live().find(|m| m.id == id) {
            Some(m) => Ok(Some(self.journal.read(m)?)),
            None => Ok(None),
        }
    }

    /// The key of whoever sent us message `id`, while its id is remembered (in the inbox or
    /// cleared from it within `[messages] dedupe_days`).
    pub fn sender_of(&self, id: &str) -> Option<String> {
        match self.journal.live().rev().find(|m| m.id == id) {
            Some(m) => Some(m.from.clone()),
            None => self.seen.sender_of(id).map(String::from),
        }
    }

    /// Whether `(from, id)` was received before.
    pub fn seen(&self, from: &str, id: &str) -> bool {
        self.journal.contains(from, id) || self.seen.contains(from, id)
    }

    /// Records `(from, id)` as received without storing the message (a reply handed straight
    /// to the request that waits for it), so that a retry is acked and not stored. Not
    /// fsynced on its own (the next clear's sync carries it): a crash before then costs at most a
    /// retry of the reply, which needs a lost ack too, landing in the inbox.
    pub fn record_seen(&mut self, from: &str, id: &str, now_ms: u64) -> Result<(), MessageError> {
        Ok(self.seen.note(from, id, now_ms)?)
    }
}

/// Which inbox messages a listing selects (`pilotctl inbox --from --since --limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxFilter {
    /// Only from this sender: its key (base64), address (addr48 text) or hostname.
    pub from: Option<String>,
    /// Only those stored at or after this time (unix ms).
    pub since_ms: Option<u64>,
    /// At most this many (the oldest first).
    pub limit: Option<usize>,
}

impl InboxFilter {
    /// Whether `e` passes the sender and time filters.
    pub fn matches(&self, e: &InboxEntry) -> bool {
        let from = self.from.as_deref().is_none_or(|f| {
            e.from == f || e.from_address == f || e.from_hostname.as_deref() == Some(f)
        });
        from && self.since_ms.is_none_or(|t| e.received_ms >= t)
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
    /// Why the recipient refused it at the last attempt (its inbox was full), if it did; the
    /// message stays here and is retried. Text from the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
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
            in_reply_to: None,
            received_ms: ms,
        }
    }

    const DAY: u64 = 86_400_000;

    fn open(dir: &Path, limits: &MessagesConfig) -> Inbox {
        Inbox::open(dir.join("inbox"), dir.join("inbox-seen"), limits, DAY).unwrap()
    }

    fn new(o: Result<StoreOutcome, MessageError>) -> bool {
        match o.unwrap() {
            StoreOutcome::New => true,
            StoreOutcome::Duplicate => false,
            StoreOutcome::Refused(q) => panic!("refused: {q:?}"),
        }
    }

    #[test]
    fn inbox_stores_once_per_sender_and_id_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig::default();
        let mut inbox = open(dir.path(), &cfg);
        let id = new_id();
        assert!(new(inbox.store(&entry("k1", &id, DAY + 1))));
        assert!(
            !new(inbox.store(&entry("k1", &id, DAY + 2))),
            "duplicate stored"
        );
        assert!(
            new(inbox.store(&entry("k2", &id, DAY + 3))),
            "other sender, same id"
        );
        let mut again = open(dir.path(), &cfg);
        assert_eq!(again.list().unwrap().len(), 2);
        assert!(
            !new(again.store(&entry("k1", &id, DAY + 4))),
            "dedupe lost on reopen"
        );
        assert_eq!(again.take().unwrap().len(), 2);
        assert!(again.list().unwrap().is_empty());
    }

    #[test]
    fn a_retry_after_a_clear_and_a_restart_is_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig::default();
        let mut inbox = open(dir.path(), &cfg);
        let id = new_id();
        assert!(new(inbox.store(&entry("k1", &id, DAY + 1))));
        assert_eq!(inbox.take().unwrap().len(), 1);
        drop(inbox);
        let mut restarted = open(dir.path(), &cfg);
        assert!(
            !new(restarted.store(&entry("k1", &id, DAY + 2))),
            "the retry of a cleared message was stored again"
        );
        assert!(restarted.list().unwrap().is_empty());
    }

    #[test]
    fn clearing_deletes_exactly_the_messages_it_lists_and_they_stay_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig::default();
        let mut inbox = open(dir.path(), &cfg);
        let (a, b, c) = (new_id(), new_id(), new_id());
        assert!(new(inbox.store(&entry("k1", &a, DAY + 1))));
        assert!(new(inbox.store(&entry("k2", &b, DAY + 2))));
        let filter = InboxFilter {
            from: Some("k1".into()),
            ..InboxFilter::default()
        };
        let taken = inbox.select(&filter, true).unwrap();
        assert_eq!(
            taken.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            [a.as_str()]
        );
        // What arrives after the listing stays for the next one.
        assert!(new(inbox.store(&entry("k1", &c, DAY + 3))));
        drop(inbox);
        let again = open(dir.path(), &cfg);
        let ids: Vec<String> = again.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, [b, c], "a cleared message came back, or one was lost");
    }

    /// A crash between the journal write and the ack: the process dies with the line
    /// written whole (the page cache keeps it) or torn (cut here by hand), never synced.
    #[tokio::test]
    async fn a_crash_between_write_and_ack_loses_nothing_acked_and_stores_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig::default();
        let journal = dir.path().join("inbox").join(JOURNAL);
        let mut inbox = open(dir.path(), &cfg);
        let (acked, whole, torn, later) = (new_id(), new_id(), new_id(), new_id());
        assert!(new(inbox.store(&entry("k1", &acked, DAY + 1))));
        inbox.durable().wait().await.unwrap();
        // Stored, never acked: the sender still has it and will retry.
        assert!(new(inbox.store(&entry("k1", &whole, DAY + 2))));
        let before_torn = std::fs::metadata(&journal).unwrap().len();
        assert!(new(inbox.store(&entry("k1", &torn, DAY + 3))));
        drop(inbox);
        let full = std::fs::metadata(&journal).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap();
        f.set_len(before_torn + (full - before_torn) / 2).unwrap();
        drop(f);

        let mut restarted = open(dir.path(), &cfg);
        let ids =
            |i: &Inbox| -> Vec<String> { i.list().unwrap().into_iter().map(|e| e.id).collect() };
        assert_eq!(ids(&restarted), [acked.clone(), whole.clone()]);
        // The sender's retries: the acked one and the whole one are acked again, not stored
        // twice; the torn one is stored now, once; a later one is not glued to the torn
        // fragment.
        assert!(!new(restarted.store(&entry("k1", &acked, DAY + 4))));
        assert!(!new(restarted.store(&entry("k1", &whole, DAY + 4))));
        assert!(new(restarted.store(&entry("k1", &torn, DAY + 4))));
        assert!(!new(restarted.store(&entry("k1", &torn, DAY + 5))));
        assert!(new(restarted.store(&entry("k1", &later, DAY + 6))));
        restarted.durable().wait().await.unwrap();
        drop(restarted);
        let again = open(dir.path(), &cfg);
        assert_eq!(ids(&again), [acked, whole, torn, later]);
    }

    #[tokio::test]
    async fn messages_stored_together_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = open(dir.path(), &MessagesConfig::default());
        let before = inbox.journal.syncs();
        // Fifty connections store a message each before any of them waits for its commit.
        let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(new(inbox.store(&entry("k1", id, DAY + i as u64))));
        }
        let pending: Vec<Durable> = (0..50).map(|_| inbox.durable()).collect();
        for d in pending {
            d.wait().await.unwrap();
        }
        assert_eq!(
            inbox.journal.syncs() - before,
            1,
            "one fdatasync for all fifty"
        );
        // A retry of a durable message is acked without another.
        assert!(!new(inbox.store(&entry("k1", &ids[0], DAY + 60))));
        inbox.durable().wait().await.unwrap();
        assert_eq!(inbox.journal.syncs() - before, 1);
    }

    #[test]
    fn message_files_of_the_earlier_inbox_are_taken_into_the_journal_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("inbox");
        std::fs::create_dir_all(&d).unwrap();
        let (a, b) = (entry("k1", &new_id(), 7), entry("k2", &new_id(), 8));
        for e in [&b, &a] {
            let name = format!("{:016}-x-{}.json", e.received_ms, e.id);
            std::fs::write(d.join(name), serde_json::to_vec_pretty(e).unwrap()).unwrap();
        }
        // A file no version could read is left alone, not deleted unseen.
        let odd = d.join("0000000000000009-x.json");
        std::fs::write(&odd, "{not json").unwrap();
        let mut inbox = open(dir.path(), &MessagesConfig::default());
        assert_eq!(inbox.list().unwrap(), [a.clone(), b.clone()]);
        assert!(odd.exists());
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!new(inbox.store(&a)), "a taken-in message was stored again");
        drop(inbox);
        assert_eq!(
            open(dir.path(), &MessagesConfig::default()).list().unwrap(),
            [a, b]
        );
    }

    #[test]
    fn a_sender_over_its_quota_is_refused_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            inbox_max_messages_per_sender: 2,
            inbox_max_messages: 3,
            ..MessagesConfig::default()
        };
        let mut inbox = open(dir.path(), &cfg);
        let ids: Vec<String> = (0..5).map(|_| new_id()).collect();
        assert!(new(inbox.store(&entry("k1", &ids[0], DAY))));
        assert!(new(inbox.store(&entry("k1", &ids[1], DAY))));
        let refused = inbox.store(&entry("k1", &ids[2], DAY)).unwrap();
        assert!(
            matches!(&refused, StoreOutcome::Refused(q) if q.0.contains("2 messages from you")),
            "{refused:?}"
        );
        assert!(
            !new(inbox.store(&entry("k1", &ids[0], DAY))),
            "a retry is still acked"
        );
        assert!(new(inbox.store(&entry("k2", &ids[3], DAY))));
        let full = inbox.store(&entry("k3", &ids[4], DAY)).unwrap();
        assert!(matches!(full, StoreOutcome::Refused(_)), "{full:?}");
        assert_eq!(inbox.list().unwrap().len(), 3);
        // Quotas hold across a restart, and clearing frees them.
        let mut again = open(dir.path(), &cfg);
        assert!(matches!(
            again.store(&entry("k1", &ids[2], DAY)).unwrap(),
            StoreOutcome::Refused(_)
        ));
        again.take().unwrap();
        assert!(new(again.store(&entry("k1", &ids[2], DAY))));
    }

    #[test]
    fn byte_quotas_refuse_a_message_that_would_overflow_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MessagesConfig {
            inbox_max_bytes_per_sender: 1000,
            inbox_max_bytes: 1500,
            ..MessagesConfig::default()
        };
        let mut inbox = open(dir.path(), &cfg);
        let mut big = entry("k1", &new_id(), DAY);
        big.data = serde_json::json!("x".repeat(400));
        assert!(new(inbox.store(&big)));
        big.id = new_id();
        assert!(
            matches!(inbox.store(&big).unwrap(), StoreOutcome::Refused(q) if q.0.contains("1000 bytes from you"))
        );
        big.from = "k2".into();
        assert!(new(inbox.store(&big)));
        big.from = "k3".into();
        big.id = new_id();
        assert!(
            matches!(inbox.store(&big).unwrap(), StoreOutcome::Refused(q) if q.0.contains("1500 bytes"))
        );
    }

    #[test]
    fn inbox_refuses_ids_that_are_not_hex() {
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = open(dir.path(), &MessagesConfig::default());
        assert!(inbox.store(&entry("k", "../../etc/passwd", 1)).is_err());
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
            in_reply_to: None,
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
