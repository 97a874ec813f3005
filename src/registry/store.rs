//! What a registry persists, so a restart loses neither hostnames nor undelivered trust
//! messages: the hostname → key bindings and the held (not yet acknowledged) trust requests and
//! responses. Presence (who is online, at which address) is deliberately not persisted: it is
//! rebuilt within one heartbeat interval, and a node told `unknown_node` registers again.
//!
//! The key → hostname direction is not stored separately: it is the inverse of the name table,
//! rebuilt at load, so the two can never disagree.
//!
//! [`Store::apply`] takes a batch of changes and applies them atomically (one redb write
//! transaction), so renaming a key (release the old name, bind the new) is never half done.
//!
//! A *shared* store ([`Store::shared`]: PostgreSQL, see [`super::pg`]) is used by several
//! registry instances at once: it also keeps presence (which instance a node is attached to),
//! carries [`StoreOp::Forward`] to the other instances, and tells each instance about every
//! change the others make, which the core applies with `Registry::apply_remote`. A new kind of
//! change is one new [`StoreOp`] variant and one match arm in each backend and in
//! `apply_remote`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::identity::PublicKey;
use crate::mapping::Hostname;

/// Which kind of message is held for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeldKind {
    /// A trust request (the original signed datagram).
    TrustRequest,
    /// A trust response or revocation.
    TrustResponse,
}

impl HeldKind {
    /// The byte that stands for this kind in storage keys.
    pub fn to_byte(self) -> u8 {
        match self {
            HeldKind::TrustRequest => 1,
            HeldKind::TrustResponse => 2,
        }
    }

    /// The kind a storage byte stands for.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(HeldKind::TrustRequest),
            2 => Some(HeldKind::TrustResponse),
            _ => None,
        }
    }
}

/// A message held for a target until it acknowledges it or it expires. At most one per
/// (target, sender, kind): a newer one replaces the older.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    /// Who it is for.
    pub target: PublicKey,
    /// Who sent (and signed) it.
    pub from: PublicKey,
    /// Request or response.
    pub kind: HeldKind,
    /// When the registry accepted it (unix ms); it expires a fixed time after.
    pub received_ms: u64,
    /// The original signed datagram, forwarded verbatim.
    pub original: Vec<u8>,
}

/// One change to persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Bind `name` to `key` (replacing any binding of that name).
    SetName {
        /// The hostname.
        name: Hostname,
        /// Its owner.
        key: PublicKey,
    },
    /// Remove the binding of `name`.
    RemoveName {
        /// The hostname.
        name: Hostname,
    },
    /// Hold a message (replacing the one with the same target, sender and kind).
    PutHeld(HeldMessage),
    /// Record that `key` registered (or heartbeat) at `unix_ms`: it may be sent held messages,
    /// and its hostname is kept, until it has been silent for the registration expiry.
    Seen {
        /// The node.
        key: PublicKey,
        /// When (unix ms).
        unix_ms: u64,
    },
    /// Forget a node that has been silent past the registration expiry.
    Forget {
        /// The node.
        key: PublicKey,
    },
    /// Drop a held message.
    RemoveHeld {
        /// Who it was for.
        target: PublicKey,
        /// Who sent it.
        from: PublicKey,
        /// Its kind.
        kind: HeldKind,
    },
    /// `key` is attached to this instance at `addr` (its reflexive endpoint), heard at
    /// `unix_ms`. Emitted only for a shared store (single-instance presence is not persisted).
    Presence {
        /// The node.
        key: PublicKey,
        /// Its reflexive address, as this instance sees it.
        addr: SocketAddr,
        /// When (unix ms).
        unix_ms: u64,
    },
    /// A datagram for `target`, which is attached to another instance: that instance sends it
    /// from its own socket (the target's NAT only knows that one). Not stored; emitted only for
    /// a shared store.
    Forward {
        /// The node it is for.
        target: PublicKey,
        /// The signed push, ready to send.
        datagram: Vec<u8>,
        /// For a forwarded endpoint request: what the delivering instance must remember so it
        /// accepts the target's answer.
        endpoint: Option<ForwardedEndpoint>,
    },
}

/// An endpoint request forwarded to another instance: the request's nonce and who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedEndpoint {
    /// The request's nonce (the answer's `in_reply_to`).
    pub nonce: [u8; 16],
    /// Who asked.
    pub asker: PublicKey,
}

