//! The verbs added for parity with Pilot Protocol (issue 12), from parsed command to output:
//! bootstrap, the catalogue, shell integration, one-shot streams, and the `--search` filters
//! of `peers` and `trust`.

use std::time::Duration;

use super::output::{ask, Output};
use super::parity_args::ParityCmd;
use super::{bootstrap, catalogue, diagnostics, exchange, render, shell};
use crate::api::{HealthData, NodeView, PeersData, Registration, Request};
use crate::error::PilotError;
use crate::node::views::TrustList;

/// Runs one of the added verbs.
pub fn run(cmd: ParityCmd) -> Result<Output, PilotError> {
    match cmd {
        ParityCmd::Init {
            registries,
            hostname,
            force,
        } => bootstrap::init(&registries, hostname.as_deref(), force),
        ParityCmd::Version => bootstrap::version(),
        ParityCmd::Health => {
            Ok(ask::<HealthData>("health", &Request::Health {})?.render(render::health))
        }
        ParityCmd::Context { command } => catalogue::context(&command),
        ParityCmd::Completions { shell } => shell::completions(shell),
        ParityCmd::Man { dir } => shell::man(&dir),
        ParityCmd::Send {
            peer,
            port,
            data,
            timeout,
        } => exchange::send(peer, port, &data, Duration::from_secs(timeout)),
        ParityCmd::Recv {
            port,
            count,
            timeout,
        } => exchange::recv(port, count, timeout.map(Duration::from_secs)),
        ParityCmd::Bench { peer, mb } => exchange::bench(peer, mb),
        ParityCmd::Netcheck => diagnostics::netcheck(),
        ParityCmd::Connections => Ok(ask::<crate::api::ConnectionList>(
            "connections",
            &Request::Connections {},
        )?
        .render(render::connections)),
        ParityCmd::Disconnect { id } => Ok(ask::<crate::api::ConnectionView>(
            "disconnect",
            &Request::Disconnect { id },
        )?
        .render(|c| {
            format!(
                "disconnected {} ({} to {} port {})",
                c.id, c.service, c.peer_ipv6, c.port
            )
        })),
        ParityCmd::Traceroute { peer, count } => diagnostics::traceroute(peer, count),
        ParityCmd::Lookup { peer } => {
            let req = Request::LookupNode { peer };
            Ok(ask::<NodeView>("lookup", &req)?.render(render::node_view))
        }
        ParityCmd::ClearHostname => registration("clear-hostname", Request::ClearHostname {}),
        ParityCmd::Deregister => registration("deregister", Request::Deregister {}),
        ParityCmd::SetTags { tags } => {
            crate::wire::registry::check_tags(&tags).map_err(|e| {
                PilotError::invalid(
                    format!("{e}: {}", tags.join(" ")),
                    "give 1-8 tags of 1-24 lowercase letters, digits and hyphens, e.g. pilotctl set-tags gpu vector-search",
                )
            })?;
            registration("set-tags", Request::SetTags { tags })
        }
        ParityCmd::ClearTags => registration("clear-tags", Request::SetTags { tags: vec![] }),
        ParityCmd::Dgram(cmd) => super::dgram::run(cmd),
    }
}

/// A change of our record at the registries: what they hold for us now.
fn registration(command: &str, req: Request) -> Result<Output, PilotError> {
    Ok(ask::<Registration>(command, &req)?.render(render::registration))
}

/// Whether `needle` (lowercased) is in any of `hay`, ignoring case.
fn matches(needle: &str, hay: &[&str]) -> bool {
    let n = needle.to_lowercase();
    hay.iter().any(|h| h.to_lowercase().contains(&n))
}

/// Keeps the entries of the raw array `raw[field]` whose typed twin `keep` says to keep.
fn filter_raw(raw: &mut serde_json::Value, field: &str, keep: &[bool]) {
    if let Some(a) = raw.get_mut(field).and_then(|v| v.as_array_mut()) {
        let mut i = 0;
        a.retain(|_| {
            i += 1;
            keep.get(i - 1).copied().unwrap_or(false)
        });
    }
}

/// `peers [--search Q]`.
pub fn peers(search: Option<String>) -> Result<Output, PilotError> {
    let mut answer = ask::<PeersData>("peers", &Request::Peers {})?;
    if let Some(q) = search {
        let keep: Vec<bool> = answer
            .typed
            .peers
            .iter()
            .map(|p| {
                let ipv6 = p.ipv6.to_string();
                let host = p.hostname.as_deref().unwrap_or("");
                matches(&q, &[host, &p.address, &ipv6, &p.public_key])
            })
            .collect();
        filter_raw(&mut answer.raw, "peers", &keep);
        let mut k = keep.iter();
        answer.typed.peers.retain(|_| *k.next().unwrap_or(&false));
    }
    Ok(answer.render(|d| render::peers(d, crate::clock::unix_ms_now() / 1000)))
}

/// `trust [--search Q]`.
pub fn trust(search: Option<String>) -> Result<Output, PilotError> {
    let mut answer = ask::<TrustList>("trust", &Request::Trust {})?;
    if let Some(q) = search {
        let keep: Vec<bool> = answer
            .typed
            .peers
            .iter()
            .map(|v| {
                let host = v
                    .hostname
                    .as_ref()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let (addr, ipv6, key) = (
                    v.address.to_string(),
                    v.ipv6.to_string(),
                    v.public_key.to_string(),
                );
                matches(&q, &[&host, &addr, &ipv6, &key])
            })
            .collect();
        filter_raw(&mut answer.raw, "peers", &keep);
        let mut k = keep.iter();
        answer.typed.peers.retain(|_| *k.next().unwrap_or(&false));
    }
    Ok(answer.render(render::trust_list))
}

/// `daemon status --check`: nothing printed; exit 0 when the daemon answers, 1 otherwise.
pub fn status_check() -> std::process::ExitCode {
    match ask::<crate::api::InfoData>("info", &Request::Info {}) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_matches_any_field_ignoring_case_and_filters_the_raw_answer_alike() {
        assert!(matches("Worker", &["", "worker-node"]));
        assert!(!matches("db", &["worker-node", "0a1b.2c3d.4e5f"]));
        let mut raw = serde_json::json!({"peers": [1, 2, 3]});
        filter_raw(&mut raw, "peers", &[true, false, true]);
        assert_eq!(raw, serde_json::json!({"peers": [1, 3]}));
    }
}
