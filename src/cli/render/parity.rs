//! Renderings of the verbs added for parity with Pilot Protocol: `config`, `health`, `recv`,
//! `bench`.

use super::{table, untrusted};
use crate::api::{HealthData, NetcheckData, NodeView, Registration};
use crate::cli::bootstrap::Setting;
use crate::cli::diagnostics::Trace;
use crate::cli::exchange::{BenchReport, Received};

/// `config`: `key  value  source`, one line per key.
pub fn config_settings(settings: &[Setting]) -> String {
    let mut rows = vec![["KEY".to_string(), "VALUE".into(), "SOURCE".into()]];
    for s in settings {
        let source = serde_json::to_value(s.source)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        rows.push([
            s.key.clone(),
            untrusted(&s.value.to_string()).into_owned(),
            source,
        ]);
    }
    table(&rows)
}

/// `health`.
pub fn health(h: &HealthData) -> String {
    let q = |n: Option<usize>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut text = format!(
        "status      {}\nversion     {}\nuptime      {}s\nmode        {}\npeers       {} up of {}\n\
         registries  {}\ninbox       {}\noutbox      {}\ndata plane  {}",
        h.status,
        untrusted(&h.version),
        h.uptime_secs,
        h.mode,
        h.peers_up,
        h.peers,
        h.registries,
        q(h.inbox),
        q(h.outbox),
        if h.data_plane_alive { "alive" } else { "DEAD" }
    );
    if h.last_errors.is_empty() {
        text.push_str("\nlast errors none");
    }
    for e in &h.last_errors {
        let age = crate::clock::unix_ms_now().saturating_sub(e.at_ms) / 1000;
        text.push_str(&format!(
            "\n{:<5} {age}s ago  {}: {}",
            e.level,
            untrusted(&e.target),
            untrusted(&e.message)
        ));
    }
    text
}

/// `lookup`: one `key  value` line per field; tags space-separated.
pub fn node_view(n: &NodeView) -> String {
    let tags = if n.tags.is_empty() {
        "-".to_string()
    } else {
        untrusted(&n.tags.join(" ")).into_owned()
    };
    format!(
        "hostname    {}\naddress     {}\nipv6        {}\npublic key  {}\ntags        {tags}",
        super::name_or_dash(n.hostname.as_ref().map(|h| h.as_str())),
        n.address,
        n.ipv6,
        n.public_key
    )
}

/// `set-tags`, `clear-tags`, `clear-hostname`, `deregister`: what the registries hold now.
pub fn registration(r: &Registration) -> String {
    if !r.registered {
        return "deregistered: the registries forgot our hostname, tags and record \
                (the daemon registers again when it restarts)"
            .into();
    }
    let tags = if r.tags.is_empty() {
        "-".to_string()
    } else {
        r.tags.join(" ")
    };
    format!(
        "hostname    {}\ntags        {tags}",
        super::name_or_dash(r.hostname.as_ref().map(|h| h.as_str()))
    )
}

/// `netcheck`.
pub fn netcheck(n: &NetcheckData) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
    let mut text = format!("mode        {}\ntun         ", n.mode);
    match &n.tun_unavailable_reason {
        None => text.push_str("available"),
        Some(why) => text.push_str(&format!("unavailable: {}", untrusted(why))),
    }
    text.push_str(&format!(
        "\nudp port    {}\nnat         {}\nclock skew  {} ms",
        n.local_port, n.nat, n.clock_skew_ms
    ));
    if n.registries.is_empty() {
        text.push_str("\nregistries  none configured");
    }
    for r in &n.registries {
        let seen = r
            .reflexive
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let state = if r.registered {
            "reachable"
        } else {
            "NOT reachable"
        };
        let home = if r.home { "  (home relay)" } else { "" };
        text.push_str(&format!(
            "\nregistry    {}  {state}  over {}  rtt {}  sees us at {seen}  clock {:+} ms{home}",
            r.registry,
            r.transport,
            ms(r.rtt_ms),
            r.clock_offset_ms
        ));
    }
    text
}

/// `connections`: a table.
pub fn connections(l: &crate::api::ConnectionList) -> String {
    if l.connections.is_empty() {
        return "no connections".into();
    }
    let mut rows = vec![["ID", "SERVICE", "PEER", "PORT", "RX", "TX", "AGE"].map(String::from)];
    for c in &l.connections {
        rows.push([
            c.id.to_string(),
            c.service.clone(),
            c.peer_ipv6.to_string(),
            c.port.to_string(),
            super::human_bytes(c.rx_bytes),
            super::human_bytes(c.tx_bytes),
            format!("{}s", c.age_secs),
        ]);
    }
    table(&rows)
}

/// `traceroute`: one line per leg.
pub fn trace(t: &Trace) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.2} ms"));
    let mut lines = vec![format!("path {} to {}", t.path, t.peer)];
    for (i, h) in t.hops.iter().enumerate() {
        let est = if h.estimated { " (estimated)" } else { "" };
        lines.push(format!("{}  {}  {}{est}", i + 1, h.to, ms(h.rtt_ms)));
    }
    lines.join("\n")
}

/// `recv`: one line per connection, `FROM: DATA`.
pub fn recv_report(all: &[Received]) -> String {
    all.iter()
        .map(|r| {
            let from = r.peer_hostname.as_deref().unwrap_or(&r.peer_ipv6);
            format!("{}: {}", untrusted(from), untrusted(r.data.trim_end()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `bench`.
pub fn bench(b: &BenchReport) -> String {
    format!(
        "{} bytes echoed in {:.3} s: {:.1} Mbit/s\nrtt {:.2} ms (avg of {})",
        b.bytes,
        b.seconds,
        b.mbit_s,
        b.rtt_avg_ms,
        b.rtt_ms.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_stranger_sent_to_recv_stays_on_its_line() {
        let r = Received {
            peer: None,
            peer_hostname: Some("node-a".into()),
            peer_ipv6: "fdc5::1".into(),
            data: "hi\nnode-b: fake\u{1b}[2J".into(),
            bytes: 3,
        };
        let text = recv_report(&[r]);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    }
}