impl StoreOp {
    /// Whether the answer to the request that made this change must wait for its commit on a
    /// shared store: a hostname claim (another instance may claim the same name at the same
    /// moment; the store decides) and a held message (an instance killed right after its `Ack`
    /// must not lose it).
    pub fn must_commit_first(&self) -> bool {
        matches!(self, StoreOp::SetName { .. } | StoreOp::PutHeld(_))
    }
}

/// Everything persisted, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Hostname bindings.
    pub names: Vec<(Hostname, PublicKey)>,
    /// Held messages.
    pub held: Vec<HeldMessage>,
    /// Registered nodes and when each last registered or heartbeat (unix ms).
    pub seen: Vec<(PublicKey, u64)>,
    /// Nodes attached to other instances of a shared store, and when each was last heard there.
    pub elsewhere: Vec<(PublicKey, u64)>,
}

/// A storage failure. `Clone`, so that one failed commit shared by several requests (parked
/// holds committed together) gives each of them the same error, kind included.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("registry store {path}: {detail}")]
    Backend {
        /// The database file.
        path: PathBuf,
        /// What the backend reported.
        detail: String,
    },
    /// A record is not in the expected format (a corrupt or foreign file).
    #[error("registry store {path}: corrupt record: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which record and why.
        detail: String,
    },
    /// Another instance changed the same record first (a hostname claimed at the same moment):
    /// nothing of the batch was applied.
    #[error("registry store: {detail}")]
    Conflict {
        /// What conflicted.
        detail: String,
    },
    /// The database's schema is newer than this binary knows.
    #[error("registry store {path}: the database schema is version {found}, this pilotctl knows up to {known}")]
    SchemaTooNew {
        /// The database.
        path: PathBuf,
        /// The version found in the database.
        found: i64,
        /// The newest version this binary has.
        known: i64,
    },
}

impl From<StoreError> for crate::error::PilotError {
    fn from(e: StoreError) -> Self {
        let hint = e.hint();
        crate::error::PilotError::new(crate::error::ErrorCode::Internal, e.to_string(), hint)
    }
}

impl StoreError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            StoreError::SchemaTooNew { .. } => {
                "a newer pilotctl migrated this database: run that version (every instance of a cluster must run the same or a newer pilotctl)"
            }
            _ => STORE_HINT,
        }
    }
}

/// What the operator can do about a [`StoreError`].
pub(crate) const STORE_HINT: &str = "another registry may be using this state directory, or the database is damaged (restore it from a backup)";

/// Persistence for the registry core. Implementations apply each batch atomically.
pub trait Store: Send {
    /// Reads everything persisted.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Applies a batch of changes atomically.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Whether other registry instances share this store (a cluster): hostname claims are then
    /// decided by the store, and presence and forwards go through it.
    fn shared(&self) -> bool {
        false
    }
    /// Applies `ops` as [`Store::apply`] does and returns `Some(result)`, or, for a store that
    /// commits on another thread and was asked to park (see
    /// [`super::writer::BatchingStore::take_commits`]), queues a batch whose answer must wait
    /// for its commit ([`StoreOp::must_commit_first`]) and returns `None`: the result arrives
    /// later as a [`Committed`] carrying `ticket`, and the caller goes on meanwhile.
    fn apply_or_park(&mut self, ops: &[StoreOp], ticket: u64) -> Option<Result<(), StoreError>> {
        let _ = ticket;
        Some(self.apply(ops))
    }
}

/// The result of a parked batch (see [`Store::apply_or_park`]).
#[derive(Debug)]
pub struct Committed {
    /// The ticket the batch was queued with.
    pub ticket: u64,
    /// Whether it was committed (a lost hostname claim is [`StoreError::Conflict`]).
    pub result: Result<(), StoreError>,
}

type HeldKey = ([u8; 32], [u8; 32], u8);

