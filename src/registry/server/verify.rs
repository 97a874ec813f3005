//! Signature checks for the requests one wake-up read, in batches (see
//! [`crate::identity::verify_batch`]): a batch of n good signatures costs about half of n single
//! checks.
//!
//! A batch that fails says only that one of its signatures is bad; its members are then checked
//! one by one (each bad one counted as before). So that a stranger's junk cannot make every
//! batch cost a failed batch *plus* n single checks, the batches are [`CHUNK`] requests at most
//! (one bad signature costs its chunk, not the whole wake-up), and a failure score tracks how
//! often chunks fail: past [`SUSPECT_AT`] the checks go one by one (the cost of no batching at
//! all, never more) until the chunks checked that way come out clean again. Junk still dies at
//! screening first when it has no cookie, presence or IP budget; only what passes screening
//! gets here.

use super::limits::Counters;
use crate::wire::registry::Unverified;

/// Most signatures checked in one batch.
pub(super) const CHUNK: usize = 32;
/// Failure score at which checks go one by one.
const SUSPECT_AT: u32 = 8;
/// Added to the score by a chunk with a bad signature; a clean chunk takes 1 off, so chunks go
/// back to batches once fewer than a third of them hold a bad signature (a failed batch of
/// `CHUNK` costs about half a clean one's single checks on top of them: batching still pays
/// below about one failure in two).
const FAIL_WEIGHT: u32 = 2;
/// Highest score (how long one-by-one checking lasts after an attack stops, in clean chunks).
const MAX_SCORE: u32 = 32;

/// The batching policy's state.
#[derive(Debug, Default)]
pub(super) struct Verifier {
    score: u32,
}

impl Verifier {
    /// Which of `items` (decoded requests, their senders' keys already decompressed) carry a
    /// valid signature, in order.
    pub(super) fn check(&mut self, items: &[Unverified<'_>], c: &mut Counters) -> Vec<bool> {
        let mut ok = Vec::with_capacity(items.len());
        for chunk in items.chunks(CHUNK) {
            let batched = chunk.len() > 1 && self.score < SUSPECT_AT;
            if batched && Unverified::verify_batch(chunk) {
                c.batch_verified += chunk.len() as u64;
                ok.extend(std::iter::repeat_n(true, chunk.len()));
                self.score = self.score.saturating_sub(1);
                continue;
            }
            if batched {
                c.batch_failed += 1;
            }
            c.verified_singly += chunk.len() as u64;
            let before = ok.len();
            ok.extend(chunk.iter().map(Unverified::verify));
            if chunk.len() > 1 {
                self.score = if ok[before..].contains(&false) {
                    (self.score + FAIL_WEIGHT).min(MAX_SCORE)
                } else {
                    self.score.saturating_sub(1)
                };
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::server::tests::{memory_registry, register, TestNode, T0};
    use crate::registry::server::Limits;
    use crate::wire::registry::{RequestBody, Response, ResponseBody};

    /// `n` heartbeats from `n` registered nodes, the one at `bad` (if any) with a broken
    /// signature.
    fn heartbeats(nodes: &mut [TestNode], now: u64, bad: Option<usize>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            let mut b = n.signed(now, RequestBody::Heartbeat);
            if bad == Some(i) {
                *b.last_mut().unwrap() ^= 1;
            }
            out.push(b);
        }
        out
    }

    #[test]
    fn one_wake_up_is_verified_in_batches_and_a_bad_signature_costs_only_its_chunk() {
        let mut r = memory_registry(Limits::default(), T0);
        let mut nodes: Vec<TestNode> = (1..=40).map(|i| TestNode::new(i, 1000)).collect();
        for n in nodes.iter_mut() {
            register(&mut r, n, T0, None);
        }
        let before = r.counters().clone();
        let now = T0 + 1000;
        let reqs = heartbeats(&mut nodes, now, Some(5));
        let batch: Vec<_> = nodes
            .iter()
            .zip(&reqs)
            .map(|(n, b)| (n.addr, b.as_slice()))
            .collect();
        let out = r.handle_batch(now, &batch);
        // Every good heartbeat is answered, in order, to its sender; the bad one is dropped.
        let to: Vec<_> = out.iter().map(|(a, _)| *a).collect();
        let want: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5)
            .map(|(_, n)| n.addr)
            .collect();
        assert_eq!(to, want);
        for (_, b) in &out {
            let resp = Response::decode(b).unwrap();
            assert!(matches!(resp.body, ResponseBody::Ack { .. }));
        }
        let c = r.counters();
        assert_eq!(c.bad_signature - before.bad_signature, 1);
        assert_eq!(c.accepted - before.accepted, 39);
        // 40 = a chunk of 32 (holding the bad one: failed, then checked one by one) and one
        // of 8 (verified as a batch).
        assert_eq!(c.batch_failed - before.batch_failed, 1);
        assert_eq!(c.verified_singly - before.verified_singly, 32);
        assert_eq!(c.batch_verified - before.batch_verified, 8);
    }

    #[test]
    fn frequent_bad_signatures_switch_to_single_checks_until_the_chunks_come_out_clean() {
        let mut nodes: Vec<TestNode> = (1..=4).map(|i| TestNode::new(i, 1000)).collect();
        let mut v = Verifier::default();
        let mut c = Counters::default();
        let mut round = |v: &mut Verifier, c: &mut Counters, bad: Option<usize>| {
            let bytes = heartbeats(&mut nodes, T0, bad);
            let items: Vec<Unverified<'_>> = bytes
                .iter()
                .map(|b| Unverified::decode(b).unwrap())
                .collect();
            let ok = v.check(&items, c);
            assert_eq!(ok, (0..4).map(|i| Some(i) != bad).collect::<Vec<_>>());
        };
        // Each poisoned batch fails and is checked one by one, until the score says to skip
        // the batch: from then on no batch fails (no wasted batch work).
        for _ in 0..10 {
            round(&mut v, &mut c, Some(2));
        }
        assert_eq!(c.batch_failed, (SUSPECT_AT / FAIL_WEIGHT) as u64);
        assert_eq!(c.verified_singly, 40);
        assert_eq!(c.batch_verified, 0);
        // Clean traffic brings batches back once the score has decayed.
        for _ in 0..MAX_SCORE {
            round(&mut v, &mut c, None);
        }
        assert!(c.batch_verified > 0, "batches again: {c:?}");
        assert_eq!(c.batch_failed, (SUSPECT_AT / FAIL_WEIGHT) as u64);
    }
}
