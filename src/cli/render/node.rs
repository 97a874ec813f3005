//! This node and its peers: `info`, `daemon start`, `daemon status`, `peers`, `ping`, `find`,
//! `set-hostname`.

use super::{human_bytes, name_or_dash, table, untrusted};
use crate::api::{InfoData, PeersData, RegistryKeySource, RegistryKeyView};
use crate::node::views::{HostnameClaim, Lookup, PingReport};
use crate::wg::PeerStatus;

/// `info`: one `key  value` line per field.
pub fn info(i: &InfoData) -> String {
    let mut text = format!(
        "address     {}\nipv6        {}\nhostname    {}\npublic key  {}\nmode        {} ({})\n\
         network     {}\nuptime      {}s\npeers       {}\npid         {}",
        i.address,
        i.ipv6,
        name_or_dash(i.hostname.as_deref()),
        i.public_key,
        i.mode,
        untrusted(&i.mode_reason),
        i.network,
        i.uptime_secs,
        i.peers,
        i.pid
    );
    if let Some(a) = &i.socks5 {
        text.push_str(&format!("\nsocks5      {a}"));
        if let Some(auth) = &i.socks5_auth {
            text.push_str(&format!(" (auth: {})", untrusted(auth)));
        }
        if let Some(f) = &i.socks5_credentials {
            text.push_str(&format!("\ncredentials {}", untrusted(f)));
        }
    }
    if let Some(d) = &i.data_plane {
        text.push_str(&format!("\ndata plane  {}", data_plane(d)));
    }
    if let Some(d) = &i.dns {
        text.push_str(&format!("\ndns         {}", untrusted(d)));
    }
    for r in &i.registries {
        text.push_str(&format!("\nregistry    {}", registry_key(r)));
    }
    text
}

/// `ADDR  key KEY (pinned|learned|unsaved)` or `ADDR  key unknown`.
fn registry_key(r: &RegistryKeyView) -> String {
    let source = match r.source {
        RegistryKeySource::Pinned => "pinned in config",
        RegistryKeySource::Learned => "learned, remembered",
        RegistryKeySource::Unsaved => "learned, NOT saved",
        RegistryKeySource::Unknown => "not learned yet",
    };
    match &r.key {
        Some(k) => format!("{}  key {k} ({source})", r.registry),
        None => format!("{}  key unknown ({source})", r.registry),
    }
}

/// `registry forget-key`: what the node holds for the registry now.
pub fn registry_key_forgotten(r: &RegistryKeyView) -> String {
    format!(
        "forgot the learned key; it is learned again on the next registration\nregistry    {}",
        registry_key(r)
    )
}

/// `alive`, or `DEAD` and which threads died and why.
fn data_plane(d: &crate::wg::DataPlaneHealth) -> String {
    if d.alive {
        return "alive".to_string();
    }
    let dead: Vec<String> = d
        .threads
        .iter()
        .filter(|t| !t.alive)
        .map(|t| format!("{} ({})", t.name, t.died.as_deref().unwrap_or("stopped")))
        .collect();
    untrusted(&format!("DEAD: {}", dead.join(", "))).to_string()
}

/// `daemon start`: the new daemon's pid, address and mode.
pub fn daemon_started(i: &InfoData) -> String {
    format!(
        "daemon running (pid {})\naddress   {}\nipv6      {}\nhostname  {}\nmode      {}",
        i.pid,
        i.address,
        i.ipv6,
        name_or_dash(i.hostname.as_deref()),
        i.mode
    )
}

/// `daemon status`: one line.
pub fn daemon_status(pid: u32, i: &InfoData) -> String {
    format!(
        "daemon running (pid {pid}), address {} ipv6 {}, up {}s",
        i.address, i.ipv6, i.uptime_secs
    )
}

/// `peers`: a table, one row per peer; `now` (unix seconds) dates the last handshake.
pub fn peers(d: &PeersData, now: u64) -> String {
    if d.peers.is_empty() {
        return "no peers".into();
    }
    let head = [
        "ADDRESS",
        "HOSTNAME",
        "PATH",
        "ENDPOINT",
        "RTT",
        "HANDSHAKE",
        "RX",
        "TX",
        "DROPS",
    ]
    .map(String::from);
    let rows: Vec<[String; 9]> = std::iter::once(head)
        .chain(d.peers.iter().map(|p| peer_row(p, now)))
        .collect();
    table(&rows)
}

fn peer_row(p: &PeerStatus, now: u64) -> [String; 9] {
    [
        untrusted(&p.address).into_owned(),
        name_or_dash(p.hostname.as_deref()),
        untrusted(&p.path).into_owned(),
        p.endpoint.map_or("-".into(), |e| e.to_string()),
        p.rtt_ms.map_or("-".into(), |r| format!("{r:.1}ms")),
        p.last_handshake.map_or("never".into(), |t| {
            format!("{}s ago", now.saturating_sub(t))
        }),
        human_bytes(p.rx_bytes),
        human_bytes(p.tx_bytes),
        p.drops.values().sum::<u64>().to_string(),
    ]
}

