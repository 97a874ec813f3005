//! A task's life, without I/O: the state machine both sides run. Time comes in as `now_ms`,
//! signing takes the node's identity; nothing here touches a socket, a file or a clock.
//!
//! NEW (submitter) → ACCEPTED | DECLINED (worker) → DONE | FAILED (worker, from ACCEPTED);
//! EXPIRED when the deadline passes first. Each change is a [`StateRecord`] signed by the node
//! that made it; the other side takes it only if it is signed by the right key (the
//! submitter for NEW, the worker for the rest), names this task and both keys, carries the
//! hash of its payload, and is a legal next state.

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, PublicKey};
use crate::services::tasks::record::{payload_hash, StateRecord, TaskState};
use crate::services::tasks::wire::RefusalCode;

/// Which side of a task this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// We submitted it.
    Submitter,
    /// We were asked to do it.
    Worker,
}

/// A record with its payload, waiting for the other side's ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    /// The record.
    pub record: StateRecord,
    /// Its payload (whose hash the record carries).
    pub payload: String,
    /// The other side's refusal, if it refused it (then it is not retried).
    pub refused: Option<String>,
}

/// A task as each side keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The id (32 hex digits).
    pub id: String,
    /// Our side.
    pub role: Role,
    /// The submitter's key.
    pub submitter: PublicKey,
    /// The worker's key.
    pub worker: PublicKey,
    /// The current state.
    pub state: TaskState,
    /// Deadline, unix ms.
    pub deadline_ms: u64,
    /// The NEW payload: the task (JSON text of [`crate::services::tasks::TaskBody`]).
    pub body: String,
    /// The DECLINED reason, or the DONE/FAILED payload (JSON text of
    /// [`crate::services::tasks::ResultBody`]).
    pub answer: Option<String>,
    /// Every record so far, oldest first.
    pub records: Vec<StateRecord>,
    /// Our records the other side has not acked yet, oldest first.
    pub outbox: Vec<Outbound>,
}

/// What the worker does with a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Take it.
    Accept,
    /// Refuse it, saying why.
    Decline(String),
    /// Finish it with this result payload.
    Done(String),
    /// Give up on it with this payload (why).
    Fail(String),
}

/// A refusal, local or for the other side, with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The code (also on the wire).
    pub code: RefusalCode,
    /// For humans.
    pub message: String,
}

