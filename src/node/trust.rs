//! Trust: which peers may build a tunnel with us, how that changes, and where it is kept.
//!
//! # States (per peer key)
//! - `Pending`: they asked us; we have not decided. Their request's nonce is kept to answer it.
//! - `Requested`: we asked them; no answer yet.
//! - `Trusted`: mutual trust. Only trusted peers get a tunnel.
//! - `Rejected`: we refused them, or they refused us.
//! - no entry: nothing between us (also the state after a revocation).
//!
//! # Rules
//! - Their request + our approval = mutual trust; our request + their approval likewise.
//! - A request towards a peer that already asked us completes trust at once (we send the
//!   approval); a request from a peer we already asked completes it the same way.
//! - Either side can untrust: the entry is removed, the other side is sent a revocation, and the
//!   daemon tears the tunnel down ([`TrustEffect::Untrusted`]).
//! - An allow-list (keys, or hostnames as bound by the registry) approves requests at once.
//!   Hostname entries trust the registry's binding of the name; key entries trust nothing else.
//! - A trust message from a peer is applied only if its timestamp is newer than the last one
//!   applied from that peer (the *watermark*), so a replayed old message (say a revocation from
//!   before the peers made up) changes nothing.
//! - An unsolicited approval (we did not ask) creates no trust.
//!
//! Trust messages themselves are the signed `TrustRequest` / `TrustResponse` requests of
//! [`crate::wire::registry`]: the same bytes travel through a registry (held and pushed) or
//! directly to a peer that is reachable; [`verify_trust_message`] checks them on arrival.
//!
//! # File
//! `trust.json` in the state directory, mode 0600, written atomically (temporary file, fsync,
//! rename). A file that group or others can access is refused at load, as the key file is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::wire::registry::{Nonce, Request, RequestBody, TrustDecision, WireError};

/// The trust file's name inside the state directory.
pub const TRUST_FILE: &str = "trust.json";

/// How old a trust message may be when it arrives (it may wait at a registry for a week), ms.
pub const MAX_TRUST_MESSAGE_AGE_MS: u64 = 7 * 24 * 3600 * 1000 + 60_000;
/// How far in the future a trust message's timestamp may be, ms.
pub const MAX_TRUST_MESSAGE_SKEW_MS: u64 = 60_000;

/// Where a peer stands with us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TrustState {
    /// They asked us to trust them; we have not decided.
    Pending {
        /// Their justification.
        justification: String,
        /// Their request's nonce (base64), to answer it.
        request_nonce: String,
        /// When it arrived (unix ms).
        since_ms: u64,
    },
    /// We asked them; no answer yet.
    Requested {
        /// When we asked (unix ms).
        since_ms: u64,
    },
    /// Mutual trust.
    Trusted {
        /// Since when (unix ms).
        since_ms: u64,
    },
    /// Refused (by us or by them).
    Rejected {
        /// Whether we refused them (`true`) or they refused us.
        by_us: bool,
        /// When (unix ms).
        since_ms: u64,
    },
}

/// One peer's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTrust {
    /// The peer's identity.
    pub key: PublicKey,
    /// Its hostname as last known (from the registry), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: TrustState,
}

/// Peers whose requests are approved without asking (orchestrators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    /// Keys approved at once.
    #[serde(default)]
    pub keys: BTreeSet<PublicKey>,
    /// Hostnames approved at once (as bound by the registry).
    #[serde(default)]
    pub hostnames: BTreeSet<Hostname>,
}

impl AllowList {
    /// Builds the list from config entries (`[trust] allow`): each is a public key (base64 or
    /// hex) or a hostname (an optional `.pilot` suffix is dropped).
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self, crate::error::PilotError> {
        let mut allow = AllowList::default();
        for e in entries {
            let e = e.as_ref().trim();
            if let Ok(k) = e.parse::<PublicKey>() {
                allow.keys.insert(k);
                continue;
            }
            let name = e.strip_suffix(".pilot").unwrap_or(e);
            let h = Hostname::new(name).map_err(|err| {
                crate::error::PilotError::invalid(
                    format!("trust allow-list entry `{e}` is neither a public key nor a hostname: {err}"),
                    "write a base64 (44 characters) or hex (64 digits) public key, or a hostname",
                )
            })?;
            allow.hostnames.insert(h);
        }
        Ok(allow)
    }