/// `ping`: one line per probe, then a summary with the path and, if any reply came, the
/// round-trip statistics.
pub fn ping(r: &PingReport) -> String {
    let path = untrusted(&r.path);
    let mut text = String::new();
    for (i, rtt) in r.rtt_ms.iter().enumerate() {
        match rtt {
            Some(ms) => text.push_str(&format!("probe {}: {ms:.2} ms via {path}\n", i + 1)),
            None => text.push_str(&format!("probe {}: timeout\n", i + 1)),
        }
    }
    let endpoint = r.endpoint.map_or("-".into(), |e| e.to_string());
    text.push_str(&format!(
        "{} sent, {} received; path {path} ({endpoint})",
        r.sent, r.received
    ));
    if let (Some(min), Some(avg), Some(max)) = (r.min_ms, r.avg_ms, r.max_ms) {
        text.push_str(&format!("; rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms"));
    }
    text
}

/// `find NAME`: the record's key, address and IPv6, or that the registries answered none.
pub fn find(name: &str, found: Option<&Lookup>) -> String {
    match found {
        Some(l) => format!(
            "hostname    {}\naddress     {}\nipv6        {}\npublic key  {}",
            l.hostname, l.address, l.ipv6, l.public_key
        ),
        None => format!("no record for {} at the registries", untrusted(name)),
    }
}

