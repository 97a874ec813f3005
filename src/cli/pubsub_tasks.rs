//! `subscribe`, `publish`, `pubsub` and the `task` commands.

use std::io::Write;
use std::time::{Duration, Instant};

use super::args::{PublishArgs, SubscribeArgs};
use super::output::{ask, paths, Output};
use super::render;
use crate::api::{
    subscribe_target, ApiEvent, Client, PublishedData, PubsubData, Request, StreamEvent,
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
            None => break,
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