    /// Whether a request from `key` (registry name `hostname`) is approved at once.
    pub fn allows(&self, key: &PublicKey, hostname: Option<&Hostname>) -> bool {
        self.keys.contains(key) || hostname.is_some_and(|h| self.hostnames.contains(h))
    }
}

/// What the daemon must do after a trust change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustEffect {
    /// Send a signed trust request to the peer (through the registries, or directly).
    SendRequest {
        /// The peer.
        to: PublicKey,
        /// Our justification.
        justification: String,
    },
    /// Send a signed trust response (approve, reject or revoke) to the peer.
    SendResponse {
        /// The peer.
        to: PublicKey,
        /// The nonce of the request answered (zero for a revocation).
        in_reply_to: Nonce,
        /// The decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
    },
    /// The peer is trusted now: add it to the data plane (`add_peer`).
    Trusted(PublicKey),
    /// Trust is gone: remove the peer from the data plane (`remove_peer`), tearing the tunnel down.
    Untrusted(PublicKey),
    /// A request waits for the user's decision (`pilotctl approve` / `reject`).
    AwaitingApproval {
        /// Who asks.
        from: PublicKey,
        /// Its hostname, if the registry knows one.
        hostname: Option<Hostname>,
        /// Its justification.
        justification: String,
    },
    /// The peer refused our request.
    RejectedBy(PublicKey),
}

/// Failures of the trust store.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The peer has no pending request to approve or reject.
    #[error("no pending trust request from {0}")]
    NoPendingRequest(PublicKey),
    /// There is no trust relation with the peer to remove.
    #[error("no trust relation with {0}")]
    NotFound(PublicKey),
    /// A node cannot trust itself.
    #[error("a node cannot send a trust request to itself")]
    SelfTrust,
    /// The justification is longer than the wire allows.
    #[error("the justification is {0} bytes; at most {max} are allowed", max = crate::wire::registry::MAX_JUSTIFICATION)]
    JustificationTooLong(usize),
    /// The trust file is accessible by group or others.
    #[error("trust file {path} has mode {mode:04o}: it must not be accessible by group or others")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The trust file is not valid JSON of our format.
    #[error("trust file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the trust file failed.
    #[error("cannot access trust file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl TrustError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            TrustError::NoPendingRequest(_) => "see pending requests with `pilotctl pending`".into(),
            TrustError::NotFound(_) => "see trusted peers with `pilotctl trust list`".into(),
            TrustError::SelfTrust => "name another node".into(),
            TrustError::JustificationTooLong(_) => "shorten the justification".into(),
            TrustError::InsecurePermissions { path, .. } => {
                format!("run `chmod 600 {}`", path.display())
            }
            TrustError::Malformed { path, .. } => format!(
                "restore {} from a backup, or move it away to start with no trust",
                path.display()
            ),
            TrustError::Io { .. } => {
                "check that the state directory ($PILOT_HOME, default ~/.pilot) is yours and writable".into()
            }
        }
    }
}

impl From<TrustError> for crate::error::PilotError {
    fn from(e: TrustError) -> Self {
        use crate::error::ErrorCode;
        let code = match e {
            TrustError::NoPendingRequest(_) | TrustError::NotFound(_) => ErrorCode::NotFound,
            TrustError::SelfTrust
            | TrustError::JustificationTooLong(_)
            | TrustError::Malformed { .. } => ErrorCode::InvalidArgument,
            TrustError::InsecurePermissions { .. } => ErrorCode::Unauthorized,
            TrustError::Io { .. } => ErrorCode::Internal,
        };
        crate::error::PilotError::new(code, e.to_string(), e.hint())
    }
}

/// The file format.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TrustFile {
    version: u32,
    #[serde(default)]
    peers: Vec<PeerTrust>,
    /// Per peer: the timestamp of the newest trust message applied (unix ms).
    #[serde(default)]
    watermarks: BTreeMap<PublicKey, u64>,
}

/// The trust store: per-peer state, the allow-list, and the file they are kept in.
#[derive(Debug)]
pub struct TrustStore {
    me: PublicKey,
    path: Option<PathBuf>,
    peers: BTreeMap<PublicKey, PeerTrust>,
    watermarks: BTreeMap<PublicKey, u64>,
    allow: AllowList,
}

fn b64(n: &Nonce) -> String {
    base64::engine::general_purpose::STANDARD.encode(n)
}

