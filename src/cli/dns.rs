//! `pilotctl dns status` and `pilotctl dns setup [--apply]`: what the daemon's resolver serves
//! and how the system's resolver reaches it. `setup` only prints unless `--apply` is given,
//! and even then it changes only systemd-resolved's runtime per-link settings (never a file).

use serde::Serialize;

use super::args::DnsCmd;
use super::output::{ask, Output};
use crate::api::{DnsStatus, Request};
use crate::error::PilotError;
use crate::services::dns::resolved;

/// What `dns setup` found and did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DnsSetup {
    /// The resolver's overlay address (TUN mode).
    pub address: Option<String>,
    /// The TUN interface.
    pub link: Option<String>,
    /// Whether systemd-resolved runs here.
    pub resolved: bool,
    /// The commands that wire resolved (run with `--apply`).
    pub commands: Vec<String>,
    /// Whether they were run.
    pub applied: bool,
    /// What to do instead, without resolved.
    pub advice: Vec<String>,
}

/// Runs a `dns` command.
pub fn run(cmd: DnsCmd) -> Result<Output, PilotError> {
    match cmd {
        DnsCmd::Status => {
            Ok(ask::<DnsStatus>("dns status", &Request::DnsStatus {})?.render(render_status))
        }
        DnsCmd::Setup { apply } => setup(apply),
    }
}

fn setup(apply: bool) -> Result<Output, PilotError> {
    let status = ask::<DnsStatus>("dns setup", &Request::DnsStatus {})?.typed;
    let (Some(address), Some(link)) = (status.address.clone(), status.link.clone()) else {
        return Err(PilotError::invalid(
            "the daemon serves no overlay DNS address (userspace mode, or [dns] enabled = false)",
            "in userspace mode programs reach NAME.pilot through the SOCKS5 proxy; set [dns] loopback = \"127.0.0.1:5353\" to ask the resolver directly",
        ));
    };
    let ip: std::net::Ipv6Addr = address
        .parse()
        .map_err(|_| PilotError::internal(format!("the daemon gave a bad address {address}")))?;
    let present = resolved::present();
    let commands: Vec<String> = resolved::setup_commands(&link, ip)
        .into_iter()
        .map(|a| format!("resolvectl {}", a.join(" ")))
        .collect();
    let advice = if present {
        Vec::new()
    } else {
        vec![
            format!("dnsmasq: add `server=/pilot/{address}` to its configuration"),
            format!(
                "unbound: stub-zone: name: \"pilot\" stub-addr: {address} (with `domain-insecure: \"pilot\"`)"
            ),
            format!(
                "a container or network namespace of its own: `nameserver {address}` in its resolv.conf (only .pilot names are answered)"
            ),
        ]
    };
    if apply {
        resolved::apply(&link, ip)?;
    }
    let out = DnsSetup {
        address: Some(address),
        link: Some(link),
        resolved: present,
        commands,
        applied: apply,
        advice,
    };
    let text = render_setup(&out);
    Output::local(&out, text)
}

/// `dns status`.
pub fn render_status(s: &DnsStatus) -> String {
    let listening = if s.listening.is_empty() {
        "not running".to_string()
    } else {
        s.listening.join(", ")
    };
    format!(
        "listening   {listening}\naddress     {}\nlink        {}\nttl         {}s\nresolved    {}\n\
         answers     {} address, {} no data, {} nxdomain, {} refused, {} errors\n\
         dropped     {} malformed, {} from peers",
        s.address.as_deref().unwrap_or("-"),
        s.link.as_deref().unwrap_or("-"),
        s.ttl_secs,
        s.resolved,
        s.answered,
        s.nodata,
        s.nxdomain,
        s.refused,
        s.errors,
        s.malformed,
        s.not_local
    )
}

fn render_setup(s: &DnsSetup) -> String {
    let mut t = String::new();
    if s.resolved {
        t.push_str(if s.applied {
            "systemd-resolved now sends .pilot names to the daemon:\n"
        } else {
            "systemd-resolved runs; to send .pilot names to the daemon run (or add --apply):\n"
        });
        for c in &s.commands {
            t.push_str(&format!("  {c}\n"));
        }
        if !s.applied {
            t.push_str("(the daemon does this itself at start unless [dns] resolved = false)\n");
        }
    } else {
        t.push_str(
            "systemd-resolved is not running; point your resolver's `pilot` zone at the daemon:\n",
        );
        for a in &s.advice {
            t.push_str(&format!("  {a}\n"));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_listeners_wiring_and_counters() {
        let s = DnsStatus {
            listening: vec!["[fdc5:7a3e:91b4::53]:53".into()],
            address: Some("fdc5:7a3e:91b4::53".into()),
            link: Some("pilot0".into()),
            ttl_secs: 5,
            resolved: "configured".into(),
            answered: 3,
            nodata: 1,
            nxdomain: 2,
            refused: 0,
            errors: 0,
            malformed: 4,
            not_local: 0,
        };
        let t = render_status(&s);
        assert!(t.contains("listening   [fdc5:7a3e:91b4::53]:53"), "{t}");
        assert!(t.contains("resolved    configured"), "{t}");
        assert!(t.contains("3 address, 1 no data, 2 nxdomain"), "{t}");
        assert!(t.contains("4 malformed"), "{t}");
    }

    #[test]
    fn setup_without_resolved_gives_advice_and_no_commands_run() {
        let s = DnsSetup {
            address: Some("fdc5:7a3e:91b4::53".into()),
            link: Some("pilot0".into()),
            resolved: false,
            commands: vec![],
            applied: false,
            advice: vec!["dnsmasq: add `server=/pilot/fdc5:7a3e:91b4::53`".into()],
        };
        assert!(render_setup(&s).contains("server=/pilot/fdc5:7a3e:91b4::53"));
    }
}
