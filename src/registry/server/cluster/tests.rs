//! Two registry cores over one "shared store" in memory: what one commits is handed to the
//! other's `apply_remote`, as the PostgreSQL notifications do between real instances.

use std::sync::Arc;

use parking_lot::Mutex;

use super::super::tests::{register, registry_identity, TestNode, T0};
use super::super::*;
use crate::registry::store::{MemoryStore, StoreError, StoreOp};

/// A shared store: a memory store plus the log of what was committed, for the other instance.
struct Bus {
    inner: MemoryStore,
    log: Arc<Mutex<Vec<StoreOp>>>,
}

impl Store for Bus {
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.inner.apply(ops)?;
        self.log.lock().extend_from_slice(ops);
        Ok(())
    }
    fn shared(&self) -> bool {
        true
    }
}

fn instance() -> (Registry, Arc<Mutex<Vec<StoreOp>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = Bus {
        inner: MemoryStore::new(),
        log: log.clone(),
    };
    let r = Registry::new(registry_identity(), Box::new(store), Limits::default(), T0).unwrap();
    (r, log)
}

/// Hands what `from` committed to `to`; returns what `to` sends because of it.
fn pipe(
    log: &Arc<Mutex<Vec<StoreOp>>>,
    to: &mut Registry,
    now: u64,
) -> Vec<(SocketAddr, Response)> {
    let ops: Vec<StoreOp> = std::mem::take(&mut *log.lock());
    ops.into_iter()
        .flat_map(|op| to.apply_remote(now, op))
        .map(|(a, b)| (a, Response::decode(&b).unwrap()))
        .collect()
}

fn send(
    r: &mut Registry,
    n: &mut TestNode,
    now: u64,
    body: RequestBody,
) -> Vec<(SocketAddr, Response)> {
    let bytes = n.signed(now, body);
    r.handle(now, n.addr, &bytes)
        .into_iter()
        .map(|(a, b)| (a, Response::decode(&b).unwrap()))
        .collect()
}