/// `set-hostname`.
pub fn hostname_claim(c: &HostnameClaim) -> String {
    format!("hostname set to {}", c.hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::mapping::Hostname;
    use std::collections::BTreeMap;

    fn info_data() -> InfoData {
        InfoData {
            address: "0a1b.2c3d.4e5f".into(),
            ipv6: "fdc5:7a3e:91b4::a1b:2c3d:4e5f".into(),
            hostname: Some("worker-node".into()),
            public_key: "KEY=".into(),
            mode: "userspace".into(),
            mode_reason: "asked for".into(),
            network: "fdc5:7a3e:91b4::/48".into(),
            uptime_secs: 42,
            peers: 1,
            pid: 1234,
            state_dir: "/tmp/x".into(),
            listen_port: Some(9000),
            socks5: Some("127.0.0.1:1080".into()),
            socks5_auth: None,
            socks5_credentials: None,
            version: "0.1.0".into(),
            data_plane: None,
            registries: Vec::new(),
            dns: None,
        }
    }

    #[test]
    fn info_shows_each_registry_key_and_its_source() {
        let key = Identity::from_seed([3; 32]).public_key();
        let mut i = info_data();
        i.registries = vec![
            RegistryKeyView {
                registry: "192.0.2.1:9000".parse().unwrap(),
                key: Some(key),
                source: RegistryKeySource::Pinned,
            },
            RegistryKeyView {
                registry: "192.0.2.2:9000".parse().unwrap(),
                key: None,
                source: RegistryKeySource::Unknown,
            },
        ];
        let text = info(&i);
        assert!(
            text.contains(&format!(
                "\nregistry    192.0.2.1:9000  key {key} (pinned in config)"
            )),
            "{text}"
        );
        assert!(
            text.ends_with("\nregistry    192.0.2.2:9000  key unknown (not learned yet)"),
            "{text}"
        );
    }

    #[test]
    fn info_shows_whether_the_data_plane_is_alive_and_which_thread_died() {
        use crate::wg::{DataPlaneHealth, ThreadHealth};
        let t = |name: &str, died: Option<&str>| ThreadHealth {
            name: name.into(),
            alive: died.is_none(),
            died: died.map(String::from),
        };
        let mut i = info_data();
        i.data_plane = Some(DataPlaneHealth {
            alive: true,
            threads: vec![t("pilot-udp-rx", None)],
        });
        assert!(info(&i).ends_with("\ndata plane  alive"), "{}", info(&i));
        i.data_plane = Some(DataPlaneHealth {
            alive: false,
            threads: vec![
                t("pilot-udp-rx", Some("panicked: boom")),
                t("pilot-timers", None),
            ],
        });
        assert!(
            info(&i).ends_with("\ndata plane  DEAD: pilot-udp-rx (panicked: boom)"),
            "{}",
            info(&i)
        );
    }

    fn peer(hostname: Option<&str>) -> PeerStatus {
        PeerStatus {
            public_key: "KEY=".into(),
            address: "0a1b.2c3d.4e5f".into(),
            ipv6: "fdc5:7a3e:91b4::a1b:2c3d:4e5f".parse().unwrap(),
            hostname: hostname.map(String::from),
            endpoint: Some("198.51.100.2:51820".parse().unwrap()),
            path: "direct".into(),
            rtt_ms: Some(1.25),
            last_change: Some(900),
            last_handshake: Some(990),
            rx_bytes: 1536,
            tx_bytes: 10,
            rx_packets: 3,
            tx_packets: 1,
            drops: BTreeMap::from([("spoofed".into(), 2), ("rejected".into(), 1)]),
        }
    }

    #[test]
    fn info_lists_every_field_and_the_socks5_proxy() {
        let text = info(&info_data());
        assert_eq!(
            text,
            "address     0a1b.2c3d.4e5f\nipv6        fdc5:7a3e:91b4::a1b:2c3d:4e5f\n\
             hostname    worker-node\npublic key  KEY=\nmode        userspace (asked for)\n\
             network     fdc5:7a3e:91b4::/48\nuptime      42s\npeers       1\npid         1234\n\
             socks5      127.0.0.1:1080"
        );
        let mut i = info_data();
        i.socks5_auth = Some("password".into());
        i.socks5_credentials = Some("/tmp/x/socks5.credentials".into());
        assert!(
            info(&i).ends_with(
                "\nsocks5      127.0.0.1:1080 (auth: password)\n\
                 credentials /tmp/x/socks5.credentials"
            ),
            "{}",
            info(&i)
        );
        i.socks5 = None;
        i.hostname = None;
        let text = info(&i);
        assert!(
            text.contains("hostname    -\n") && !text.contains("socks5"),
            "{text}"
        );
    }

    #[test]
    fn daemon_start_and_status_show_pid_and_address() {
        let i = info_data();
        assert_eq!(
            daemon_started(&i),
            "daemon running (pid 1234)\naddress   0a1b.2c3d.4e5f\n\
             ipv6      fdc5:7a3e:91b4::a1b:2c3d:4e5f\nhostname  worker-node\nmode      userspace"
        );
        assert_eq!(
            daemon_status(1234, &i),
            "daemon running (pid 1234), address 0a1b.2c3d.4e5f ipv6 \
             fdc5:7a3e:91b4::a1b:2c3d:4e5f, up 42s"
        );
    }

    #[test]
    fn peers_is_an_aligned_table_with_summed_drops() {
        let d = PeersData {
            peers: vec![peer(Some("worker-node")), peer(None)],
            counters: None,
        };
        let text = peers(&d, 1000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ADDRESS         HOSTNAME     PATH    ENDPOINT"));
        assert_eq!(
            lines[1],
            "0a1b.2c3d.4e5f  worker-node  direct  198.51.100.2:51820  1.2ms  10s ago    \
             1.5 KiB  10 B  3"
        );
        assert!(lines[2].contains("  -            direct"), "{}", lines[2]);
        let empty = PeersData {
            peers: vec![],
            counters: None,
        };
        assert_eq!(peers(&empty, 0), "no peers");
    }

    #[test]
    fn a_peer_hostname_cannot_break_the_table() {
        let d = PeersData {
            peers: vec![peer(Some("evil\n\u{1b}[31mfake-row"))],
            counters: None,
        };
        let text = peers(&d, 1000);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    fn report(rtts: Vec<Option<f64>>) -> PingReport {
        let key = Identity::from_seed([3; 32]).public_key();
        let got: Vec<f64> = rtts.iter().flatten().copied().collect();
        PingReport {
            peer: key,
            address: key.addr48(),
            path: "relay".into(),
            endpoint: Some("203.0.113.1:7946".parse().unwrap()),
            sent: rtts.len(),
            received: got.len(),
            min_ms: got.iter().copied().reduce(f64::min),
            max_ms: got.iter().copied().reduce(f64::max),
            avg_ms: (!got.is_empty()).then(|| got.iter().sum::<f64>() / got.len() as f64),
            rtt_ms: rtts,
        }
    }

    #[test]
    fn ping_shows_each_probe_and_the_summary() {
        assert_eq!(
            ping(&report(vec![Some(1.0), None, Some(3.0)])),
            "probe 1: 1.00 ms via relay\nprobe 2: timeout\nprobe 3: 3.00 ms via relay\n\
             3 sent, 2 received; path relay (203.0.113.1:7946); rtt min/avg/max 1.00/2.00/3.00 ms"
        );
        assert_eq!(
            ping(&report(vec![None])),
            "probe 1: timeout\n1 sent, 0 received; path relay (203.0.113.1:7946)"
        );
    }

    #[test]
    fn find_shows_the_record_or_says_there_is_none() {
        let key = Identity::from_seed([4; 32]).public_key();
        let l = Lookup {
            hostname: Hostname::new("worker-node").unwrap(),
            public_key: key,
            address: key.addr48(),
            ipv6: "fdc5:7a3e:91b4::1".parse().unwrap(),
        };
        assert_eq!(
            find("worker-node", Some(&l)),
            format!(
                "hostname    worker-node\naddress     {}\nipv6        fdc5:7a3e:91b4::1\n\
                 public key  {key}",
                key.addr48()
            )
        );
        assert_eq!(find("ghost", None), "no record for ghost at the registries");
    }

    #[test]
    fn set_hostname_confirms_the_name() {
        let c = HostnameClaim {
            hostname: Hostname::new("worker-node").unwrap(),
        };
        assert_eq!(hostname_claim(&c), "hostname set to worker-node");
    }
}