fn unb64(s: &str) -> Nonce {
    let mut n = [0u8; 16];
    if let Ok(v) = base64::engine::general_purpose::STANDARD.decode(s) {
        if v.len() == 16 {
            n.copy_from_slice(&v);
        }
    }
    n
}

impl TrustStore {
    /// A store that is not persisted (tests, tools).
    pub fn in_memory(me: PublicKey) -> Self {
        TrustStore {
            me,
            path: None,
            peers: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            allow: AllowList::default(),
        }
    }

    /// Loads `path` (or starts empty if it does not exist); every change is saved there.
    pub fn open(me: PublicKey, path: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: path.into(),
            source,
        };
        let mut store = Self::in_memory(me);
        store.path = Some(path.into());
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TrustError::InsecurePermissions {
                path: path.into(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let file: TrustFile = serde_json::from_str(&text).map_err(|e| TrustError::Malformed {
            path: path.into(),
            reason: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(TrustError::Malformed {
                path: path.into(),
                reason: format!("unknown version {}", file.version),
            });
        }
        store.peers = file.peers.into_iter().map(|p| (p.key, p)).collect();
        store.watermarks = file.watermarks;
        Ok(store)
    }

    /// Replaces the allow-list (from config).
    pub fn set_allow_list(&mut self, allow: AllowList) {
        self.allow = allow;
    }

    /// Whether `key` is mutually trusted: the one question the data plane asks.
    pub fn is_trusted(&self, key: &PublicKey) -> bool {
        matches!(
            self.peers.get(key).map(|p| &p.state),
            Some(TrustState::Trusted { .. })
        )
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &PublicKey) -> Option<&PeerTrust> {
        self.peers.get(key)
    }

    /// Every record, ordered by key.
    pub fn peers(&self) -> impl Iterator<Item = &PeerTrust> {
        self.peers.values()
    }

    /// Keys of trusted peers (to add to the data plane at start).
    pub fn trusted(&self) -> impl Iterator<Item = &PublicKey> {
        self.peers
            .values()
            .filter(|p| matches!(p.state, TrustState::Trusted { .. }))
            .map(|p| &p.key)
    }

    /// We ask `to` for trust. If it already asked us, trust is complete at once.
    pub fn request(
        &mut self,
        to: PublicKey,
        hostname: Option<Hostname>,
        justification: &str,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        if to == self.me {
            return Err(TrustError::SelfTrust);
        }
        if justification.len() > crate::wire::registry::MAX_JUSTIFICATION {
            return Err(TrustError::JustificationTooLong(justification.len()));
        }
        let hostname = hostname.or_else(|| self.peers.get(&to).and_then(|p| p.hostname.clone()));
        let effects = match self.peers.get(&to).map(|p| &p.state) {
            Some(TrustState::Trusted { .. }) => return Ok(Vec::new()),
            Some(TrustState::Pending { request_nonce, .. }) => {
                let in_reply_to = unb64(request_nonce);
                self.set(to, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![
                    TrustEffect::SendResponse {
                        to,
                        in_reply_to,
                        decision: TrustDecision::Approve,
                        reason: String::new(),
                    },
                    TrustEffect::Trusted(to),
                ]
            }
            _ => {
                self.set(to, hostname, TrustState::Requested { since_ms: now_ms });
                vec![TrustEffect::SendRequest {
                    to,
                    justification: justification.to_string(),
                }]
            }
        };
        self.save()?;
        Ok(effects)
    }

    /// A verified trust request from `from` arrived (sent at `sent_ms`, their clock).
    pub fn on_request(
        &mut self,
        from: PublicKey,
        hostname: Option<Hostname>,
        justification: &str,
        request_nonce: Nonce,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        if from == self.me || !self.advance_watermark(from, sent_ms) {
            return Ok(Vec::new());
        }
        let hostname = hostname.or_else(|| self.peers.get(&from).and_then(|p| p.hostname.clone()));
        let approve = TrustEffect::SendResponse {
            to: from,
            in_reply_to: request_nonce,
            decision: TrustDecision::Approve,
            reason: String::new(),
        };
        let effects = match self.peers.get(&from).map(|p| &p.state) {
            // They may have lost their state: confirm again.
            Some(TrustState::Trusted { .. }) => vec![approve],
            Some(TrustState::Requested { .. }) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![approve, TrustEffect::Trusted(from)]
            }
            _ if self.allow.allows(&from, hostname.as_ref()) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![approve, TrustEffect::Trusted(from)]
            }
            _ => {
                self.set(
                    from,
                    hostname.clone(),
                    TrustState::Pending {
                        justification: justification.to_string(),
                        request_nonce: b64(&request_nonce),
                        since_ms: now_ms,
                    },
                );
                vec![TrustEffect::AwaitingApproval {
                    from,
                    hostname,
                    justification: justification.to_string(),
                }]
            }
        };
        self.save()?;
        Ok(effects)
    }

    /// A verified trust response (or revocation) from `from` arrived (sent at `sent_ms`).
    pub fn on_response(
        &mut self,
        from: PublicKey,
        decision: TrustDecision,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        if from == self.me || !self.advance_watermark(from, sent_ms) {
            return Ok(Vec::new());
        }
        let state = self.peers.get(&from).map(|p| p.state.clone());
        let hostname = self.peers.get(&from).and_then(|p| p.hostname.clone());
        let effects = match (decision, state) {
            (TrustDecision::Approve, Some(TrustState::Requested { .. })) => {
                self.set(from, hostname, TrustState::Trusted { since_ms: now_ms });
                vec![TrustEffect::Trusted(from)]
            }
            (TrustDecision::Reject, Some(TrustState::Requested { .. })) => {
                self.set(
                    from,
                    hostname,
                    TrustState::Rejected {
                        by_us: false,
                        since_ms: now_ms,
                    },
                );
                vec![TrustEffect::RejectedBy(from)]
            }
            (TrustDecision::Revoke, Some(TrustState::Trusted { .. })) => {
                self.peers.remove(&from);
                vec![TrustEffect::Untrusted(from)]
            }
            (TrustDecision::Revoke, Some(_)) => {
                self.peers.remove(&from);
                Vec::new()
            }
            // Unsolicited approvals and rejections change nothing.
            _ => Vec::new(),
        };
        self.save()?;
        Ok(effects)
    }

    /// The user approves `key`'s pending request: trust is mutual now.
    pub fn approve(
        &mut self,
        key: &PublicKey,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(TrustState::Pending { request_nonce, .. }) = self.peers.get(key).map(|p| &p.state)
        else {
            return Err(TrustError::NoPendingRequest(*key));
        };
        let in_reply_to = unb64(request_nonce);
        let hostname = self.peers.get(key).and_then(|p| p.hostname.clone());
        self.set(*key, hostname, TrustState::Trusted { since_ms: now_ms });
        self.save()?;
        Ok(vec![
            TrustEffect::SendResponse {
                to: *key,
                in_reply_to,
                decision: TrustDecision::Approve,
                reason: String::new(),
            },
            TrustEffect::Trusted(*key),
        ])
    }

    /// The user rejects `key`'s pending request.
    pub fn reject(
        &mut self,
        key: &PublicKey,
        reason: &str,
        now_ms: u64,
    ) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(TrustState::Pending { request_nonce, .. }) = self.peers.get(key).map(|p| &p.state)
        else {
            return Err(TrustError::NoPendingRequest(*key));
        };
        let in_reply_to = unb64(request_nonce);
        let hostname = self.peers.get(key).and_then(|p| p.hostname.clone());
        self.set(
            *key,
            hostname,
            TrustState::Rejected {
                by_us: true,
                since_ms: now_ms,
            },
        );
        self.save()?;
        Ok(vec![TrustEffect::SendResponse {
            to: *key,
            in_reply_to,
            decision: TrustDecision::Reject,
            reason: reason.to_string(),
        }])
    }