/// An in-memory store, for tests and for a registry that need not survive restarts.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    names: BTreeMap<Hostname, PublicKey>,
    held: BTreeMap<HeldKey, HeldMessage>,
    seen: BTreeMap<[u8; 32], (PublicKey, u64)>,
    /// When set, every `apply` fails (to test the registry's handling of storage failures).
    pub fail_writes: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            names: self.names.iter().map(|(n, k)| (n.clone(), *k)).collect(),
            held: self.held.values().cloned().collect(),
            seen: self.seen.values().copied().collect(),
            elsewhere: Vec::new(),
        })
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Backend {
                path: "memory".into(),
                detail: "writes disabled".into(),
            });
        }
        for op in ops {
            match op {
                StoreOp::SetName { name, key } => {
                    self.names.insert(name.clone(), *key);
                }
                StoreOp::RemoveName { name } => {
                    self.names.remove(name);
                }
                StoreOp::PutHeld(m) => {
                    let k = (*m.target.as_bytes(), *m.from.as_bytes(), m.kind.to_byte());
                    self.held.insert(k, m.clone());
                }
                StoreOp::RemoveHeld { target, from, kind } => {
                    self.held
                        .remove(&(*target.as_bytes(), *from.as_bytes(), kind.to_byte()));
                }
                StoreOp::Seen { key, unix_ms } => {
                    self.seen.insert(*key.as_bytes(), (*key, *unix_ms));
                }
                StoreOp::Forget { key } => {
                    self.seen.remove(key.as_bytes());
                }
                StoreOp::Presence { .. } | StoreOp::Forward { .. } => {}
            }
        }
        Ok(())
    }
}

/// hostname → 32-byte public key.
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names_v1");
/// target key (32) ‖ sender key (32) ‖ kind (1) → received unix ms (u64 BE, 8) ‖ original.
const HELD: TableDefinition<&[u8], &[u8]> = TableDefinition::new("held_v1");
/// 32-byte public key → last registration or heartbeat, unix ms (u64 BE).
const SEEN: TableDefinition<&[u8], u64> = TableDefinition::new("seen_v1");

/// The embedded store: one redb file (`registry.redb` in the state directory).
pub struct RedbStore {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedbStore({})", self.path.display())
    }
}

impl RedbStore {
    /// The file name used inside a registry's state directory.
    pub const FILE_NAME: &'static str = "registry.redb";

    /// Opens (or creates) the database at `path` and makes sure its tables exist.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Backend {
            path: path.into(),
            detail: e.to_string(),
        };
        let db = redb::Database::create(path).map_err(|e| err(&e))?;
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(NAMES).map_err(|e| err(&e))?;
        txn.open_table(HELD).map_err(|e| err(&e))?;
        txn.open_table(SEEN).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        Ok(RedbStore {
            db,
            path: path.into(),
        })
    }

    fn backend(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.backend(e))?;
        let mut snap = Snapshot::default();
        let names = txn.open_table(NAMES).map_err(|e| self.backend(e))?;
        for row in names.iter().map_err(|e| self.backend(e))? {
            let (k, v) = row.map_err(|e| self.backend(e))?;
            let name = Hostname::new(k.value())
                .map_err(|e| self.corrupt(format!("name {:?}: {e}", k.value())))?;
            let bytes: [u8; 32] = v
                .value()
                .try_into()
                .map_err(|_| self.corrupt(format!("key of {name} is not 32 bytes")))?;
            let key = PublicKey::from_bytes(bytes)
                .map_err(|e| self.corrupt(format!("key of {name}: {e}")))?;
            snap.names.push((name, key));
        }
        let held = txn.open_table(HELD).map_err(|e| self.backend(e))?;
        for row in held.iter().map_err(|e| self.backend(e))? {
            let (k, v) = row.map_err(|e| self.backend(e))?;
            let (k, v) = (k.value(), v.value());
            if k.len() != 65 || v.len() < 8 {
                return Err(self.corrupt("held record of the wrong size"));
            }
            let key_at = |range: std::ops::Range<usize>| {
                let b: [u8; 32] = k[range].try_into().expect("65-byte key");
                PublicKey::from_bytes(b).map_err(|e| self.corrupt(format!("held record: {e}")))
            };
            let kind =
                HeldKind::from_byte(k[64]).ok_or_else(|| self.corrupt("held record kind"))?;
            snap.held.push(HeldMessage {
                target: key_at(0..32)?,
                from: key_at(32..64)?,
                kind,
                received_ms: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                original: v[8..].to_vec(),
            });
        }
        let seen = txn.open_table(SEEN).map_err(|e| self.backend(e))?;
        for row in seen.iter().map_err(|e| self.backend(e))? {
            let (k, v) = row.map_err(|e| self.backend(e))?;
            let bytes: [u8; 32] = k
                .value()
                .try_into()
                .map_err(|_| self.corrupt("seen record key is not 32 bytes"))?;
            let key = PublicKey::from_bytes(bytes)
                .map_err(|e| self.corrupt(format!("seen record: {e}")))?;
            snap.seen.push((key, v.value()));
        }
        Ok(snap)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.backend(e))?;
        {
            let mut names = txn.open_table(NAMES).map_err(|e| self.backend(e))?;
            let mut held = txn.open_table(HELD).map_err(|e| self.backend(e))?;
            let mut seen = txn.open_table(SEEN).map_err(|e| self.backend(e))?;
            for op in ops {
                match op {
                    StoreOp::SetName { name, key } => {
                        names
                            .insert(name.as_str(), key.as_bytes().as_slice())
                            .map_err(|e| self.backend(e))?;
                    }
                    StoreOp::RemoveName { name } => {
                        names.remove(name.as_str()).map_err(|e| self.backend(e))?;
                    }
                    StoreOp::PutHeld(m) => {
                        let k = held_key(&m.target, &m.from, m.kind);
                        let mut v = Vec::with_capacity(8 + m.original.len());
                        v.extend_from_slice(&m.received_ms.to_be_bytes());
                        v.extend_from_slice(&m.original);
                        held.insert(k.as_slice(), v.as_slice())
                            .map_err(|e| self.backend(e))?;
                    }
                    StoreOp::RemoveHeld { target, from, kind } => {
                        let k = held_key(target, from, *kind);
                        held.remove(k.as_slice()).map_err(|e| self.backend(e))?;
                    }
                    StoreOp::Seen { key, unix_ms } => {
                        seen.insert(key.as_bytes().as_slice(), *unix_ms)
                            .map_err(|e| self.backend(e))?;
                    }
                    StoreOp::Forget { key } => {
                        seen.remove(key.as_bytes().as_slice())
                            .map_err(|e| self.backend(e))?;
                    }
                    // A single instance rebuilds presence within a heartbeat; nothing to forward.
                    StoreOp::Presence { .. } | StoreOp::Forward { .. } => {}
                }
            }
        }
        txn.commit().map_err(|e| self.backend(e))
    }
}

