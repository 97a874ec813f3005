//! The PostgreSQL store: several registry instances share one database and are stateless
//! front ends over it (`pilotctl registry run --store postgres://...`).
//!
//! - Every batch is one transaction; the changes it makes are announced to the other instances
//!   in the same transaction (`NOTIFY pilot_registry`, see [`notes`]), so they see a change
//!   exactly when it is committed. Each instance LISTENs on a connection of its own and hands
//!   what the others did to the runner ([`Notifications`]), which applies it to its core
//!   (`Registry::apply_remote`).
//! - Hostname ownership is decided by the database: the claim is an `INSERT ... ON CONFLICT DO
//!   NOTHING` on the name's primary key, so of two instances claiming one name at the same
//!   moment exactly one commits; the other's batch fails with [`StoreError::Conflict`].
//! - Schema migrations ([`schema`]) are applied at connect.
//!
//! The driver is tokio-postgres with a deadpool connection pool, on a runtime of the store's
//! own (the [`Store`] trait is synchronous and called from the writer thread).

pub mod notes;
pub mod schema;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::{Pool, Transaction};
use futures_util::StreamExt;
use tokio_postgres::NoTls;

use super::store::{HeldKind, HeldMessage, Snapshot, Store, StoreError, StoreOp};
use crate::identity::PublicKey;
use crate::mapping::Hostname;

/// The channel of the cluster's notifications.
pub const CHANNEL: &str = "pilot_registry";

/// Whether a `store` setting names a PostgreSQL database (a `postgres://` or `postgresql://`
/// URL, or a `key=value` connection string).
pub fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://") || store.contains('=')
}

/// A change another instance committed, as the runner receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// When the other instance sent it (its unix ms): now minus this is the push latency.
    pub sent_ms: u64,
    /// The change.
    pub op: StoreOp,
}

/// What the cluster listener hands the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A change another instance committed.
    Change(RemoteChange),
    /// The listener lost its connection, reconnected and LISTENs again: changes made meanwhile
    /// were not announced to us, so here is the whole store, read after the new LISTEN (see
    /// `Registry::resync`).
    Resync {
        /// Everything stored, as another instance sees it.
        snapshot: Snapshot,
        /// When the read began (unix ms).
        taken_ms: u64,
    },
}

/// The other instances' changes, in commit order, and a [`ClusterEvent::Resync`] after each
/// reconnection of the listener.
#[derive(Debug)]
pub struct Notifications {
    rx: tokio::sync::mpsc::Receiver<ClusterEvent>,
}

impl Notifications {
    /// The next event; `None` once the listener has stopped for good.
    pub async fn next_event(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }

    /// The next change another instance made (resynchronisations are skipped).
    pub async fn recv(&mut self) -> Option<RemoteChange> {
        loop {
            match self.rx.recv().await? {
                ClusterEvent::Change(c) => return Some(c),
                ClusterEvent::Resync { .. } => continue,
            }
        }
    }
}

/// The `application_name` of an instance's LISTEN connection (then a space and the instance),
/// as `pg_stat_activity` shows it.
pub const LISTENER_APPLICATION: &str = "pilot-registry-listener";

/// The first wait before the listener reconnects; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest wait between two reconnection attempts of the listener.
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Most notifications waiting for the runner; beyond it the listener waits.
const NOTIFY_QUEUE: usize = 65_536;

/// A store in a PostgreSQL database shared by the instances of a cluster.
pub struct PgStore {
    rt: Arc<tokio::runtime::Runtime>,
    pool: Pool,
    label: String,
    instance: String,
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({}, instance {})", self.label, self.instance)
    }
}

/// A cheap handle for what the runner does besides storing: publishing its status, counting
/// statements. Holds no runtime (it is safe to drop anywhere).
#[derive(Clone)]
pub struct PgHandle {
    rt: tokio::runtime::Handle,
    pool: Pool,
    instance: String,
    statements: Arc<AtomicU64>,
}

impl std::fmt::Debug for PgHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgHandle({})", self.instance)
    }
}

/// What a connection string shows in messages: host and database, never a password.
pub fn label(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = match c.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                None => "localhost".into(),
            };
            format!("postgres {host}/{}", c.get_dbname().unwrap_or("(default)"))
        }
        Err(_) => "postgres (unparsable connection string)".into(),
    }
}

