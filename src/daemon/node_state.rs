//! `node.json`: what the node keeps across restarts that is not config (today its hostname).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, PilotError};
use crate::mapping::Hostname;
use crate::state::files::{open_private, Access};
use crate::state::paths::StatePaths;

/// Settings the node keeps across restarts, in `node.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// The hostname last set with `--hostname` or `set-hostname`.
    pub hostname: Option<Hostname>,
    /// The tags last set with `set-tags` (sent to the registries after each registration).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Reads `node.json` without following a symbolic link; a missing file is the default state,
/// and so is a malformed one (logged). A link, a file that is not a regular file of ours, or
/// one that cannot be read is refused.
pub fn load(paths: &StatePaths) -> Result<NodeState, PilotError> {
    use std::io::Read;
    let path = paths.node_state();
    let refused = |e: std::io::Error| {
        PilotError::new(
            ErrorCode::Unauthorized,
            format!("cannot use {}: {e}", path.display()),
            format!(
                "remove {} (it only remembers the hostname; set it again with --hostname)",
                path.display()
            ),
        )
    };
    let mut f = match open_private(&path, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeState::default()),
        Err(e) => return Err(refused(e)),
    };
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(refused)?;
    Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "node.json is malformed; ignored");
        NodeState::default()
    }))
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
                ..load(paths)?
            },
        )?;
        return Ok(Some(h));
    }
    Ok(load(paths)?.hostname.or(configured))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &std::path::Path) -> StatePaths {
        StatePaths {
            dir: dir.to_path_buf(),
            socket: dir.join("pilot.sock"),
        }
    }

    #[test]
    fn the_saved_hostname_is_read_back_and_a_missing_file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        assert_eq!(load(&p).unwrap(), NodeState::default());
        let h = Hostname::new("worker-node").unwrap();
        assert_eq!(
            initial_hostname(&p, Some(h.clone()), None).unwrap(),
            Some(h.clone())
        );
        assert_eq!(initial_hostname(&p, None, None).unwrap(), Some(h));
    }

    #[test]
    fn a_symlinked_node_json_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, r#"{"hostname":"planted-name"}"#).unwrap();
        std::os::unix::fs::symlink(&elsewhere, p.node_state()).unwrap();
        let e = initial_hostname(&p, None, None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
        assert!(e.message.contains("symbolic link"), "{}", e.message);
        assert!(e.hint.contains("remove"), "{}", e.hint);
    }
}
