//! Store commits off the event loop: [`BatchingStore`] hands each batch of changes to a writer
//! thread and returns at once; the thread commits whatever has queued up in one transaction
//! (up to [`MAX_BATCHES_PER_COMMIT`] batches), so a burst of holds or claims costs one commit,
//! not one fsync each on the loop. The registry core keeps its state in memory and answers at
//! once; the store only has to survive a restart.
//!
//! A full queue ([`WRITE_QUEUE`] batches) refuses the change (the core answers `internal` and
//! changes nothing, as for any storage failure) instead of blocking the loop. A commit that
//! fails is logged and counted ([`BatchingStore::failed_commits`]). Dropping the store flushes
//! the queue and waits for the writer.
//!
//! Over a shared store (a cluster), a batch holding a change that must be committed before the
//! answer ([`StoreOp::must_commit_first`]: a hostname claim, a held message) is committed alone
//! and `apply` waits for its result, so a claim that lost to another instance is refused
//! (`already_exists`) and an acknowledged message is never only in memory.
//!
//! Waiting there would stall the event loop for the length of a commit (a burst of claims for
//! seconds). Once the runner has taken the commit channel ([`BatchingStore::take_commits`]),
//! such a batch is *parked* instead ([`Store::apply_or_park`]): `apply_or_park` returns at
//! once, and the writer sends a [`Committed`] with the batch's ticket when its commit lands;
//! the core answers the parked request then, and serves everyone else meanwhile. Parked held
//! messages cannot conflict (each replaces only its own row), so the parked holds queued
//! together are committed in one transaction, each answered when it lands; a parked claim is
//! still committed alone.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::store::{Committed, Snapshot, Store, StoreError, StoreOp};

/// Batches waiting for the writer before new changes are refused.
pub const WRITE_QUEUE: usize = 16_384;
/// Most batches committed in one transaction.
pub const MAX_BATCHES_PER_COMMIT: usize = 1024;

/// A batch for the writer, with where to send the result when the caller waits for it.
struct Batch {
    ops: Vec<StoreOp>,
    reply: Reply,
}

/// Who waits for a batch's result.
enum Reply {
    /// Nobody: committed with whatever else is queued; a failure is logged and counted.
    None,
    /// The caller, blocked on this channel.
    Wait(SyncSender<Result<(), StoreError>>),
    /// The runner, through the commit channel, under this ticket.
    Parked(tokio::sync::mpsc::UnboundedSender<Committed>, u64),
}

/// The results of parked batches, in commit order.
pub type Commits = tokio::sync::mpsc::UnboundedReceiver<Committed>;

/// A [`Store`] whose writes happen on a thread of their own, batched.
pub struct BatchingStore {
    tx: Option<SyncSender<Batch>>,
    writer: Option<JoinHandle<()>>,
    snapshot: Snapshot,
    failed: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    shared: bool,
    /// Where parked batches report (set by [`BatchingStore::take_commits`]).
    park: Option<tokio::sync::mpsc::UnboundedSender<Committed>>,
}

impl std::fmt::Debug for BatchingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BatchingStore(failed_commits: {})",
            self.failed_commits()
        )
    }
}

impl BatchingStore {
    /// Loads `inner` (for [`Store::load`]) and starts its writer thread with a queue of
    /// `queue` batches.
    pub fn spawn(inner: Box<dyn Store>, queue: usize) -> Result<Self, StoreError> {
        Self::spawn_with_heartbeat(inner, queue, crate::health::Heartbeat::new())
    }

    /// [`BatchingStore::spawn`] whose writer thread beats `hb` at least once a second while
    /// it is not stuck in a commit (the registry's systemd watchdog watches it).
    pub fn spawn_with_heartbeat(
        inner: Box<dyn Store>,
        queue: usize,
        hb: crate::health::Heartbeat,
    ) -> Result<Self, StoreError> {
        let snapshot = inner.load()?;
        let shared = inner.shared();
        let (tx, rx) = sync_channel(queue.max(1));
        let failed = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let (f, q) = (failed.clone(), queued.clone());
        let writer = std::thread::Builder::new()
            .name("registry-store".into())
            .spawn(move || write_loop(inner, rx, &f, &q, &hb))
            .map_err(|e| StoreError::Backend {
                path: "registry store writer".into(),
                detail: e.to_string(),
            })?;
        Ok(BatchingStore {
            tx: Some(tx),
            writer: Some(writer),
            snapshot,
            failed,
            queued,
            shared,
            park: None,
        })
    }