impl PgStore {
    /// Connects to `url` as instance `instance` (unique in the cluster), applies the
    /// migrations, and starts listening to the other instances (before anything is loaded, so
    /// no change falls between the load and the first notification).
    pub fn connect(url: &str, instance: &str) -> Result<(Self, Notifications), StoreError> {
        let label = label(url);
        let backend = |detail: String| StoreError::Backend {
            path: label.clone().into(),
            detail,
        };
        if instance.is_empty() || instance.contains(['\t', ',']) {
            return Err(backend(format!("bad instance name {instance:?}")));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("registry-pg")
            .enable_all()
            .build()
            .map_err(|e| backend(format!("runtime: {e}")))?;
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.to_string());
        cfg.application_name = Some(format!("pilot-registry {instance}"));
        cfg.pool = Some(deadpool_postgres::PoolConfig::new(4));
        let pool = {
            let _guard = rt.enter();
            cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), NoTls)
                .map_err(|e| backend(format!("pool: {e}")))?
        };
        let store = PgStore {
            rt: Arc::new(rt),
            pool,
            label: label.clone(),
            instance: instance.to_string(),
            statements: Arc::new(AtomicU64::new(0)),
        };
        let (pool, lbl, url_s) = (store.pool.clone(), label.clone(), url.to_string());
        let inst = instance.to_string();
        let rx = store.block(async move {
            let mut c = pool.get().await.map_err(|e| StoreError::Backend {
                path: lbl.clone().into(),
                detail: e.to_string(),
            })?;
            schema::migrate(&mut c, &lbl).await?;
            drop(c);
            listen(&url_s, &inst, &lbl, pool).await
        })?;
        Ok((store, rx))
    }

    /// A handle for status and counters.
    pub fn handle(&self) -> PgHandle {
        PgHandle {
            rt: self.rt.handle().clone(),
            pool: self.pool.clone(),
            instance: self.instance.clone(),
            statements: self.statements.clone(),
        }
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread).
    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime (the registry's start-up): wait on a thread of our own.
            std::thread::scope(|s| {
                s.spawn(|| self.rt.block_on(f))
                    .join()
                    .expect("the PostgreSQL call panicked")
            })
        } else {
            self.rt.block_on(f)
        }
    }

    fn backend(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.label.clone().into(),
            detail: e.to_string(),
        }
    }
}

/// Opens the LISTEN connection and returns the stream of the other instances' changes. If
/// that connection is lost later, the listener reconnects with backoff, LISTENs again and sends
/// a [`ClusterEvent::Resync`] (the store read after the new LISTEN, so nothing falls between).
async fn listen(
    url: &str,
    instance: &str,
    label: &str,
    pool: Pool,
) -> Result<Notifications, StoreError> {
    let (client, payloads) = listen_session(url, instance, label)
        .await
        .map_err(|detail| StoreError::Backend {
            path: label.into(),
            detail,
        })?;
    let (tx, rx) = tokio::sync::mpsc::channel(NOTIFY_QUEUE);
    let listener = Listener {
        url: url.to_string(),
        me: instance.to_string(),
        label: label.to_string(),
        pool,
        tx,
    };
    tokio::spawn(listener.run(client, payloads));
    Ok(Notifications { rx })
}

/// The payloads a LISTEN connection receives; closed when the connection is lost.
type Payloads = tokio::sync::mpsc::UnboundedReceiver<String>;

/// Connects, LISTENs, and pumps the connection's notifications into [`Payloads`]. The client
/// must be kept as long as the session is wanted.
async fn listen_session(
    url: &str,
    instance: &str,
    label: &str,
) -> Result<(tokio_postgres::Client, Payloads), String> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("listen: {e}"))?;
    cfg.application_name(format!("{LISTENER_APPLICATION} {instance}"));
    let (client, mut conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let (ptx, prx) = tokio::sync::mpsc::unbounded_channel();
    let lbl = label.to_string();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if ptx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("{lbl}: the cluster listener lost its connection: {e}");
                    return;
                }
            }
        }
        tracing::error!("{lbl}: the cluster listener's connection closed");
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| format!("listen: {e}"))?;
    Ok((client, prx))
}

/// The task that turns notifications into [`ClusterEvent`]s and keeps the LISTEN connection up.
struct Listener {
    url: String,
    me: String,
    label: String,
    pool: Pool,
    tx: tokio::sync::mpsc::Sender<ClusterEvent>,
}

impl Listener {
    async fn run(self, mut client: tokio_postgres::Client, mut payloads: Payloads) {
        loop {
            while let Some(p) = payloads.recv().await {
                if !self.deliver(&p).await {
                    return;
                }
            }
            drop(client);
            match self.reconnect().await {
                Some((c, p)) => (client, payloads) = (c, p),
                None => return,
            }
        }
    }

