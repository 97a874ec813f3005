//! The allow-list: peers (by key, or by hostname as the registry binds it) whose trust
//! requests are approved without asking.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::mapping::{Hostname, MappingError};

/// Peers whose requests are approved without asking (orchestrators).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    /// Keys approved at once.
    #[serde(default)]
    pub keys: BTreeSet<PublicKey>,
    /// Hostnames approved at once (as bound by the registry).
    #[serde(default)]
    pub hostnames: BTreeSet<Hostname>,
}

impl AllowList {
    /// Builds the list from config entries (`[trust] allow`): each is a public key (base64 or
    /// hex) or a hostname (an optional `.pilot` suffix is dropped).
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut allow = AllowList::default();
        for e in entries {
            let e = e.as_ref().trim();
            if let Ok(k) = e.parse::<PublicKey>() {
                allow.keys.insert(k);
                continue;
            }
            let name = e.strip_suffix(".pilot").unwrap_or(e);
            let h = Hostname::new(name).map_err(|source| AllowListError {
                entry: e.to_string(),
                source,
            })?;
            allow.hostnames.insert(h);
        }
        Ok(allow)
    }

    /// Whether a request from `key` (registry name `hostname`) is approved at once.
    pub fn allows(&self, key: &PublicKey, hostname: Option<&Hostname>) -> bool {
        self.keys.contains(key) || hostname.is_some_and(|h| self.hostnames.contains(h))
    }
}

/// An allow-list entry that is neither a public key nor a hostname.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trust allow-list entry `{entry}` is neither a public key nor a hostname: {source}")]
pub struct AllowListError {
    /// The entry as written.
    pub entry: String,
    /// Why it is not a hostname.
    pub source: MappingError,
}

impl From<AllowListError> for crate::error::PilotError {
    fn from(e: AllowListError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "write a base64 (44 characters) or hex (64 digits) public key, or a hostname",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::trust::test_util::key;

    #[test]
    fn allow_list_entries_are_keys_or_hostnames() {
        let k = key(2).to_string();
        let allow =
            AllowList::from_entries(&[k.as_str(), "orchestrator.pilot", "ci-runner"]).unwrap();
        assert!(allow.keys.contains(&key(2)));
        assert!(allow
            .hostnames
            .contains(&Hostname::new("orchestrator").unwrap()));
        assert!(allow
            .hostnames
            .contains(&Hostname::new("ci-runner").unwrap()));
        assert!(AllowList::from_entries(&["Not A Name"]).is_err());
    }
}