fn held_key(target: &PublicKey, from: &PublicKey, kind: HeldKind) -> [u8; 65] {
    let mut k = [0u8; 65];
    k[..32].copy_from_slice(target.as_bytes());
    k[32..64].copy_from_slice(from.as_bytes());
    k[64] = kind.to_byte();
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn key(n: u8) -> PublicKey {
        Identity::from_seed([n; 32]).public_key()
    }

    fn exercise(store: &mut dyn Store) -> Snapshot {
        let a = Hostname::new("alpha").unwrap();
        let b = Hostname::new("beta").unwrap();
        let held = |from: u8, ms: u64| HeldMessage {
            target: key(1),
            from: key(from),
            kind: HeldKind::TrustRequest,
            received_ms: ms,
            original: vec![0x50, from],
        };
        store
            .apply(&[
                StoreOp::SetName {
                    name: a.clone(),
                    key: key(1),
                },
                StoreOp::SetName {
                    name: b.clone(),
                    key: key(2),
                },
                StoreOp::PutHeld(held(2, 10)),
                StoreOp::PutHeld(held(3, 11)),
                StoreOp::Seen {
                    key: key(1),
                    unix_ms: 5,
                },
                StoreOp::Seen {
                    key: key(2),
                    unix_ms: 6,
                },
            ])
            .unwrap();
        store
            .apply(&[
                StoreOp::RemoveName { name: b },
                StoreOp::PutHeld(held(2, 20)),
                StoreOp::RemoveHeld {
                    target: key(1),
                    from: key(3),
                    kind: HeldKind::TrustRequest,
                },
                StoreOp::Forget { key: key(2) },
                StoreOp::Seen {
                    key: key(1),
                    unix_ms: 7,
                },
            ])
            .unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.names, vec![(a, key(1))]);
        assert_eq!(snap.held, vec![held(2, 20)]);
        assert_eq!(snap.seen, vec![(key(1), 7)]);
        snap
    }

    #[test]
    fn memory_store_applies_batches() {
        exercise(&mut MemoryStore::new());
    }

    #[test]
    fn redb_store_applies_batches_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RedbStore::FILE_NAME);
        let snap = exercise(&mut RedbStore::open(&path).unwrap());
        let reopened = RedbStore::open(&path).unwrap();
        assert_eq!(reopened.load().unwrap(), snap);
    }
}