    /// Hands one notification's changes to the runner; false once the runner is gone.
    async fn deliver(&self, payload: &str) -> bool {
        let note = match notes::parse(payload) {
            Ok(note) if note.instance == self.me => return true,
            Ok(note) => note,
            Err(e) => {
                tracing::warn!(
                    "{}: dropped a notification that does not parse: {e}",
                    self.label
                );
                return true;
            }
        };
        for op in note.ops {
            let change = RemoteChange {
                sent_ms: note.sent_ms,
                op,
            };
            if self.tx.send(ClusterEvent::Change(change)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Reconnects with backoff until a new session LISTENs and the store is read again (sent
    /// as a [`ClusterEvent::Resync`]); `None` once the runner is gone.
    async fn reconnect(&self) -> Option<(tokio_postgres::Client, Payloads)> {
        let mut wait = RECONNECT_FIRST;
        loop {
            if self.tx.is_closed() {
                return None;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RECONNECT_MAX);
            let session = listen_session(&self.url, &self.me, &self.label).await;
            let (client, payloads) = match session {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{}: cannot reconnect the listener yet: {e}", self.label);
                    continue;
                }
            };
            let taken_ms = crate::clock::unix_ms_now();
            match load(&self.pool, &self.me, &self.label).await {
                Ok(snapshot) => {
                    tracing::info!(
                        "{}: the cluster listener is back; resynchronising",
                        self.label
                    );
                    let resync = ClusterEvent::Resync { snapshot, taken_ms };
                    self.tx.send(resync).await.ok()?;
                    return Some((client, payloads));
                }
                Err(e) => tracing::warn!("{}: cannot resynchronise yet: {e}", self.label),
            }
        }
    }
}

impl Store for PgStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let (pool, instance) = (self.pool.clone(), self.instance.clone());
        let label = self.label.clone();
        self.block(async move { load(&pool, &instance, &label).await })
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let (pool, instance) = (self.pool.clone(), self.instance.clone());
        let r = self.block(async move {
            // Instances upsert the same rows (a node attached to several) in different orders:
            // PostgreSQL may pick one transaction as a deadlock victim. It is retried.
            let mut attempt = 0;
            loop {
                match apply_batch(&pool, &instance, ops).await {
                    Err(ApplyError::Retry(_)) if attempt < 3 => attempt += 1,
                    r => return r,
                }
            }
        });
        match r {
            Ok(n) => {
                self.statements.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(ApplyError::Conflict(detail)) => Err(StoreError::Conflict { detail }),
            Err(ApplyError::Other(d) | ApplyError::Retry(d)) => Err(self.backend(d)),
        }
    }

    fn shared(&self) -> bool {
        true
    }
}

/// One transaction: the changes, pipelined on the connection (sent in order, executed in order
/// by the server: one round trip for the batch, not one per change; changes with several
/// dependent statements, a claim, are committed alone, see `must_commit_first`), then the
/// notifications. Returns the statements run.
async fn apply_batch(pool: &Pool, instance: &str, ops: &[StoreOp]) -> Result<u64, ApplyError> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let done =
        futures_util::future::try_join_all(ops.iter().map(|op| apply_one(&tx, instance, op)))
            .await?;
    let mut n: u64 = done.iter().sum();
    let now = crate::clock::unix_ms_now();
    for p in notes::payloads(instance, now, ops) {
        let stmt = tx
            .prepare_cached("SELECT pg_notify('pilot_registry', $1)")
            .await
            .map_err(pg_err)?;
        tx.execute(&stmt, &[&p]).await.map_err(pg_err)?;
        n += 1;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(n + 2)
}

/// A driver error, with the server's message; a deadlock or serialization failure may be
/// retried.
fn pg_err(e: tokio_postgres::Error) -> ApplyError {
    use tokio_postgres::error::SqlState;
    let text = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    };
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            ApplyError::Retry(text)
        }
        _ => ApplyError::Other(text),
    }
}

/// Why a batch was not applied.
enum ApplyError {
    /// A deadlock or serialization failure: the whole batch may be tried again.
    Retry(String),
    Conflict(String),
    Other(String),
}

