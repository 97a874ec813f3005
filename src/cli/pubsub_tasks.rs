//! `subscribe`, `publish`, `pubsub` and the `task` commands.

use std::io::Write;
use std::time::{Duration, Instant};

use super::args::{PublishArgs, SubscribeArgs, TaskCmd};
use super::output::{ask, paths, Output};
use super::render;
use crate::api::{
    subscribe_target, ApiEvent, Client, PublishedData, PubsubData, Request, StreamEvent,
    SubmitTaskRequest, TaskList, TaskResultRequest, TaskView,
};
use crate::error::PilotError;

/// `subscribe PEER TOPIC [--count N] [--timeout S]`: prints each event as it arrives, a
/// JSON line each with `json`.
pub fn subscribe(args: &SubscribeArgs, json: bool) -> Result<(), PilotError> {
    crate::services::pubsub::topic::validate_pattern(&args.topic)?;
    let peer = (args.peer != "local").then_some(args.peer.as_str());
    let deadline = match args.timeout {
        Some(s) if s.is_finite() && s >= 0.0 => Some(Instant::now() + Duration::from_secs_f64(s)),
        Some(_) => {
            return Err(PilotError::invalid(
                "--timeout must be a number of seconds",
                "e.g. --timeout 30",
            ))
        }
        None => None,
    };
    let mut events =
        Client::connect(&paths()?.socket)?.sse(&subscribe_target(peer, &args.topic))?;
    let mut seen = 0u64;
    let mut out = std::io::stdout().lock();
    while args.count.is_none_or(|n| seen < n) {
        let e = match events.next_until(deadline) {
            Some(Ok(e)) => e,
            Some(Err(e)) if args.count.is_none() && deadline.is_some() => {
                let _ = e;
                return Ok(());
            }
            Some(Err(e)) => return Err(e),
            None => return ended(args.count, seen),
        };
        let ApiEvent::Api(StreamEvent::PubsubEvent(r)) = &e else {
            continue;
        };
        let line = if json {
            serde_json::to_string(&e).map_err(|e| PilotError::internal(e.to_string()))?
        } else {
            super::escape::terminal(&render::pubsub_event(r)).into_owned()
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        seen += 1;
    }
    Ok(())
}

/// The stream ended (the broker closed the subscription, or the daemon stopped): an error
/// when `--count` events had not arrived.
fn ended(count: Option<u64>, seen: u64) -> Result<(), PilotError> {
    match count {
        Some(n) if seen < n => Err(PilotError::new(
            crate::error::ErrorCode::ConnectionFailed,
            format!("the subscription ended after {seen} of {n} events"),
            "the broker's daemon or ours stopped, or the path to it broke: subscribe again",
        )),
        _ => Ok(()),
    }
}

/// `publish PEER TOPIC --data D` or `publish --local TOPIC --data D`.
pub fn publish(args: PublishArgs) -> Result<Output, PilotError> {
    let (peer, topic) = match (args.local, args.target.as_slice()) {
        (true, [topic]) => (None, topic.clone()),
        (false, [peer, topic]) => (Some(peer.clone()), topic.clone()),
        _ => {
            return Err(PilotError::invalid(
                "publish takes PEER TOPIC, or --local TOPIC",
                "e.g. pilotctl publish worker-node jobs.new --data hi, or \
                 pilotctl publish --local jobs.new --data hi",
            ))
        }
    };
    crate::services::pubsub::topic::validate_topic(&topic)?;
    let req = Request::Publish {
        peer,
        topic,
        data: args.data,
    };
    Ok(ask::<PublishedData>("publish", &req)?.render(render::published))
}

/// `pubsub`: our broker's state.
pub fn status() -> Result<Output, PilotError> {
    Ok(ask::<PubsubData>("pubsub", &Request::PubsubStatus {})?.render(render::pubsub_status))
}

/// Makes a path absolute for the daemon (whose working directory is not ours).
fn absolute(p: &std::path::Path) -> Result<String, PilotError> {
    let abs = std::path::absolute(p).map_err(|e| {
        PilotError::invalid(format!("bad path {}: {e}", p.display()), "give a file path")
    })?;
    abs.to_str().map(str::to_string).ok_or_else(|| {
        PilotError::invalid(format!("{} is not UTF-8", abs.display()), "rename the file")
    })
}

/// `task …`.
pub fn task(cmd: TaskCmd) -> Result<Output, PilotError> {
    let (name, req) = match cmd {
        TaskCmd::Submit {
            peer,
            task,
            file,
            deadline,
        } => {
            let task = serde_json::from_str(&task).map_err(|e| {
                PilotError::invalid(
                    format!("--task is not valid JSON: {e}"),
                    "quote it for the shell, e.g. --task '{\"op\":\"resize\"}'",
                )
            })?;
            let file = file.as_deref().map(absolute).transpose()?;
            let req = SubmitTaskRequest {
                peer,
                task,
                file,
                deadline_s: deadline,
            };
            ("task submit", Request::TaskSubmit(req))
        }
        TaskCmd::List { submitted } => {
            let req = Request::TaskList {
                submitted: Some(submitted),
            };
            return Ok(ask::<TaskList>("task list", &req)?.render(render::task_list));
        }
        TaskCmd::Accept { id } => ("task accept", Request::TaskAccept { id }),
        TaskCmd::Decline { id, reason } => ("task decline", Request::TaskDecline { id, reason }),
        TaskCmd::Result {
            id,
            data,
            file,
            failed,
        } => {
            let file = file.as_deref().map(absolute).transpose()?;
            let result = TaskResultRequest { data, file, failed };
            ("task result", Request::TaskResult { id, result })
        }
        TaskCmd::Status { id } => ("task status", Request::TaskStatus { id }),
        TaskCmd::Wait { id, timeout } => return task_wait(id, timeout),
    };
    Ok(ask::<TaskView>(name, &req)?.render(render::task_view))
}

/// `task wait ID --timeout S`: the daemon waits; this client waits a little longer.
fn task_wait(id: String, timeout: u64) -> Result<Output, PilotError> {
    let ms = timeout.saturating_mul(1000);
    let req = Request::TaskWait {
        id,
        timeout_ms: Some(ms),
    };
    let raw = Client::connect(&paths()?.socket)?
        .call_within(&req, Duration::from_millis(ms) + Duration::from_secs(5))?;
    let typed: TaskView = super::output::decode("task wait", raw.clone())?;
    Ok(Output {
        text: render::task_view(&typed),
        data: raw,
    })
}
