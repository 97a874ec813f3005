//! The daemon's side of discovery: each call goes to the node core, and what changes our own
//! record (hostname, tags) is also saved in `node.json`, so a restart keeps it.

use crate::api::service::ApiResult;
use crate::api::types::{NodeView, Registration};
use crate::daemon::node_driver::NodeCommand;
use crate::daemon::node_driver::NodeHandle;
use crate::daemon::node_state;
use crate::error::PilotError;
use crate::mapping::PeerRef;
use crate::mapping::{Hostname, NetworkPrefix};
use crate::node::commands::DiscoveryCommand as D;
use crate::state::paths::StatePaths;

/// The parts of the daemon's `Node` discovery uses.
pub struct Node<'a> {
    /// The node driver.
    pub control: &'a NodeHandle,
    /// Our overlay network.
    pub network: NetworkPrefix,
    /// The state directory.
    pub paths: &'a StatePaths,
    /// The hostname the daemon shows.
    pub hostname: &'a std::sync::Mutex<Option<Hostname>>,
}

/// `GET /v1/lookup/{peer}`.
pub async fn lookup(node: &Node<'_>, peer: &str) -> ApiResult<NodeView> {
    let peer = PeerRef::parse(peer, &node.network)?;
    node.control
        .call(|reply| NodeCommand::Discovery(D::Lookup { peer, reply }))
        .await
}

/// `PUT /v1/tags`: checked, sent, saved.
pub async fn set_tags(node: &Node<'_>, tags: Vec<String>) -> ApiResult<Registration> {
    crate::wire::registry::check_tags(&tags).map_err(|e| {
        PilotError::invalid(
            format!("{e}: {tags:?}"),
            "give at most 8 tags of 1-24 lowercase letters, digits and hyphens, e.g. gpu vector-search",
        )
    })?;
    let r = node
        .control
        .call(|reply| NodeCommand::Discovery(D::SetTags { tags, reply }))
        .await?;
    save(node, &r)?;
    Ok(r)
}

/// `DELETE /v1/hostname`.
pub async fn clear_hostname(node: &Node<'_>) -> ApiResult<Registration> {
    let r = node
        .control
        .call(|reply| NodeCommand::Discovery(D::ClearHostname { reply }))
        .await?;
    save(node, &r)?;
    Ok(r)
}

/// `POST /v1/deregister`.
pub async fn deregister(node: &Node<'_>) -> ApiResult<Registration> {
    let r = node
        .control
        .call(|reply| NodeCommand::Discovery(D::Deregister { reply }))
        .await?;
    save(node, &r)?;
    Ok(r)
}

/// Keeps our hostname and tags as the registries now hold them.
fn save(node: &Node<'_>, r: &Registration) -> Result<(), PilotError> {
    let mut state = node_state::load(node.paths)?;
    state.hostname = r.hostname.clone();
    state.tags = r.tags.clone();
    node_state::save(node.paths, &state)?;
    *node.hostname.lock().expect("hostname lock") = r.hostname.clone();
    Ok(())
}
