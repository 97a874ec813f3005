//! The local API's pub/sub and task requests on the running node, and the start of both
//! services.

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::api::service::{no_service, ApiResult, TaskAct};
use crate::api::types::*;
use crate::error::PilotError;
use crate::identity::PublicKey;
use crate::services::pubsub::{Pubsub, Subscription};
use crate::services::tasks::machine::Action;
use crate::services::tasks::{FileBlob, ResultBody, TaskBody, Tasks};
use crate::userspace::overlay_net::OverlayNet;
use crate::wg::DataPlane;

/// Starts the pub/sub broker (port 1002); a failure is logged and the node runs without it.
pub async fn start_pubsub(
    state_dir: &std::path::Path,
    me: PublicKey,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
    config: &crate::config::PubsubConfig,
) -> Option<Arc<Pubsub>> {
    match Pubsub::start(state_dir, me, overlay.clone(), plane.clone(), config).await {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "pub/sub broker not started (port 1002)");
            None
        }
    }
}

fn running(p: Option<&Arc<Pubsub>>) -> Result<&Arc<Pubsub>, PilotError> {
    p.ok_or_else(|| no_service("pub/sub"))
}

/// `POST /v1/pubsub/publish` on the broker of `to` (a resolved trusted peer), or ours.
pub async fn publish(
    p: Option<&Arc<Pubsub>>,
    me: PublicKey,
    to: Option<(PublicKey, Ipv6Addr)>,
    req: PublishRequest,
) -> ApiResult<PublishedData> {
    let p = running(p)?;
    let (broker, published) = match to {
        None => (me, p.publish_local(&req.topic, req.data)?),
        Some((key, ip)) => (key, p.publish_remote(ip, &req.topic, req.data).await?),
    };
    Ok(PublishedData {
        broker,
        topic: published.topic,
        seq: published.seq,
        subscribers: published.subscribers,
        dropped: published.dropped,
    })
}

/// `GET /v1/pubsub/subscribe` on the broker of `from` (a resolved trusted peer), or ours.
pub async fn subscribe(
    p: Option<&Arc<Pubsub>>,
    from: Option<(PublicKey, Ipv6Addr)>,
    pattern: &str,
) -> ApiResult<Subscription> {
    let p = running(p)?;
    match from {
        None => Ok(p.subscribe_local(pattern)?),
        Some((key, ip)) => Ok(p.subscribe_remote(key, ip, pattern).await?),
    }
}

/// `GET /v1/pubsub`.
pub fn status(p: Option<&Arc<Pubsub>>, subscriber_queue: usize) -> ApiResult<PubsubData> {
    let s = running(p)?.status();
    Ok(PubsubData {
        drop_policy: "drop_newest".into(),
        subscriber_queue,
        topics: s.topics,
        subscribers: s.subscribers,
    })
}

/// Starts the task service (port 1003); a failure is logged and the node runs without it.
pub async fn start_tasks(
    state_dir: &std::path::Path,
    me: Arc<crate::identity::Identity>,
    network: crate::mapping::NetworkPrefix,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
    config: &crate::config::TasksConfig,
) -> Option<Arc<Tasks>> {
    match Tasks::start(
        state_dir,
        me,
        network,
        overlay.clone(),
        plane.clone(),
        config,
    )
    .await
    {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "task service not started (port 1003)");
            None
        }
    }
}

fn tasks(t: Option<&Arc<Tasks>>) -> Result<&Arc<Tasks>, PilotError> {
    t.ok_or_else(|| no_service("task"))
}

/// Reads a file the API names by absolute path, as an attached blob.
async fn read_blob(path: &str, max: usize) -> Result<FileBlob, PilotError> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(PilotError::invalid(
            format!("`{path}` is not an absolute path"),
            "give the file as an absolute path (pilotctl does this for you)",
        ));
    }
    let meta = tokio::fs::metadata(p).await.map_err(|e| {
        PilotError::invalid(
            format!("cannot read {path}: {e}"),
            "check the path and its permissions",
        )
    })?;
    // base64 makes 4 bytes of 3.
    if meta.len().saturating_mul(4) / 3 > max as u64 {
        return Err(PilotError::invalid(
            format!("{path} is {} bytes; a task or result takes at most about {} bytes", meta.len(), max * 3 / 4),
            "send large files with `pilotctl send-file`, or raise [tasks] max_task_bytes / max_result_bytes",
        ));
    }
    let bytes = tokio::fs::read(p).await.map_err(|e| {
        PilotError::invalid(
            format!("cannot read {path}: {e}"),
            "check the path and its permissions",
        )
    })?;
    Ok(FileBlob::from_file(p, &bytes))
}

/// `POST /v1/tasks` to the resolved trusted peer `worker`.
pub async fn task_submit(
    t: Option<&Arc<Tasks>>,
    worker: PublicKey,
    req: SubmitTaskRequest,
    limits: &crate::config::TasksConfig,
) -> ApiResult<TaskView> {
    let t = tasks(t)?;
    let file = match &req.file {
        Some(path) => Some(read_blob(path, limits.max_task_bytes).await?),
        None => None,
    };
    let body = TaskBody {
        task: req.task,
        file,
    };
    Ok(t.submit(worker, &body, req.deadline_s)?)
}

/// `GET /v1/tasks`.
pub fn task_list(t: Option<&Arc<Tasks>>, submitted: Option<bool>) -> ApiResult<TaskList> {
    Ok(TaskList {
        tasks: tasks(t)?.list(submitted),
    })
}

/// `GET /v1/tasks/{id}`.
pub fn task_get(t: Option<&Arc<Tasks>>, id: &str) -> ApiResult<TaskView> {
    Ok(tasks(t)?.get(id)?)
}

/// `POST /v1/tasks/{id}/accept|decline|result`.
pub async fn task_act(
    t: Option<&Arc<Tasks>>,
    id: &str,
    act: TaskAct,
    limits: &crate::config::TasksConfig,
) -> ApiResult<TaskView> {
    let t = tasks(t)?;
    let action = match act {
        TaskAct::Accept => Action::Accept,
        TaskAct::Decline(reason) => Action::Decline(reason),
        TaskAct::Result(r) => {
            let file = match &r.file {
                Some(path) => Some(read_blob(path, limits.max_result_bytes).await?),
                None => None,
            };
            if r.data.is_none() && file.is_none() {
                return Err(PilotError::invalid(
                    "a result needs data or a file",
                    "e.g. pilotctl task result ID --data 42, or --file /path/to/result",
                ));
            }
            let body = ResultBody { data: r.data, file };
            let payload =
                serde_json::to_string(&body).map_err(|e| PilotError::internal(e.to_string()))?;
            if r.failed {
                Action::Fail(payload)
            } else {
                Action::Done(payload)
            }
        }
    };
    Ok(t.act(id, action)?)
}

/// `GET /v1/tasks/{id}/wait`: 30 s by default, at most an hour.
pub async fn task_wait(
    t: Option<&Arc<Tasks>>,
    id: &str,
    timeout_ms: Option<u64>,
) -> ApiResult<TaskView> {
    let ms = timeout_ms.unwrap_or(30_000).min(3_600_000);
    Ok(tasks(t)?
        .wait(id, std::time::Duration::from_millis(ms))
        .await?)
}