#[test]
fn a_trust_request_and_an_endpoint_exchange_cross_instances_through_the_shared_store() {
    let (mut one, log1) = instance();
    let (mut two, log2) = instance();
    let mut x = TestNode::new(1, 5001);
    let mut y = TestNode::new(2, 5002);
    let now = T0 + 1000;
    register(&mut one, &mut x, now, Some("worker-node"));
    register(&mut two, &mut y, now, Some("orchestrator"));
    assert!(pipe(&log1, &mut two, now).is_empty());
    assert!(pipe(&log2, &mut one, now).is_empty());
    // Each knows the other's names and registrations, and who is online elsewhere.
    assert_eq!(
        two.names.get(&Hostname::new("worker-node").unwrap()),
        Some(&x.key())
    );
    assert_eq!(one.sizes(now).online_elsewhere, 1);

    // y (at two) asks x (at one) for trust: two holds it, one pushes it to x.
    let body = RequestBody::TrustRequest {
        target: x.key(),
        justification: "jobs".into(),
    };
    let out = send(&mut two, &mut y, now, body);
    assert!(
        matches!(
            out[..],
            [(
                _,
                Response {
                    body: ResponseBody::Ack { .. },
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    let pushed = pipe(&log2, &mut one, now);
    assert!(
        matches!(&pushed[..], [(to, Response { body: ResponseBody::PushTrustRequest { hostname: Some(h), .. }, .. })]
        if *to == x.addr && h.as_str() == "orchestrator"),
        "{pushed:?}"
    );
    assert_eq!(two.held_for(&x.key()), 1);
    // x acknowledges at one: two forgets it too.
    let nonce = pushed[0].1.in_reply_to;
    send(
        &mut one,
        &mut x,
        now,
        RequestBody::Delivered {
            nonces: vec![nonce],
        },
    );
    pipe(&log1, &mut two, now);
    assert_eq!(two.held_for(&x.key()), 0);

    // y asks two for x's endpoints: one forwards the push and accepts x's answer, which goes
    // back to y through two.
    let out = send(
        &mut two,
        &mut y,
        now,
        RequestBody::EndpointRequest {
            target: x.key(),
            candidates: vec![],
            home: None,
        },
    );
    assert_eq!(out.len(), 1, "only the Ack goes out at two: {out:?}");
    let pushed = pipe(&log2, &mut one, now);
    assert!(
        matches!(&pushed[..], [(to, Response { body: ResponseBody::PushEndpointRequest { .. }, .. })] if *to == x.addr),
        "{pushed:?}"
    );
    let answer = RequestBody::EndpointResponse {
        target: y.key(),
        in_reply_to: pushed[0].1.in_reply_to,
        candidates: vec![],
        home: None,
    };
    let out = send(&mut one, &mut x, now, answer);
    assert!(
        matches!(
            out[..],
            [(
                _,
                Response {
                    body: ResponseBody::Ack { .. },
                    ..
                }
            )]
        ),
        "{out:?}"
    );
    let info = pipe(&log1, &mut two, now);
    assert!(
        matches!(&info[..], [(to, Response { body: ResponseBody::EndpointInfo { .. }, .. })] if *to == y.addr),
        "{info:?}"
    );
    assert_eq!(one.counters().cluster_forwarded, 1);
    assert_eq!(two.counters().cluster_delivered, 1);

    // v1.4 (home relays): the exchange passed through both instances, so both permit the
    // pair. Once y registers at one too (x's home), y relays to x there.
    assert!(one.relay_allowed(&x.key(), &y.key(), now));
    assert!(two.relay_allowed(&x.key(), &y.key(), now));
    register(&mut one, &mut y, now, None);
    let payload = [4u8, 0, 0, 0, 9, 9];
    let mut frame =
        crate::wire::relay::frame(crate::wire::relay::RELAY_SEND, x.key().addr48(), &payload);
    assert_eq!(one.relay_in_place(now, y.addr, &mut frame), Some(x.addr));
}

#[test]
fn a_forwarded_answer_permits_only_the_pair_whose_request_went_out_from_here() {
    let (mut one, log1) = instance();
    let (mut two, log2) = instance();
    let mut x = TestNode::new(1, 5001);
    let mut y = TestNode::new(2, 5002);
    let mut z = TestNode::new(3, 5003);
    let now = T0 + 1000;
    register(&mut one, &mut x, now, None);
    register(&mut two, &mut y, now, None);
    register(&mut two, &mut z, now, None);
    pipe(&log1, &mut two, now);
    pipe(&log2, &mut one, now);
    // z asks two for x (at one); x answers at one, which forwards the answer back.
    let ask = RequestBody::EndpointRequest {
        target: x.key(),
        candidates: vec![],
        home: None,
    };
    send(&mut two, &mut z, now, ask);
    let pushed = pipe(&log2, &mut one, now);
    let answer = RequestBody::EndpointResponse {
        target: z.key(),
        in_reply_to: pushed[0].1.in_reply_to,
        candidates: vec![],
        home: None,
    };
    send(&mut one, &mut x, now, answer);
    // A forged forward of that answer for y (whose request never went out from two) moves
    // nothing: the pending request names z.
    let forwarded: Vec<StoreOp> = log1.lock().clone();
    let for_y: Vec<StoreOp> = forwarded
        .iter()
        .filter_map(|op| match op {
            StoreOp::Forward { datagram, .. } => Some(StoreOp::Forward {
                target: y.key(),
                datagram: datagram.clone(),
                endpoint: None,
            }),
            _ => None,
        })
        .collect();
    assert_eq!(for_y.len(), 1);
    for op in for_y {
        two.apply_remote(now, op);
    }
    assert!(!two.relay_allowed(&x.key(), &y.key(), now));
    pipe(&log1, &mut two, now);
    assert!(two.relay_allowed(&x.key(), &z.key(), now));
    assert!(one.relay_allowed(&x.key(), &z.key(), now));
    assert!(!one.relay_allowed(&x.key(), &y.key(), now));
}

#[test]
fn a_name_released_or_moved_at_one_instance_is_released_or_moved_at_the_other() {
    let (mut one, log1) = instance();
    let (mut two, _log2) = instance();
    let mut x = TestNode::new(1, 5001);
    let now = T0 + 1000;
    register(&mut one, &mut x, now, Some("first"));
    send(
        &mut one,
        &mut x,
        now,
        RequestBody::SetHostname {
            hostname: Hostname::new("second").unwrap(),
        },
    );
    pipe(&log1, &mut two, now);
    assert_eq!(two.names.len(), 1);
    assert_eq!(
        two.owner.get(&x.key()).map(Hostname::as_str),
        Some("second")
    );
    send(&mut one, &mut x, now, RequestBody::ReleaseHostname);
    pipe(&log1, &mut two, now);
    assert!(two.names.is_empty() && two.owner.is_empty());
}