    /// We withdraw trust from `key` (or a request, or a pending entry): the entry is removed and
    /// the peer is told. Returns [`TrustEffect::Untrusted`] if a tunnel must come down.
    pub fn untrust(&mut self, key: &PublicKey) -> Result<Vec<TrustEffect>, TrustError> {
        let Some(old) = self.peers.remove(key) else {
            return Err(TrustError::NotFound(*key));
        };
        self.save()?;
        let mut effects = vec![TrustEffect::SendResponse {
            to: *key,
            in_reply_to: [0; 16],
            decision: TrustDecision::Revoke,
            reason: String::new(),
        }];
        if matches!(old.state, TrustState::Trusted { .. }) {
            effects.push(TrustEffect::Untrusted(*key));
        }
        Ok(effects)
    }

    fn set(&mut self, key: PublicKey, hostname: Option<Hostname>, state: TrustState) {
        self.peers.insert(
            key,
            PeerTrust {
                key,
                hostname,
                state,
            },
        );
    }

    /// Records `sent_ms` as the newest message from `key`; false if it is not newer.
    fn advance_watermark(&mut self, key: PublicKey, sent_ms: u64) -> bool {
        let w = self.watermarks.entry(key).or_insert(0);
        if sent_ms <= *w {
            return false;
        }
        *w = sent_ms;
        true
    }

