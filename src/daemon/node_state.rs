//! `node.json`: what the node keeps across restarts that is not config (today its hostname).

use serde::{Deserialize, Serialize};

use crate::error::PilotError;
use crate::mapping::Hostname;
use crate::state::paths::StatePaths;

/// Settings the node keeps across restarts, in `node.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// The hostname last set with `--hostname` or `set-hostname`.
    pub hostname: Option<Hostname>,
}

/// Reads `node.json`; a missing or unreadable file is the default state.
pub fn load(paths: &StatePaths) -> NodeState {
    std::fs::read_to_string(paths.node_state())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Writes `node.json` atomically, owner-only.
pub fn save(paths: &StatePaths, state: &NodeState) -> Result<(), PilotError> {
    let path = paths.node_state();
    let bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| PilotError::internal(format!("cannot encode node state: {e}")))?;
    crate::state::paths::write_private_atomic(&path, &bytes)
        .map_err(|e| PilotError::internal(format!("cannot save {}: {e}", path.display())))
}

/// The hostname to start with: `--hostname` (saved for next time), else the saved one, else
/// the config's.
pub fn initial_hostname(
    paths: &StatePaths,
    flag: Option<Hostname>,
    configured: Option<Hostname>,
) -> Result<Option<Hostname>, PilotError> {
    if let Some(h) = flag {
        save(
            paths,
            &NodeState {
                hostname: Some(h.clone()),
            },
        )?;
        return Ok(Some(h));
    }
    Ok(load(paths).hostname.or(configured))
}
