//! A core over a shared store that parks every claim and hold: the requests are answered when
//! their commits come back, and the core serves other nodes meanwhile.

use std::sync::Arc;

use parking_lot::Mutex;

use super::super::tests::{register, registry_identity, TestNode, T0};
use super::super::*;
use crate::registry::store::{MemoryStore, StoreError, StoreOp};

/// Batches parked so far: (ticket, ops).
type Queue = Arc<Mutex<Vec<(u64, Vec<StoreOp>)>>>;

/// A shared store whose must-commit-first batches are parked until the test commits them.
struct Parking {
    inner: MemoryStore,
    queue: Queue,
}

impl Store for Parking {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.inner.apply(ops)
    }
    fn shared(&self) -> bool {
        true
    }
    fn apply_or_park(&mut self, ops: &[StoreOp], ticket: u64) -> Option<Result<(), StoreError>> {
        if ops.iter().any(StoreOp::must_commit_first) {
            self.queue.lock().push((ticket, ops.to_vec()));
            return None;
        }
        Some(self.apply(ops))
    }
}

fn instance() -> (Registry, Queue) {
    let queue = Queue::default();
    let store = Parking {
        inner: MemoryStore::new(),
        queue: queue.clone(),
    };
    let r = Registry::new(registry_identity(), Box::new(store), Limits::default(), T0).unwrap();
    (r, queue)
}

fn decoded(out: Transmits) -> Vec<(SocketAddr, Response)> {
    out.into_iter()
        .map(|(a, b)| (a, Response::decode(&b).unwrap()))
        .collect()
}

fn send(r: &mut Registry, n: &mut TestNode, now: u64, body: RequestBody) -> Transmits {
    let bytes = n.signed(now, body);
    r.handle(now, n.addr, &bytes)
}

fn take_one(q: &Queue) -> u64 {
    let mut q = q.lock();
    assert_eq!(q.len(), 1, "{q:?}");
    q.remove(0).0
}

#[test]
fn a_parked_claim_is_answered_on_commit_and_other_nodes_are_served_meanwhile() {
    let (mut r, queue) = instance();
    let now = T0 + 1000;
    let mut a = TestNode::new(1, 5001);
    let mut b = TestNode::new(2, 5002);
    register(&mut r, &mut b, now, None);
    // a registers with a name: proven by its cookie, then parked on the claim.
    let out = register(&mut r, &mut a, now, Some("alpha"));
    assert!(out.is_empty(), "{out:?}");
    let ticket = take_one(&queue);
    assert_eq!(r.parked(), 1);
    // b's heartbeat is answered while the claim is in flight; the name is not bound yet.
    let hb = decoded(send(&mut r, &mut b, now, RequestBody::Heartbeat));
    assert!(
        matches!(hb[..], [(to, Response { body: ResponseBody::Ack { .. }, .. })] if to == b.addr)
    );
    assert!(!r.names.contains_key(&Hostname::new("alpha").unwrap()));
    // The commit lands: a gets its Registered with the name granted.
    let out = decoded(r.on_committed(now + 5, ticket, Ok(())));
    assert!(
        matches!(&out[..], [(to, Response { body: ResponseBody::Registered { hostname: HostnameStatus::Granted, .. }, .. })] if *to == a.addr),
        "{out:?}"
    );
    assert_eq!(
        r.names.get(&Hostname::new("alpha").unwrap()),
        Some(&a.key())
    );
    assert_eq!(r.parked(), 0);
    // A ticket answered twice (or unknown) changes nothing.
    assert!(r.on_committed(now + 6, ticket, Ok(())).is_empty());
}

#[test]
fn a_claim_lost_to_another_instance_is_answered_already_exists_after_its_commit() {
    let (mut r, queue) = instance();
    let now = T0 + 1000;
    let mut a = TestNode::new(1, 5001);
    register(&mut r, &mut a, now, None);
    let name = Hostname::new("contested").unwrap();
    let body = RequestBody::SetHostname {
        hostname: name.clone(),
    };
    assert!(send(&mut r, &mut a, now, body).is_empty());
    let ticket = take_one(&queue);
    let lost = Err(StoreError::Conflict {
        detail: "taken".into(),
    });
    let out = decoded(r.on_committed(now + 5, ticket, lost));
    assert!(
        matches!(
            &out[..],
            [(
                _,
                Response {
                    body: ResponseBody::Error {
                        status: Status::AlreadyExists,
                        ..
                    },
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    assert!(!r.names.contains_key(&name));
    assert_eq!(r.counters().refused, 1);
}

#[test]
fn a_parked_trust_request_is_acked_and_pushed_only_after_its_commit() {
    let (mut r, queue) = instance();
    let now = T0 + 1000;
    let mut x = TestNode::new(1, 5001);
    let mut y = TestNode::new(2, 5002);
    register(&mut r, &mut x, now, None);
    register(&mut r, &mut y, now, None);
    let body = RequestBody::TrustRequest {
        target: x.key(),
        justification: "jobs".into(),
    };
    assert!(send(&mut r, &mut y, now, body).is_empty());
    assert_eq!(r.held_for(&x.key()), 0);
    let ticket = take_one(&queue);
    // x heartbeats meanwhile: answered, and nothing is pushed that is not committed.
    let hb = decoded(send(&mut r, &mut x, now + 1, RequestBody::Heartbeat));
    assert_eq!(hb.len(), 1);
    let out = decoded(r.on_committed(now + 5, ticket, Ok(())));
    assert!(
        matches!(&out[..], [
            (to_y, Response { body: ResponseBody::Ack { .. }, .. }),
            (to_x, Response { body: ResponseBody::PushTrustRequest { .. }, .. }),
        ] if *to_y == y.addr && *to_x == x.addr),
        "{out:?}"
    );
    assert_eq!(r.held_for(&x.key()), 1);
    // A failed commit is answered `internal` and holds nothing.
    let body = RequestBody::TrustResponse {
        target: x.key(),
        in_reply_to: [0; 16],
        decision: crate::wire::registry::TrustDecision::Approve,
        reason: String::new(),
    };
    assert!(send(&mut r, &mut y, now + 2, body).is_empty());
    let ticket = take_one(&queue);
    let failed = Err(StoreError::Conflict {
        detail: "down".into(),
    });
    let out = decoded(r.on_committed(now + 6, ticket, failed));
    assert!(
        matches!(
            &out[..],
            [(
                _,
                Response {
                    body: ResponseBody::Error {
                        status: Status::Internal,
                        ..
                    },
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    assert_eq!(r.held_for(&x.key()), 1);
}
