//! Task delegation on overlay port 1003: a submitter hands a task to a trusted worker, the
//! worker accepts or declines it and reports a result; every state change is a record signed
//! by the node that made it and verified by the other ([`record`], [`machine`]).
//!
//! Durable like messages: each side keeps every task in `$PILOT_HOME/tasks/` ([`store`]),
//! writes a change to disk before it answers, and retries its records not yet acked (with
//! backoff) until the other side acks or refuses them, across restarts. The receiver dedupes
//! (a record it has is acked again).

pub mod machine;
pub mod record;
pub mod store;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, Notify};

use crate::clock::unix_ms_now;
use crate::config::TasksConfig;
use crate::identity::{Identity, PublicKey};
use crate::mapping::NetworkPrefix;
use crate::services::frame::{self, FrameError};
use crate::userspace::overlay_net::{OverlayListener, OverlayNet, OverlayStream};
use crate::wg::DataPlane;
use machine::{Action, Refusal, Role, Task};
use record::TaskState;
pub use store::{FileBlob, FileInfo, ResultBody, ResultView, TaskBody, TaskView};
use wire::{Frame, RefusalCode, TASK_PORT, VERSION};

/// How long one delivery attempt to a peer may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry backoff bounds.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often deadlines are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Changes buffered per listener of [`Tasks::changes`].
const CHANGES_QUEUE: usize = 256;