fn refuse<T>(code: RefusalCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// Whether `next` may follow `from`.
pub fn legal(from: TaskState, next: TaskState) -> bool {
    use TaskState::*;
    matches!(
        (from, next),
        (New, Accepted | Declined | Expired) | (Accepted, Done | Failed | Expired)
    )
}

impl Task {
    /// A new task from us (the submitter) to `worker`, signed NEW, queued for delivery.
    pub fn submit(
        me: &Identity,
        id: String,
        worker: PublicKey,
        body: String,
        deadline_ms: u64,
        now_ms: u64,
    ) -> Task {
        let r = StateRecord::sign(
            me,
            &id,
            me.public_key(),
            worker,
            TaskState::New,
            &body,
            now_ms,
            deadline_ms,
        );
        Task {
            id,
            role: Role::Submitter,
            submitter: me.public_key(),
            worker,
            state: TaskState::New,
            deadline_ms,
            body: body.clone(),
            answer: None,
            records: vec![r.clone()],
            outbox: vec![Outbound {
                record: r,
                payload: body,
                refused: None,
            }],
        }
    }

    /// The worker's side of a NEW record that came from peer `from`.
    pub fn receive_new(
        me: PublicKey,
        from: PublicKey,
        r: &StateRecord,
        payload: String,
        now_ms: u64,
    ) -> Result<Task, Refusal> {
        check_record(r, &payload, from)?;
        if r.state != TaskState::New || r.signer != r.submitter {
            return refuse(RefusalCode::UnknownTask, "no such task here");
        }
        if r.worker != me {
            return refuse(RefusalCode::WrongPeer, "the task names another worker");
        }
        if now_ms > r.deadline_ms {
            return refuse(RefusalCode::Expired, "the task's deadline has passed");
        }
        Ok(Task {
            id: r.task_id.clone(),
            role: Role::Worker,
            submitter: r.submitter,
            worker: r.worker,
            state: TaskState::New,
            deadline_ms: r.deadline_ms,
            body: payload,
            answer: None,
            records: vec![r.clone()],
            outbox: Vec::new(),
        })
    }

    /// Our own change as the worker: signed, applied, queued for the submitter.
    pub fn act(&mut self, me: &Identity, action: Action, now_ms: u64) -> Result<(), Refusal> {
        if self.role != Role::Worker || me.public_key() != self.worker {
            return refuse(
                RefusalCode::WrongSigner,
                "only the worker accepts, declines or reports a result",
            );
        }
        let (state, payload) = match action {
            Action::Accept => (TaskState::Accepted, String::new()),
            Action::Decline(why) => (TaskState::Declined, why),
            Action::Done(p) => (TaskState::Done, p),
            Action::Fail(p) => (TaskState::Failed, p),
        };
        if now_ms > self.deadline_ms {
            self.tick(me, now_ms);
            return refuse(RefusalCode::Expired, "the task's deadline has passed");
        }
        if !legal(self.state, state) {
            return refuse(
                RefusalCode::BadTransition,
                format!(
                    "a task in state {} cannot become {}",
                    self.state.as_str(),
                    state.as_str()
                ),
            );
        }
        let r = StateRecord::sign(
            me,
            &self.id,
            self.submitter,
            self.worker,
            state,
            &payload,
            now_ms,
            self.deadline_ms,
        );
        self.take(r.clone(), &payload);
        self.outbox.push(Outbound {
            record: r,
            payload,
            refused: None,
        });
        Ok(())
    }

    /// A record for this task from peer `from`. `Ok(false)`: we have it already (ack it
    /// again).
    pub fn apply(
        &mut self,
        from: PublicKey,
        r: &StateRecord,
        payload: String,
        now_ms: u64,
    ) -> Result<bool, Refusal> {
        check_record(r, &payload, from)?;
        if r.task_id != self.id
            || r.submitter != self.submitter
            || r.worker != self.worker
            || r.deadline_ms != self.deadline_ms
        {
            return refuse(
                RefusalCode::WrongPeer,
                "the record names another task or key",
            );
        }
        if self.records.iter().any(|k| k == r) {
            return Ok(false);
        }
        let expected = match r.state {
            TaskState::New => self.submitter,
            _ => self.worker,
        };
        if r.signer != expected || self.role == Role::Worker {
            return refuse(
                RefusalCode::WrongSigner,
                format!(
                    "a {} record must be signed by the {}",
                    r.state.as_str(),
                    if r.state == TaskState::New {
                        "submitter"
                    } else {
                        "worker"
                    }
                ),
            );
        }
        if r.time_ms > r.deadline_ms || r.state == TaskState::Expired {
            return refuse(RefusalCode::Expired, "the change came after the deadline");
        }
        // A late delivery of a change made in time replaces our own EXPIRED.
        let from_state = if self.state == TaskState::Expired {
            self.state_before_expiry()
        } else {
            self.state
        };
        if !legal(from_state, r.state) {
            return refuse(
                RefusalCode::BadTransition,
                format!(
                    "a task in state {} cannot become {}",
                    self.state.as_str(),
                    r.state.as_str()
                ),
            );
        }
        let _ = now_ms;
        self.take(r.clone(), &payload);
        Ok(true)
    }

    /// Marks the task EXPIRED (a record signed by us, kept here) when its deadline passed
    /// before a final state; says whether it did.
    pub fn tick(&mut self, me: &Identity, now_ms: u64) -> bool {
        if self.state.is_final() || now_ms <= self.deadline_ms {
            return false;
        }
        let r = StateRecord::sign(
            me,
            &self.id,
            self.submitter,
            self.worker,
            TaskState::Expired,
            "",
            now_ms,
            self.deadline_ms,
        );
        self.take(r, "");
        true
    }

    fn take(&mut self, r: StateRecord, payload: &str) {
        self.state = r.state;
        if matches!(
            r.state,
            TaskState::Declined | TaskState::Done | TaskState::Failed
        ) {
            self.answer = Some(payload.to_string());
        }
        self.records.push(r);
    }

    fn state_before_expiry(&self) -> TaskState {
        self.records
            .iter()
            .rev()
            .map(|r| r.state)
            .find(|s| *s != TaskState::Expired)
            .unwrap_or(TaskState::New)
    }

    /// The last change's time (unix ms).
    pub fn updated_ms(&self) -> u64 {
        self.records.last().map_or(0, |r| r.time_ms)
    }
}

/// The checks every incoming record passes: from the peer that signed it, signature valid,
/// payload hash matching.
fn check_record(r: &StateRecord, payload: &str, from: PublicKey) -> Result<(), Refusal> {
    if r.signer != from {
        return refuse(
            RefusalCode::WrongSigner,
            "the record is signed by another key than the peer that sent it",
        );
    }
    if !r.verify() {
        return refuse(
            RefusalCode::BadSignature,
            "the record's signature does not verify",
        );
    }
    if payload_hash(payload) != r.hash {
        return refuse(
            RefusalCode::HashMismatch,
            "the payload does not match the record's hash",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00112233445566778899aabbccddeeff";

    struct Pair {
        sub: Identity,
        work: Identity,
        s: Task,
        w: Task,
    }

    /// A submitted task delivered to the worker, at virtual time 1000, deadline 5000.
    fn pair() -> Pair {
        let (sub, work) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let s = Task::submit(
            &sub,
            ID.into(),
            work.public_key(),
            "{\"t\":1}".into(),
            5000,
            1000,
        );
        let o = &s.outbox[0];
        let w = Task::receive_new(
            work.public_key(),
            sub.public_key(),
            &o.record,
            o.payload.clone(),
            1001,
        )
        .unwrap();
        Pair { sub, work, s, w }
    }

    /// Delivers the worker's last queued record to the submitter.
    fn deliver(p: &mut Pair, now: u64) -> Result<bool, Refusal> {
        let o = p.w.outbox.last().unwrap().clone();
        p.s.apply(p.work.public_key(), &o.record, o.payload, now)
    }

    #[test]
    fn a_task_goes_new_accepted_done_on_both_sides() {
        let mut p = pair();
        assert_eq!((p.s.state, p.w.state), (TaskState::New, TaskState::New));
        p.w.act(&p.work, Action::Accept, 1100).unwrap();
        assert!(deliver(&mut p, 1101).unwrap());
        assert!(!deliver(&mut p, 1102).unwrap(), "a retry is a duplicate");
        p.w.act(&p.work, Action::Done("{\"data\":\"42\"}".into()), 1200)
            .unwrap();
        deliver(&mut p, 1201).unwrap();
        assert_eq!((p.s.state, p.w.state), (TaskState::Done, TaskState::Done));
        assert_eq!(p.s.answer.as_deref(), Some("{\"data\":\"42\"}"));
        assert_eq!(p.s.records.len(), 3);
        assert!(p.s.records.iter().all(|r| r.verify()));
    }

    #[test]
    fn a_result_signed_by_a_third_key_is_refused() {
        let mut p = pair();
        p.w.act(&p.work, Action::Accept, 1100).unwrap();
        deliver(&mut p, 1101).unwrap();
        let third = Identity::from_seed([3; 32]);
        let forged = StateRecord::sign(
            &third,
            ID,
            p.sub.public_key(),
            p.work.public_key(),
            TaskState::Done,
            "forged",
            1200,
            5000,
        );
        // Sent by the third node itself: not the worker's signature.
        let e =
            p.s.apply(third.public_key(), &forged, "forged".into(), 1201)
                .unwrap_err();
        assert_eq!(e.code, RefusalCode::WrongSigner);
        // Claiming to be the worker's, but signed by the third key.
        let mut claimed = forged.clone();
        claimed.signer = p.work.public_key();
        let e =
            p.s.apply(p.work.public_key(), &claimed, "forged".into(), 1201)
                .unwrap_err();
        assert_eq!(e.code, RefusalCode::BadSignature);
        // The submitter cannot forge the worker's result either.
        let own = StateRecord::sign(
            &p.sub,
            ID,
            p.sub.public_key(),
            p.work.public_key(),
            TaskState::Done,
            "mine",
            1200,
            5000,
        );
        let e =
            p.s.apply(p.sub.public_key(), &own, "mine".into(), 1201)
                .unwrap_err();
        assert_eq!(e.code, RefusalCode::WrongSigner);
        assert_eq!(p.s.state, TaskState::Accepted);
    }

    #[test]
    fn a_changed_payload_or_an_illegal_step_is_refused() {
        let mut p = pair();
        p.w.act(&p.work, Action::Accept, 1100).unwrap();
        let o = p.w.outbox[0].clone();
        let e =
            p.s.apply(p.work.public_key(), &o.record, "x".into(), 1101)
                .unwrap_err();
        assert_eq!(e.code, RefusalCode::HashMismatch);
        let e = p.w.act(&p.work, Action::Accept, 1150).unwrap_err();
        assert_eq!(e.code, RefusalCode::BadTransition);
        let mut q = pair();
        let e =
            q.w.act(&q.work, Action::Done("r".into()), 1100)
                .unwrap_err();
        assert_eq!(
            e.code,
            RefusalCode::BadTransition,
            "DONE needs ACCEPTED first"
        );
        let e = q.s.act(&q.sub, Action::Accept, 1100).unwrap_err();
        assert_eq!(
            e.code,
            RefusalCode::WrongSigner,
            "the submitter cannot accept"
        );
    }

    #[test]
    fn a_declined_task_carries_its_reason_and_ends() {
        let mut p = pair();
        p.w.act(&p.work, Action::Decline("busy".into()), 1100)
            .unwrap();
        deliver(&mut p, 1101).unwrap();
        assert_eq!(p.s.state, TaskState::Declined);
        assert_eq!(p.s.answer.as_deref(), Some("busy"));
        let e = p.w.act(&p.work, Action::Accept, 1200).unwrap_err();
        assert_eq!(e.code, RefusalCode::BadTransition);
        assert!(!p.s.tick(&p.sub, 9999), "a final task does not expire");
    }

    #[test]
    fn the_deadline_expires_both_sides_and_late_work_is_refused() {
        let mut p = pair();
        assert!(!p.s.tick(&p.sub, 5000), "not before the deadline");
        assert!(p.s.tick(&p.sub, 5001));
        assert!(p.w.tick(&p.work, 5001));
        assert_eq!(
            (p.s.state, p.w.state),
            (TaskState::Expired, TaskState::Expired)
        );
        let e = p.w.act(&p.work, Action::Accept, 5002).unwrap_err();
        assert_eq!(e.code, RefusalCode::Expired);
        // A NEW that arrives after its deadline is refused by the worker.
        let o = p.s.outbox[0].clone();
        let e = Task::receive_new(
            p.work.public_key(),
            p.sub.public_key(),
            &o.record,
            o.payload,
            5002,
        )
        .unwrap_err();
        assert_eq!(e.code, RefusalCode::Expired);
    }

    #[test]
    fn a_result_made_in_time_but_delivered_late_replaces_the_submitters_expiry() {
        let mut p = pair();
        p.w.act(&p.work, Action::Accept, 1100).unwrap();
        deliver(&mut p, 1101).unwrap();
        p.w.act(&p.work, Action::Done("r".into()), 4999).unwrap();
        assert!(p.s.tick(&p.sub, 5001));
        deliver(&mut p, 6000).unwrap();
        assert_eq!(p.s.state, TaskState::Done);
    }
}
