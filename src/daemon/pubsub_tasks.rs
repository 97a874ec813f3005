//! The local API's pub/sub and task requests on the running node, and the start of both
//! services.

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::api::service::{no_service, ApiResult};
use crate::api::types::*;
use crate::error::PilotError;
use crate::identity::PublicKey;
use crate::services::pubsub::{Pubsub, Subscription};
use crate::userspace::overlay_net::OverlayNet;
use crate::wg::DataPlane;

/// Starts the pub/sub broker (port 1002); a failure is logged and the node runs without it.
pub async fn start_pubsub(
    me: PublicKey,
    overlay: &OverlayNet,
    plane: &Arc<DataPlane>,
    config: &crate::config::PubsubConfig,
) -> Option<Arc<Pubsub>> {
    match Pubsub::start(me, overlay.clone(), plane.clone(), config).await {
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