/// Errors of the task service.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A change this node refuses (bad state, deadline, size, …).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// No such task.
    #[error("no task {0} on this node")]
    NotFound(String),
    /// Waiting for a final state took longer than allowed.
    #[error("task {0} is still {1} after the wait")]
    Timeout(String, &'static str),
    /// Reading or writing the task store failed.
    #[error("the task store failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be read or written (delivery is retried).
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<TaskError> for crate::error::PilotError {
    fn from(e: TaskError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        match &e {
            TaskError::Refused(r) => {
                let code = match r.code {
                    RefusalCode::BadTransition | RefusalCode::Expired => ErrorCode::AlreadyExists,
                    RefusalCode::WrongSigner | RefusalCode::WrongPeer => ErrorCode::Unauthorized,
                    _ => ErrorCode::InvalidArgument,
                };
                PilotError::new(
                    code,
                    format!("{e} [{}]", r.code.as_str()),
                    "see the task's state with `pilotctl task status ID`",
                )
            }
            TaskError::NotFound(_) => PilotError::new(
                ErrorCode::NotFound,
                e.to_string(),
                "list tasks with `pilotctl task list` (received) or `task list --submitted`",
            ),
            TaskError::Timeout(..) => PilotError::new(
                ErrorCode::Timeout,
                e.to_string(),
                "wait longer (--timeout), or check `pilotctl task status ID`",
            ),
            TaskError::Io(_) | TaskError::Frame(_) => PilotError::internal(e.to_string()),
        }
    }
}

/// The task service.
pub struct Tasks {
    me: Arc<Identity>,
    network: NetworkPrefix,
    tasks: Mutex<BTreeMap<String, Task>>,
    store: store::Store,
    overlay: OverlayNet,
    plane: Arc<DataPlane>,
    limits: TasksConfig,
    wake: Notify,
    changes: broadcast::Sender<TaskView>,
}

impl Tasks {
    /// Loads the tasks under `state_dir/tasks` and starts the receiver (port 1003), the
    /// delivery task (which resumes what is undelivered) and the deadline checks.
    pub async fn start(
        state_dir: &std::path::Path,
        me: Arc<Identity>,
        network: NetworkPrefix,
        overlay: OverlayNet,
        plane: Arc<DataPlane>,
        limits: &TasksConfig,
    ) -> Result<Arc<Self>, TaskError> {
        let store = store::Store::open(state_dir.join("tasks"))?;
        let tasks = store
            .load_all()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let t = Arc::new(Tasks {
            me,
            network,
            tasks: Mutex::new(tasks),
            store,
            overlay,
            plane,
            limits: limits.clone(),
            wake: Notify::new(),
            changes: broadcast::channel(CHANGES_QUEUE).0,
        });
        let listener = t.overlay.listen(TASK_PORT).await?;
        let me = t.clone();
        tokio::spawn(async move { me.accept_loop(listener).await });
        let me = t.clone();
        tokio::spawn(async move { me.delivery_loop().await });
        let me = t.clone();
        tokio::spawn(async move { me.expiry_loop().await });
        Ok(t)
    }

    /// Every task change from now on (the API's event stream).
    pub fn changes(&self) -> broadcast::Receiver<TaskView> {
        self.changes.subscribe()
    }

    fn frame_max(&self) -> usize {
        self.limits.max_task_bytes.max(self.limits.max_result_bytes) + 64 * 1024
    }

    /// Saves `t`, tells the event stream, and returns its view.
    fn commit(&self, t: &Task) -> Result<TaskView, TaskError> {
        self.store.save(t)?;
        if let Err(e) = self.store.write_files(t) {
            tracing::warn!(task = %t.id, error = %e, "a task file could not be written");
        }
        let v = self.store.view(t);
        let _ = self.changes.send(v.clone());
        Ok(v)
    }

    /// Submits a task to the trusted peer `worker`: stored, then delivered with retries.
    pub fn submit(
        &self,
        worker: PublicKey,
        body: &TaskBody,
        deadline_s: Option<u64>,
    ) -> Result<TaskView, TaskError> {
        let payload = serde_json::to_string(body).map_err(std::io::Error::other)?;
        self.check_size(TaskState::New, &payload)?;
        let now = unix_ms_now();
        let secs = deadline_s.unwrap_or(self.limits.default_deadline_secs);
        let deadline = now.saturating_add(secs.saturating_mul(1000));
        let id = crate::services::message_store::new_id();
        let t = Task::submit(&self.me, id.clone(), worker, payload, deadline, now);
        let v = {
            let mut tasks = self.tasks.lock().expect("tasks");
            self.check_room(&tasks)?;
            let v = self.commit(&t)?;
            tasks.insert(id, t);
            v
        };
        self.wake.notify_one();
        Ok(v)
    }

    fn check_room(&self, tasks: &BTreeMap<String, Task>) -> Result<(), Refusal> {
        if tasks.len() >= self.limits.max_tasks {
            return Err(Refusal {
                code: RefusalCode::TooManyTasks,
                message: format!("this node keeps {} tasks, its limit", tasks.len()),
            });
        }
        Ok(())
    }

    fn check_size(&self, state: TaskState, payload: &str) -> Result<(), Refusal> {
        let max = match state {
            TaskState::New => self.limits.max_task_bytes,
            _ => self.limits.max_result_bytes,
        };
        if payload.len() > max {
            return Err(Refusal {
                code: RefusalCode::TooLarge,
                message: format!(
                    "the payload is {} bytes; at most {max} are taken",
                    payload.len()
                ),
            });
        }
        Ok(())
    }

    /// Tasks, newest first: those we submitted (`Some(true)`), those we work on
    /// (`Some(false)`), or all.
    pub fn list(&self, submitted: Option<bool>) -> Vec<TaskView> {
        let tasks = self.tasks.lock().expect("tasks");
        let mut v: Vec<TaskView> = tasks
            .values()
            .filter(|t| submitted.is_none_or(|s| s == (t.role == Role::Submitter)))
            .map(|t| self.store.view(t))
            .collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.created_ms));
        v
    }

    /// One task.
    pub fn get(&self, id: &str) -> Result<TaskView, TaskError> {
        let tasks = self.tasks.lock().expect("tasks");
        let t = tasks
            .get(id)
            .ok_or_else(|| TaskError::NotFound(id.into()))?;
        Ok(self.store.view(t))
    }

    /// The worker's change: accept, decline, or report a result.
    pub fn act(&self, id: &str, action: Action) -> Result<TaskView, TaskError> {
        let payload_len = match &action {
            Action::Done(p) | Action::Fail(p) => p.len(),
            _ => 0,
        };
        if payload_len > self.limits.max_result_bytes {
            self.check_size(TaskState::Done, &" ".repeat(payload_len))?;
        }
        let v = {
            let mut tasks = self.tasks.lock().expect("tasks");
            let t = tasks
                .get_mut(id)
                .ok_or_else(|| TaskError::NotFound(id.into()))?;
            let mut next = t.clone();
            let acted = next.act(&self.me, action, unix_ms_now());
            if next != *t {
                // Even a refusal may have expired it.
                self.commit(&next)?;
                *t = next;
            }
            acted?;
            self.store.view(t)
        };
        self.wake.notify_one();
        Ok(v)
    }

    /// Waits until task `id` is in a final state, at most `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TaskView, TaskError> {
        let mut rx = self.changes.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get(id)?;
            if v.state.is_final() {
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Err(_) => return Err(TaskError::Timeout(id.into(), v.state.as_str())),
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(TaskError::Timeout(id.into(), v.state.as_str()))
                }
                Ok(_) => {}
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, mut listener: OverlayListener) {
        loop {
            match listener.accept().await {
                Ok(s) => {
                    let me = self.clone();
                    tokio::spawn(async move { me.admit(s).await });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "task accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn admit(self: Arc<Self>, s: OverlayStream) {
        let Ok(SocketAddr::V6(remote)) = s.peer_addr() else {
            return;
        };
        let Some(peer) = self.plane.peer_by_ip(remote.ip()) else {
            tracing::warn!(%remote, "task connection from an address that is no peer: closed");
            return;
        };
        if let Err(e) = self.serve(peer.public_key, s).await {
            tracing::debug!(%remote, error = %e, "task connection ended");
        }
    }

    /// Serves one peer's connection: each record is checked, stored and acked, or refused.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        peer: PublicKey,
        mut s: S,
    ) -> Result<(), FrameError> {
        loop {
            let f = tokio::time::timeout(
                IDLE_TIMEOUT,
                frame::read::<_, Frame>(&mut s, self.frame_max()),
            )
            .await
            .map_err(|_| FrameError::Io(std::io::ErrorKind::TimedOut.into()))?;
            let answer = match f {
                Ok(None) => return Ok(()),
                Ok(Some(Frame::State { v, record, payload })) if v == VERSION => {
                    self.take(peer, record, payload)
                }
                Ok(Some(other)) => Frame::Refused {
                    v: VERSION,
                    task_id: String::new(),
                    code: RefusalCode::BadVersion,
                    message: format!(
                        "this node speaks v{VERSION} and takes only state frames: {}",
                        kind(&other)
                    ),
                },
                Err(e) => {
                    let refusal = Frame::Refused {
                        v: VERSION,
                        task_id: String::new(),
                        code: RefusalCode::Malformed,
                        message: e.to_string(),
                    };
                    let _ = frame::write(&mut s, &refusal, self.frame_max()).await;
                    return Err(e);
                }
            };
            frame::write(&mut s, &answer, self.frame_max()).await?;
        }
    }

    /// One record from `peer`: the answer for it.
    fn take(&self, peer: PublicKey, r: record::StateRecord, payload: String) -> Frame {
        let id = r.task_id.clone();
        let state = r.state;
        match self.take_record(peer, r, payload) {
            Ok(()) => Frame::Ack {
                v: VERSION,
                task_id: id,
                state,
            },
            Err(e) => {
                tracing::warn!(task = %id, code = e.code.as_str(), reason = %e.message,
                    "task record refused");
                Frame::Refused {
                    v: VERSION,
                    task_id: id,
                    code: e.code,
                    message: e.message,
                }
            }
        }
    }

    fn take_record(
        &self,
        peer: PublicKey,
        r: record::StateRecord,
        payload: String,
    ) -> Result<(), Refusal> {
        self.check_size(r.state, &payload)?;
        if !store::check_payload(r.state, &payload) {
            return Err(Refusal {
                code: RefusalCode::Malformed,
                message: "the payload is not a task or result body".into(),
            });
        }
        let io = |e: TaskError| Refusal {
            code: RefusalCode::Malformed,
            message: e.to_string(),
        };
        let now = unix_ms_now();
        let mut tasks = self.tasks.lock().expect("tasks");
        match tasks.get_mut(&r.task_id) {
            None if r.state == TaskState::New => {
                self.check_room(&tasks)?;
                let t = Task::receive_new(self.me.public_key(), peer, &r, payload, now)?;
                tracing::info!(task = %t.id, "task received");
                self.commit(&t).map_err(io)?;
                tasks.insert(t.id.clone(), t);
            }
            None => {
                return Err(Refusal {
                    code: RefusalCode::UnknownTask,
                    message: "no such task here".into(),
                })
            }
            Some(t) => {
                let mut next = t.clone();
                if next.apply(peer, &r, payload, now)? {
                    tracing::info!(task = %t.id, state = r.state.as_str(), "task changed");
                    self.commit(&next).map_err(io)?;
                    *t = next;
                }
            }
        }
        Ok(())
    }

    async fn expiry_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(EXPIRY_TICK).await;
            let now = unix_ms_now();
            let mut tasks = self.tasks.lock().expect("tasks");
            for t in tasks.values_mut() {
                let mut next = t.clone();
                if next.tick(&self.me, now) {
                    tracing::info!(task = %t.id, "task expired");
                    if self.commit(&next).is_ok() {
                        *t = next;
                    }
                }
            }
        }
    }

    /// The other side's overlay address.
    fn peer_ip(&self, t: &Task) -> Ipv6Addr {
        let other = if t.role == Role::Submitter {
            t.worker
        } else {
            t.submitter
        };
        self.network.ipv6(other.addr48())
    }

    async fn delivery_loop(self: Arc<Self>) {
        let mut next_try: HashMap<Ipv6Addr, (Instant, Duration)> = HashMap::new();
        loop {
            let now = Instant::now();
            let mut due: HashMap<Ipv6Addr, Vec<String>> = HashMap::new();
            {
                let tasks = self.tasks.lock().expect("tasks");
                for t in tasks
                    .values()
                    .filter(|t| t.outbox.iter().any(|o| o.refused.is_none()))
                {
                    let ip = self.peer_ip(t);
                    if next_try.get(&ip).is_none_or(|(at, _)| *at <= now) {
                        due.entry(ip).or_default().push(t.id.clone());
                    }
                }
            }
            for (ip, ids) in due {
                if self.deliver_to(ip, &ids).await {
                    next_try.remove(&ip);
                } else {
                    let backoff = next_try
                        .get(&ip)
                        .map_or(RETRY_MIN, |(_, b)| (*b * 2).min(RETRY_MAX));
                    next_try.insert(ip, (Instant::now() + backoff, backoff));
                }
            }
            let wait = next_try
                .values()
                .map(|(t, _)| t.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(RETRY_MAX);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends the undelivered records of tasks `ids` to the peer at `ip`, in order, over one
    /// connection; says whether all went through (acked or refused).
    async fn deliver_to(&self, ip: Ipv6Addr, ids: &[String]) -> bool {
        let attempt = async {
            let mut s = self
                .overlay
                .connect(SocketAddrV6::new(ip, TASK_PORT, 0, 0))
                .await?;
            for id in ids {
                while let Some(o) = self.next_outbound(id) {
                    let f = Frame::State {
                        v: VERSION,
                        record: o.record.clone(),
                        payload: o.payload,
                    };
                    frame::write(&mut s, &f, self.frame_max()).await?;
                    let answer = frame::read::<_, Frame>(&mut s, self.frame_max()).await?;
                    self.answered(id, &o.record, answer)?;
                }
            }
            Ok::<(), TaskError>(())
        };
        let limit = ATTEMPT_TIMEOUT * (ids.len().max(1) as u32);
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(%ip, error = %e, "task delivery failed; will retry");
                false
            }
            Err(_) => false,
        }
    }

    fn next_outbound(&self, id: &str) -> Option<machine::Outbound> {
        let tasks = self.tasks.lock().expect("tasks");
        tasks
            .get(id)?
            .outbox
            .iter()
            .find(|o| o.refused.is_none())
            .cloned()
    }

    /// Records the peer's answer to `sent`: acked records leave the outbox, refused ones
    /// stay with the reason and are not retried.
    fn answered(
        &self,
        id: &str,
        sent: &record::StateRecord,
        answer: Option<Frame>,
    ) -> Result<(), TaskError> {
        let mut tasks = self.tasks.lock().expect("tasks");
        let Some(t) = tasks.get_mut(id) else {
            return Ok(());
        };
        let mut next = t.clone();
        let Some(pos) = next.outbox.iter().position(|o| o.record == *sent) else {
            return Ok(());
        };
        match answer {
            Some(Frame::Ack { task_id, state, .. }) if task_id == *id && state == sent.state => {
                next.outbox.remove(pos);
            }
            Some(Frame::Refused { code, message, .. }) => {
                tracing::warn!(task = %id, code = code.as_str(), reason = %message.escape_debug(),
                    "the peer refused a task record; not retried");
                next.outbox[pos].refused = Some(format!("{} [{}]", message, code.as_str()));
            }
            _ => return Err(TaskError::Io(std::io::Error::other("no usable answer"))),
        }
        self.commit(&next)?;
        *t = next;
        Ok(())
    }
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::State { .. } => "state",
        Frame::Ack { .. } => "ack",
        Frame::Refused { .. } => "refused",
    }
}