    /// From now on, a batch that must be committed before its answer is parked instead of
    /// waited for (shared stores only; `None` otherwise): its result arrives on the returned
    /// channel. Call once, before handing the store to the core.
    pub fn take_commits(&mut self) -> Option<Commits> {
        if !self.shared || self.park.is_some() {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.park = Some(tx);
        Some(rx)
    }

    /// Commits that failed so far (each is logged).
    pub fn failed_commits(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Batches waiting for the writer now (the store's lag).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Live views of the queue length and the failed commits, for status reports.
    pub fn gauges(&self) -> WriterGauges {
        WriterGauges {
            queued: self.queued.clone(),
            failed: self.failed.clone(),
        }
    }
}

/// How long the idle writer waits before it beats again: a quarter of the shortest staleness
/// the watchdog tolerates (1 s), so an idle writer is never taken for a stuck one.
const IDLE_BEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// Live views of a [`BatchingStore`]'s queue and failures.
#[derive(Debug, Clone)]
pub struct WriterGauges {
    queued: Arc<AtomicUsize>,
    failed: Arc<AtomicU64>,
}

impl WriterGauges {
    /// Batches waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Commits that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

fn write_loop(
    mut store: Box<dyn Store>,
    rx: Receiver<Batch>,
    failed: &AtomicU64,
    queued: &AtomicUsize,
    hb: &crate::health::Heartbeat,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut next: Option<Batch> = None;
    loop {
        hb.beat();
        let first = match next.take() {
            Some(b) => b,
            None => match rx.recv_timeout(IDLE_BEAT) {
                Ok(b) => b,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        queued.fetch_sub(1, Ordering::Relaxed);
        match first.reply {
            // Committed alone: a conflict refuses this batch only.
            Reply::Wait(reply) => {
                let _ = reply.send(store.apply(&first.ops));
                continue;
            }
            Reply::Parked(tx, ticket) if may_conflict(&first.ops) => {
                let result = store.apply(&first.ops);
                let _ = tx.send(Committed { ticket, result });
                continue;
            }
            Reply::Parked(tx, ticket) => {
                next = commit_parked_holds(&mut *store, &rx, queued, first.ops, (tx, ticket));
                continue;
            }
            Reply::None => {}
        }
        let mut ops = first.ops;
        for _ in 1..MAX_BATCHES_PER_COMMIT {
            match rx.try_recv() {
                Ok(b) if matches!(b.reply, Reply::None) => {
                    queued.fetch_sub(1, Ordering::Relaxed);
                    ops.extend(b.ops);
                }
                Ok(b) => {
                    next = Some(b);
                    break;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = store.apply(&ops) {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!("registry store commit of {} changes failed: {e}", ops.len());
        }
    }
}

/// Whether a batch holds a change another instance may win (a hostname claim): such a batch
/// is committed alone, so its loss spoils no other change.
fn may_conflict(ops: &[StoreOp]) -> bool {
    ops.iter().any(|op| matches!(op, StoreOp::SetName { .. }))
}

/// Commits a parked batch that cannot conflict (held messages: each replaces only its own row)
/// together with the parked batches of the same kind queued right behind it, in one
/// transaction, and reports the result to each one's ticket. Returns the batch that stopped
/// the gathering, if any (it goes next, in order).
fn commit_parked_holds(
    store: &mut dyn Store,
    rx: &Receiver<Batch>,
    queued: &AtomicUsize,
    mut ops: Vec<StoreOp>,
    first: (tokio::sync::mpsc::UnboundedSender<Committed>, u64),
) -> Option<Batch> {
    let mut tickets = vec![first];
    let mut next = None;
    while tickets.len() < MAX_BATCHES_PER_COMMIT {
        match rx.try_recv() {
            Ok(Batch {
                ops: more,
                reply: Reply::Parked(tx, ticket),
            }) if !may_conflict(&more) => {
                queued.fetch_sub(1, Ordering::Relaxed);
                ops.extend(more);
                tickets.push((tx, ticket));
            }
            Ok(b) => {
                next = Some(b);
                break;
            }
            Err(_) => break,
        }
    }
    let result = store.apply(&ops);
    if let Err(e) = &result {
        tracing::error!(
            "registry store commit of {} parked holds failed: {e}",
            tickets.len()
        );
    }
    // Each ticket gets the error itself (its kind decides the answer: `Conflict` is not
    // `Backend`), not a description of it.
    for (tx, ticket) in tickets {
        let _ = tx.send(Committed {
            ticket,
            result: result.clone(),
        });
    }
    next
}

impl Store for BatchingStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let wait = self.shared && ops.iter().any(StoreOp::must_commit_first);
        let (reply, result) = if wait {
            let (t, r) = sync_channel(1);
            (Reply::Wait(t), Some(r))
        } else {
            (Reply::None, None)
        };
        self.queue(ops, reply)?;
        match result {
            Some(r) => r
                .recv()
                .unwrap_or_else(|_| Err(closed("the writer stopped"))),
            None => Ok(()),
        }
    }

    fn apply_or_park(&mut self, ops: &[StoreOp], ticket: u64) -> Option<Result<(), StoreError>> {
        let park = self
            .park
            .clone()
            .filter(|_| self.shared && ops.iter().any(StoreOp::must_commit_first));
        match park {
            Some(tx) => match self.queue(ops, Reply::Parked(tx, ticket)) {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            },
            None => Some(self.apply(ops)),
        }
    }

    fn shared(&self) -> bool {
        self.shared
    }
}

impl BatchingStore {
    /// Hands a batch to the writer; a full queue or a stopped writer refuses it.
    fn queue(&mut self, ops: &[StoreOp], reply: Reply) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return Err(closed("the writer stopped"));
        };
        let batch = Batch {
            ops: ops.to_vec(),
            reply,
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tx.try_send(batch) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => closed("the write queue is full"),
                TrySendError::Disconnected(_) => closed("the writer stopped"),
            });
        }
        Ok(())
    }
}

fn closed(detail: &str) -> StoreError {
    StoreError::Backend {
        path: "registry store writer".into(),
        detail: detail.into(),
    }
}

impl Drop for BatchingStore {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Hostname;
    use parking_lot::Mutex;
    use std::time::{Duration, Instant};

    /// A store whose every commit takes 20 ms (an fsync on a slow disk), recording each.
    struct SlowStore(Arc<Mutex<Vec<Vec<StoreOp>>>>);

    impl Store for SlowStore {
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(20));
            self.0.lock().push(ops.to_vec());
            Ok(())
        }
    }

    fn claim(i: usize) -> StoreOp {
        StoreOp::RemoveName {
            name: Hostname::new(&format!("n{i}")).unwrap(),
        }
    }

    #[test]
    fn a_burst_of_writes_returns_at_once_and_is_committed_in_order_in_few_batches() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(SlowStore(commits.clone())), 1000).unwrap();
        let start = Instant::now();
        for i in 0..200 {
            store.apply(&[claim(i)]).unwrap();
        }
        // 200 synchronous commits would take 4 s.
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        drop(store);
        let commits = commits.lock();
        let all: Vec<StoreOp> = commits.iter().flatten().cloned().collect();
        assert_eq!(all, (0..200).map(claim).collect::<Vec<_>>());
        assert!(commits.len() < 20, "{} commits", commits.len());
    }

    /// A store whose commit blocks until released (a hung disk).
    struct HungStore(std::sync::mpsc::Receiver<()>);

    impl Store for HungStore {
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn apply(&mut self, _: &[StoreOp]) -> Result<(), StoreError> {
            let _ = self.0.recv();
            Ok(())
        }
    }

    #[test]
    fn the_idle_writer_keeps_beating_and_a_hung_commit_stops_its_heartbeat() {
        let (release, hung) = std::sync::mpsc::channel();
        let hb = crate::health::Heartbeat::new();
        let mut store =
            BatchingStore::spawn_with_heartbeat(Box::new(HungStore(hung)), 4, hb.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(1600));
        assert!(
            hb.age_at(Instant::now()) < Duration::from_millis(1300),
            "idle beats"
        );
        store.apply(&[claim(1)]).unwrap();
        std::thread::sleep(Duration::from_millis(1600));
        assert!(
            hb.age_at(Instant::now()) >= Duration::from_millis(1500),
            "hung: no beat"
        );
        drop(release);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            hb.age_at(Instant::now()) < Duration::from_millis(900),
            "beats again"
        );
        drop(store);
    }

    /// A shared store (a cluster's) on which every hostname claim loses to another instance.
    struct LosingClaims(Arc<Mutex<Vec<Vec<StoreOp>>>>);

    impl Store for LosingClaims {
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(5));
            if ops.iter().any(|o| matches!(o, StoreOp::SetName { .. })) {
                return Err(StoreError::Conflict {
                    detail: "taken".into(),
                });
            }
            self.0.lock().push(ops.to_vec());
            Ok(())
        }
        fn shared(&self) -> bool {
            true
        }
    }

    #[test]
    fn on_a_shared_store_a_claim_waits_for_its_commit_and_a_lost_claim_spoils_no_other_change() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(LosingClaims(commits.clone())), 100).unwrap();
        assert!(store.shared());
        for i in 0..10 {
            store.apply(&[claim(i)]).unwrap();
        }
        let set = StoreOp::SetName {
            name: Hostname::new("contested").unwrap(),
            key: crate::identity::Identity::from_seed([1; 32]).public_key(),
        };
        assert!(set.must_commit_first());
        let e = store.apply(&[set]).unwrap_err();
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
        drop(store);
        let all: Vec<StoreOp> = commits.lock().iter().flatten().cloned().collect();
        assert_eq!(all, (0..10).map(claim).collect::<Vec<_>>());
    }

    #[test]
    fn once_its_commits_are_taken_a_shared_store_parks_a_claim_and_reports_its_result() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(LosingClaims(commits.clone())), 100).unwrap();
        let mut results = store.take_commits().expect("a shared store parks");
        assert!(store.take_commits().is_none(), "taken once");
        let set = StoreOp::SetName {
            name: Hostname::new("contested").unwrap(),
            key: crate::identity::Identity::from_seed([1; 32]).public_key(),
        };
        let start = Instant::now();
        for ticket in 1..=20 {
            assert!(store
                .apply_or_park(std::slice::from_ref(&set), ticket)
                .is_none());
        }
        // 20 commits of 5 ms each would take 100 ms; parking returns at once.
        assert!(
            start.elapsed() < Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
        // Other changes are not parked.
        assert!(matches!(store.apply_or_park(&[claim(1)], 99), Some(Ok(()))));
        for ticket in 1..=20 {
            let c = results.blocking_recv().unwrap();
            assert_eq!(c.ticket, ticket);
            assert!(matches!(c.result, Err(StoreError::Conflict { .. })));
        }
        drop(store);
        assert_eq!(commits.lock().concat(), vec![claim(1)]);
    }

    fn hold(i: u8) -> StoreOp {
        StoreOp::PutHeld(crate::registry::store::HeldMessage {
            target: crate::identity::Identity::from_seed([i; 32]).public_key(),
            from: crate::identity::Identity::from_seed([200; 32]).public_key(),
            kind: crate::registry::store::HeldKind::TrustRequest,
            received_ms: u64::from(i),
            original: vec![i; 10],
        })
    }

    #[test]
    fn parked_holds_queued_together_commit_together_and_a_parked_claim_stays_alone() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(LosingClaims(commits.clone())), 100).unwrap();
        let mut results = store.take_commits().expect("a shared store parks");
        let set = StoreOp::SetName {
            name: Hostname::new("contested").unwrap(),
            key: crate::identity::Identity::from_seed([1; 32]).public_key(),
        };
        // 30 holds, a claim (it loses), 30 more holds, parked faster than one 5 ms commit.
        // (Built first: key derivation in a debug build is slower than a commit.)
        let ops: Vec<StoreOp> = (1..=61u8)
            .map(|i| if i == 31 { set.clone() } else { hold(i) })
            .collect();
        let want: Vec<StoreOp> = ops.iter().filter(|o| *o != &set).cloned().collect();
        for (ticket, op) in (1..).zip(&ops) {
            assert!(store
                .apply_or_park(std::slice::from_ref(op), ticket)
                .is_none());
        }
        for ticket in 1..=61 {
            let c = results.blocking_recv().unwrap();
            assert_eq!(c.ticket, ticket, "answered in order");
            if ticket == 31 {
                assert!(matches!(c.result, Err(StoreError::Conflict { .. })));
            } else {
                assert!(c.result.is_ok(), "hold {ticket}: {:?}", c.result);
            }
        }
        drop(store);
        let commits = commits.lock();
        // Every hold committed once, in order; the first is alone (nothing queued behind it
        // yet), the rest share a few transactions, none with the claim.
        assert_eq!(commits.concat(), want);
        assert!(commits.len() <= 4, "{} commits for 60 holds", commits.len());
    }

    /// A shared store whose every commit fails with a clone of `.0`, counting the commits.
    struct FailingStore(StoreError, Arc<AtomicUsize>);

    impl Store for FailingStore {
        fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn apply(&mut self, _: &[StoreOp]) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(5));
            self.1.fetch_add(1, Ordering::Relaxed);
            Err(self.0.clone())
        }
        fn shared(&self) -> bool {
            true
        }
    }

    #[test]
    fn every_ticket_of_a_failed_shared_commit_gets_the_error_itself_kind_and_detail() {
        let errors = [
            StoreError::Conflict {
                detail: "could not serialize access".into(),
            },
            StoreError::Corrupt {
                path: "pg".into(),
                detail: "held row 7".into(),
            },
            StoreError::Backend {
                path: "postgresql://db".into(),
                detail: "connection reset".into(),
            },
        ];
        for error in errors {
            let commits = Arc::new(AtomicUsize::new(0));
            let inner = FailingStore(error.clone(), commits.clone());
            let mut store = BatchingStore::spawn(Box::new(inner), 100).unwrap();
            let mut results = store.take_commits().expect("a shared store parks");
            let holds: Vec<StoreOp> = (1..=20u8).map(hold).collect();
            for (ticket, op) in (1..).zip(&holds) {
                assert!(store
                    .apply_or_park(std::slice::from_ref(op), ticket)
                    .is_none());
            }
            for ticket in 1..=20 {
                let c = results.blocking_recv().unwrap();
                assert_eq!(c.ticket, ticket);
                let got = c.result.unwrap_err();
                // Same kind, same fields: not every one turned into `Backend`.
                assert_eq!(
                    std::mem::discriminant(&got),
                    std::mem::discriminant(&error),
                    "{got}"
                );
                assert_eq!(got.to_string(), error.to_string());
            }
            drop(store);
            // Shared commits: fewer commits than tickets (else this tests nothing shared).
            assert!(commits.load(Ordering::Relaxed) < 20, "{commits:?}");
        }
    }

    #[test]
    fn a_store_of_one_instance_never_parks() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(SlowStore(commits)), 100).unwrap();
        assert!(store.take_commits().is_none());
        assert!(matches!(store.apply_or_park(&[claim(1)], 1), Some(Ok(()))));
    }

    #[test]
    fn a_full_queue_refuses_instead_of_blocking() {
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut store = BatchingStore::spawn(Box::new(SlowStore(commits)), 2).unwrap();
        let start = Instant::now();
        let refused = (0..50)
            .filter(|i| store.apply(&[claim(*i)]).is_err())
            .count();
        assert!(refused > 0);
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