impl From<String> for ApplyError {
    fn from(s: String) -> Self {
        ApplyError::Other(s)
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Applies one change inside `tx`; returns the statements it ran. One arm per [`StoreOp`].
async fn apply_one(tx: &Transaction<'_>, instance: &str, op: &StoreOp) -> Result<u64, ApplyError> {
    let run = |sql: &'static str| async move { tx.prepare_cached(sql).await.map_err(pg_err) };
    let e = pg_err;
    match op {
        StoreOp::SetName { name, key } => claim_name(tx, name, key).await,
        StoreOp::RemoveName { name } => {
            let s = run("DELETE FROM pilot_names WHERE name = $1").await?;
            tx.execute(&s, &[&name.as_str()]).await.map_err(e)?;
            Ok(1)
        }
        StoreOp::PutHeld(m) => put_held(tx, m).await,
        StoreOp::RemoveHeld { target, from, kind } => {
            let s = run("DELETE FROM pilot_held WHERE target = $1 AND sender = $2 AND kind = $3")
                .await?;
            let kind = i16::from(kind.to_byte());
            tx.execute(
                &s,
                &[
                    &target.as_bytes().as_slice(),
                    &from.as_bytes().as_slice(),
                    &kind,
                ],
            )
            .await
            .map_err(e)?;
            Ok(1)
        }
        StoreOp::Seen { key, unix_ms } => {
            let s = run("INSERT INTO pilot_nodes (key, last_seen_ms) VALUES ($1, $2) ON CONFLICT (key) \
                 DO UPDATE SET last_seen_ms = GREATEST(pilot_nodes.last_seen_ms, EXCLUDED.last_seen_ms)").await?;
            tx.execute(&s, &[&key.as_bytes().as_slice(), &ms(*unix_ms)])
                .await
                .map_err(e)?;
            Ok(1)
        }
        StoreOp::Forget { key } => {
            let s = run("DELETE FROM pilot_nodes WHERE key = $1").await?;
            tx.execute(&s, &[&key.as_bytes().as_slice()])
                .await
                .map_err(e)?;
            let s = run("DELETE FROM pilot_presence WHERE key = $1").await?;
            tx.execute(&s, &[&key.as_bytes().as_slice()])
                .await
                .map_err(e)?;
            Ok(2)
        }
        StoreOp::Presence { key, addr, unix_ms } => {
            let s = run("INSERT INTO pilot_presence (key, instance, addr, last_seen_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET instance = EXCLUDED.instance, addr = EXCLUDED.addr, last_seen_ms = EXCLUDED.last_seen_ms").await?;
            let addr = addr.to_string();
            tx.execute(
                &s,
                &[&key.as_bytes().as_slice(), &instance, &addr, &ms(*unix_ms)],
            )
            .await
            .map_err(e)?;
            Ok(1)
        }
        // Not stored: the notification carries it.
        StoreOp::Forward { .. } => Ok(0),
    }
}

/// Binds `name` to `key` (releasing the key's other name) unless another key holds it: the
/// primary key decides between instances claiming at the same moment.
async fn claim_name(
    tx: &Transaction<'_>,
    name: &Hostname,
    key: &PublicKey,
) -> Result<u64, ApplyError> {
    let e = pg_err;
    let key = key.as_bytes().as_slice();
    let s = tx
        .prepare_cached("DELETE FROM pilot_names WHERE key = $2 AND name <> $1")
        .await
        .map_err(e)?;
    tx.execute(&s, &[&name.as_str(), &key]).await.map_err(e)?;
    let s = tx
        .prepare_cached(
            "INSERT INTO pilot_names (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .await
        .map_err(e)?;
    if tx.execute(&s, &[&name.as_str(), &key]).await.map_err(e)? == 1 {
        return Ok(2);
    }
    let s = tx
        .prepare_cached("SELECT key FROM pilot_names WHERE name = $1")
        .await
        .map_err(e)?;
    let row = tx.query_opt(&s, &[&name.as_str()]).await.map_err(e)?;
    let holder: Option<Vec<u8>> = row.map(|r| r.get(0));
    if holder.as_deref() != Some(key) {
        return Err(ApplyError::Conflict(format!(
            "hostname {name} was claimed by another key first"
        )));
    }
    Ok(3)
}

/// Holds a message (replacing the one with the same target, sender and kind).
async fn put_held(tx: &Transaction<'_>, m: &HeldMessage) -> Result<u64, ApplyError> {
    let s = tx
        .prepare_cached(
            "INSERT INTO pilot_held (target, sender, kind, received_ms, original) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (target, sender, kind) DO UPDATE SET received_ms = EXCLUDED.received_ms, original = EXCLUDED.original",
        )
        .await
        .map_err(pg_err)?;
    let kind = i16::from(m.kind.to_byte());
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &m.target.as_bytes().as_slice(),
        &m.from.as_bytes().as_slice(),
        &kind,
        &ms(m.received_ms),
        &m.original,
    ];
    tx.execute(&s, &args).await.map_err(pg_err)?;
    Ok(1)
}

async fn load(pool: &Pool, instance: &str, label: &str) -> Result<Snapshot, StoreError> {
    let backend = |d: String| StoreError::Backend {
        path: label.into(),
        detail: d,
    };
    let corrupt = |d: String| StoreError::Corrupt {
        path: label.into(),
        detail: d,
    };
    let key = |b: Vec<u8>| -> Result<PublicKey, StoreError> {
        let a: [u8; 32] = b
            .try_into()
            .map_err(|_| corrupt("a key is not 32 bytes".into()))?;
        PublicKey::from_bytes(a).map_err(|e| corrupt(e.to_string()))
    };
    let c = pool.get().await.map_err(|e| backend(e.to_string()))?;
    let c = &c;
    let q = |sql: &'static str| async move { c.query(sql, &[]).await };
    let mut snap = Snapshot::default();
    for r in q("SELECT name, key FROM pilot_names")
        .await
        .map_err(|e| backend(e.to_string()))?
    {
        let name: String = r.get(0);
        let name = Hostname::new(&name).map_err(|e| corrupt(format!("name {name:?}: {e}")))?;
        snap.names.push((name, key(r.get(1))?));
    }
    for r in q("SELECT target, sender, kind, received_ms, original FROM pilot_held")
        .await
        .map_err(|e| backend(e.to_string()))?
    {
        let kind: i16 = r.get(2);
        let kind = u8::try_from(kind)
            .ok()
            .and_then(HeldKind::from_byte)
            .ok_or_else(|| corrupt(format!("held kind {kind}")))?;
        let received: i64 = r.get(3);
        snap.held.push(HeldMessage {
            target: key(r.get(0))?,
            from: key(r.get(1))?,
            kind,
            received_ms: received.max(0) as u64,
            original: r.get(4),
        });
    }
    for r in q("SELECT key, last_seen_ms FROM pilot_nodes")
        .await
        .map_err(|e| backend(e.to_string()))?
    {
        let t: i64 = r.get(1);
        snap.seen.push((key(r.get(0))?, t.max(0) as u64));
    }
    let rows = c
        .query(
            "SELECT key, last_seen_ms FROM pilot_presence WHERE instance <> $1",
            &[&instance],
        )
        .await
        .map_err(|e| backend(e.to_string()))?;
    for r in rows {
        let t: i64 = r.get(1);
        snap.elsewhere.push((key(r.get(0))?, t.max(0) as u64));
    }
    Ok(snap)
}

impl PgHandle {
    /// Statements run so far by this instance's store.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Publishes this instance's status (a JSON object) in `pilot_instances`, in the
    /// background; a failure is logged.
    pub fn publish_status(&self, status: serde_json::Value) {
        let (pool, instance) = (self.pool.clone(), self.instance.clone());
        let statements = self.statements.clone();
        self.rt.spawn(async move {
            let r = async {
                let c = pool.get().await.map_err(|e| e.to_string())?;
                let now = ms(crate::clock::unix_ms_now());
                c.execute(
                    "INSERT INTO pilot_instances (instance, beat_ms, status) VALUES ($1, $2, $3) \
                     ON CONFLICT (instance) DO UPDATE SET beat_ms = EXCLUDED.beat_ms, status = EXCLUDED.status",
                    &[&instance, &now, &tokio_postgres::types::Json(&status)],
                )
                .await
                .map_err(|e| e.to_string())?;
                statements.fetch_add(1, Ordering::Relaxed);
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!("cannot publish the instance status: {e}");
            }
        });
    }
}

/// One row of `pilot_instances`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstanceRow {
    /// The instance's name.
    pub instance: String,
    /// When it last published its status (unix ms).
    pub beat_ms: u64,
    /// What it published.
    pub status: serde_json::Value,
}

/// Reads every instance's published status (for `pilotctl registry status`).
pub fn read_instances(url: &str) -> Result<Vec<InstanceRow>, StoreError> {
    let label = label(url);
    let backend = |d: String| StoreError::Backend {
        path: label.clone().into(),
        detail: d,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| backend(e.to_string()))?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| backend(e.to_string()))?;
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT instance, beat_ms, status FROM pilot_instances ORDER BY instance",
                &[],
            )
            .await
            .map_err(|e| backend(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let beat: i64 = r.get(1);
                let status: tokio_postgres::types::Json<serde_json::Value> = r.get(2);
                InstanceRow {
                    instance: r.get(0),
                    beat_ms: beat.max(0) as u64,
                    status: status.0,
                }
            })
            .collect())
    })
}