    /// Writes the store atomically with mode 0600 (no-op for an in-memory store).
    fn save(&self) -> Result<(), TrustError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = TrustFile {
            version: 1,
            peers: self.peers.values().cloned().collect(),
            watermarks: self.watermarks.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("trust file serialises");
        let tmp = path.with_extension("json.tmp");
        let io = |source| TrustError::Io {
            path: tmp.clone(),
            source,
        };
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(|source| TrustError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// A verified trust message addressed to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustMessage {
    /// Someone asks for our trust.
    Request {
        /// Who.
        from: PublicKey,
        /// Their request's nonce (answer with it).
        nonce: Nonce,
        /// Their clock when they sent it (unix ms).
        sent_ms: u64,
        /// Why.
        justification: String,
    },
    /// Someone answers our request, or revokes trust.
    Response {
        /// Who.
        from: PublicKey,
        /// The nonce of our request they answer (zero for a revocation).
        in_reply_to: Nonce,
        /// Their clock when they sent it (unix ms).
        sent_ms: u64,
        /// Their decision.
        decision: TrustDecision,
        /// Why.
        reason: String,
    },
}

/// Why a trust message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustMessageError {
    /// It does not decode or its signature does not verify.
    #[error("invalid trust message: {0}")]
    Wire(#[from] WireError),
    /// It is some other request.
    #[error("not a trust message")]
    NotTrust,
    /// It is addressed to another node.
    #[error("trust message for another node")]
    NotForUs,
    /// Its timestamp is too old or too far in the future.
    #[error("trust message timestamp out of range")]
    Stale,
}

impl From<TrustMessageError> for crate::error::PilotError {
    fn from(e: TrustMessageError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "the peer's trust message was refused; check both clocks and ask it to send again",
        )
    }
}

/// Checks a signed trust request or response (pushed by a registry or sent directly by the
/// peer): signature, addressee, and age.
pub fn verify_trust_message(
    bytes: &[u8],
    me: &PublicKey,
    now_ms: u64,
) -> Result<TrustMessage, TrustMessageError> {
    let req = Request::decode_verified(bytes)?;
    let h = req.header;
    if h.timestamp_ms.saturating_add(MAX_TRUST_MESSAGE_AGE_MS) < now_ms
        || h.timestamp_ms > now_ms.saturating_add(MAX_TRUST_MESSAGE_SKEW_MS)
    {
        return Err(TrustMessageError::Stale);
    }
    match req.body {
        RequestBody::TrustRequest {
            target,
            justification,
        } => {
            if target != *me {
                return Err(TrustMessageError::NotForUs);
            }
            Ok(TrustMessage::Request {
                from: h.sender,
                nonce: h.nonce,
                sent_ms: h.timestamp_ms,
                justification,
            })
        }
        RequestBody::TrustResponse {
            target,
            in_reply_to,
            decision,
            reason,
        } => {
            if target != *me {
                return Err(TrustMessageError::NotForUs);
            }
            Ok(TrustMessage::Response {
                from: h.sender,
                in_reply_to,
                sent_ms: h.timestamp_ms,
                decision,
                reason,
            })
        }
        _ => Err(TrustMessageError::NotTrust),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire::registry::Header;

    fn key(n: u8) -> PublicKey {
        Identity::from_seed([n; 32]).public_key()
    }

    const NOW: u64 = 1_750_000_000_000;

    #[test]
    fn their_request_and_our_approval_make_mutual_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s
            .on_request(key(2), None, "please", [5; 16], NOW, NOW)
            .unwrap();
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        assert!(!s.is_trusted(&key(2)));
        let fx = s.approve(&key(2), NOW).unwrap();
        assert_eq!(
            fx,
            vec![
                TrustEffect::SendResponse {
                    to: key(2),
                    in_reply_to: [5; 16],
                    decision: TrustDecision::Approve,
                    reason: String::new()
                },
                TrustEffect::Trusted(key(2))
            ]
        );
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn our_request_and_their_approval_make_mutual_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s.request(key(2), None, "hi", NOW).unwrap();
        assert!(matches!(fx[..], [TrustEffect::SendRequest { .. }]));
        let fx = s
            .on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::Trusted(key(2))]);
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn a_request_towards_a_peer_that_already_asked_us_completes_trust_at_once() {
        let mut s = TrustStore::in_memory(key(1));
        s.on_request(key(2), None, "", [7; 16], NOW, NOW).unwrap();
        let fx = s.request(key(2), None, "", NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn mutual_requests_complete_trust_at_once_on_both_sides() {
        let mut a = TrustStore::in_memory(key(1));
        let mut b = TrustStore::in_memory(key(2));
        a.request(key(2), None, "", NOW).unwrap();
        b.request(key(1), None, "", NOW).unwrap();
        // Each one's request reaches the other, who had asked too.
        let fx = a.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        let fx = b.on_request(key(1), None, "", [2; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(1))));
        assert!(a.is_trusted(&key(2)) && b.is_trusted(&key(1)));
    }

    #[test]
    fn untrust_by_either_side_removes_trust() {
        let mut s = TrustStore::in_memory(key(1));
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        s.request(key(3), None, "", NOW).unwrap();
        s.on_response(key(3), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        // We untrust 2: revocation sent, tunnel down.
        let fx = s.untrust(&key(2)).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse {
                decision: TrustDecision::Revoke,
                ..
            }
        ));
        assert_eq!(fx[1], TrustEffect::Untrusted(key(2)));
        assert!(!s.is_trusted(&key(2)));
        assert!(matches!(s.untrust(&key(2)), Err(TrustError::NotFound(_))));
        // 3 revokes us.
        let fx = s
            .on_response(key(3), TrustDecision::Revoke, NOW + 2, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::Untrusted(key(3))]);
        assert!(!s.is_trusted(&key(3)));
    }

    #[test]
    fn a_replayed_old_revocation_changes_nothing() {
        let mut s = TrustStore::in_memory(key(1));
        s.request(key(2), None, "", NOW).unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 10, NOW)
            .unwrap();
        let fx = s
            .on_response(key(2), TrustDecision::Revoke, NOW + 5, NOW)
            .unwrap();
        assert!(fx.is_empty());
        assert!(s.is_trusted(&key(2)));
    }

    #[test]
    fn unsolicited_approval_creates_no_trust() {
        let mut s = TrustStore::in_memory(key(1));
        let fx = s
            .on_response(key(2), TrustDecision::Approve, NOW, NOW)
            .unwrap();
        assert!(fx.is_empty());
        assert!(!s.is_trusted(&key(2)));
    }

    #[test]
    fn rejection_is_recorded_both_ways() {
        let mut s = TrustStore::in_memory(key(1));
        s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        let fx = s.reject(&key(2), "no", NOW).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse {
                decision: TrustDecision::Reject,
                ..
            }
        ));
        assert!(matches!(
            s.approve(&key(2), NOW),
            Err(TrustError::NoPendingRequest(_))
        ));
        s.request(key(3), None, "", NOW).unwrap();
        let fx = s
            .on_response(key(3), TrustDecision::Reject, NOW + 1, NOW)
            .unwrap();
        assert_eq!(fx, vec![TrustEffect::RejectedBy(key(3))]);
        assert!(!s.is_trusted(&key(3)));
    }

    #[test]
    fn allow_list_auto_approves_by_key_or_hostname() {
        let mut s = TrustStore::in_memory(key(1));
        let mut allow = AllowList::default();
        allow.keys.insert(key(2));
        allow
            .hostnames
            .insert(Hostname::new("orchestrator").unwrap());
        s.set_allow_list(allow);
        let fx = s.on_request(key(2), None, "", [1; 16], NOW, NOW).unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(2))));
        let fx = s
            .on_request(
                key(3),
                Some(Hostname::new("orchestrator").unwrap()),
                "",
                [2; 16],
                NOW,
                NOW,
            )
            .unwrap();
        assert!(fx.contains(&TrustEffect::Trusted(key(3))));
        let fx = s.on_request(key(4), None, "", [3; 16], NOW, NOW).unwrap();
        assert!(matches!(fx[..], [TrustEffect::AwaitingApproval { .. }]));
        assert!(s.is_trusted(&key(2)) && s.is_trusted(&key(3)) && !s.is_trusted(&key(4)));
    }

    #[test]
    fn allow_list_entries_are_keys_or_hostnames() {
        let k = key(2).to_string();
        let allow =
            AllowList::from_entries(&[k.as_str(), "orchestrator.pilot", "ci-runner"]).unwrap();
        assert!(allow.keys.contains(&key(2)));
        assert!(allow
            .hostnames
            .contains(&Hostname::new("orchestrator").unwrap()));
        assert!(allow
            .hostnames
            .contains(&Hostname::new("ci-runner").unwrap()));
        assert!(AllowList::from_entries(&["Not A Name"]).is_err());
    }

    #[test]
    fn self_trust_is_refused() {
        let mut s = TrustStore::in_memory(key(1));
        assert!(matches!(
            s.request(key(1), None, "", NOW),
            Err(TrustError::SelfTrust)
        ));
    }

    #[test]
    fn store_persists_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        let mut s = TrustStore::open(key(1), &path).unwrap();
        s.request(key(2), Some(Hostname::new("worker-node").unwrap()), "", NOW)
            .unwrap();
        s.on_response(key(2), TrustDecision::Approve, NOW + 1, NOW)
            .unwrap();
        s.on_request(key(3), None, "why not", [9; 16], NOW, NOW)
            .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("json.tmp").exists());

        let mut again = TrustStore::open(key(1), &path).unwrap();
        assert!(again.is_trusted(&key(2)));
        assert_eq!(
            again
                .get(&key(2))
                .unwrap()
                .hostname
                .as_ref()
                .unwrap()
                .as_str(),
            "worker-node"
        );
        assert!(matches!(
            again.get(&key(3)).unwrap().state,
            TrustState::Pending { .. }
        ));
        // The pending request's nonce survived: approving answers the right request.
        let fx = again.approve(&key(3), NOW).unwrap();
        assert!(matches!(
            fx[0],
            TrustEffect::SendResponse { in_reply_to, .. } if in_reply_to == [9; 16]
        ));
        // Watermarks survived: an old message stays old.
        assert!(again
            .on_response(key(2), TrustDecision::Revoke, NOW, NOW)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn trust_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRUST_FILE);
        fs::write(&path, "{\"version\":1}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = TrustStore::open(key(1), &path).unwrap_err();
        assert!(matches!(err, TrustError::InsecurePermissions { .. }));
        assert!(err.hint().contains("chmod 600"));
        let pe: crate::error::PilotError = err.into();
        assert_eq!(pe.code, crate::error::ErrorCode::Unauthorized);
        assert!(pe.hint.contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(TrustStore::open(key(1), &path).is_ok());
        fs::write(&path, "not json").unwrap();
        assert!(matches!(
            TrustStore::open(key(1), &path),
            Err(TrustError::Malformed { .. })
        ));
    }

    fn signed(from: &Identity, ts: u64, body: RequestBody) -> Vec<u8> {
        Request {
            header: Header {
                sender: from.public_key(),
                nonce: [4; 16],
                timestamp_ms: ts,
            },
            body,
        }
        .encode_signed(from)
        .unwrap()
    }

    #[test]
    fn trust_messages_are_checked_for_addressee_age_and_kind() {
        let a = Identity::from_seed([1; 32]);
        let me = key(2);
        let req = |target, ts| {
            signed(
                &a,
                ts,
                RequestBody::TrustRequest {
                    target,
                    justification: "j".into(),
                },
            )
        };
        assert!(matches!(
            verify_trust_message(&req(me, NOW), &me, NOW),
            Ok(TrustMessage::Request { sent_ms: NOW, .. })
        ));
        assert_eq!(
            verify_trust_message(&req(key(3), NOW), &me, NOW),
            Err(TrustMessageError::NotForUs)
        );
        assert_eq!(
            verify_trust_message(&req(me, NOW - MAX_TRUST_MESSAGE_AGE_MS - 1), &me, NOW),
            Err(TrustMessageError::Stale)
        );
        assert_eq!(
            verify_trust_message(&signed(&a, NOW, RequestBody::Heartbeat), &me, NOW),
            Err(TrustMessageError::NotTrust)
        );
        let mut forged = req(me, NOW);
        forged[60] ^= 1;
        assert!(matches!(
            verify_trust_message(&forged, &me, NOW),
            Err(TrustMessageError::Wire(_))
        ));
    }
}
