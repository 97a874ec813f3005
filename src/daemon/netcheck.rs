//! `GET /v1/netcheck`: each registry's reachability, our reflexive addresses, what our NAT
//! does with them, clock skew, and whether a TUN device could be made here.

use std::net::SocketAddr;

use crate::api::service::ApiResult;
use crate::api::types::NetcheckData;
use crate::daemon::node_driver::{NodeCommand, NodeHandle};
use crate::node::registry_client::RegistryStatus;

/// The report, from the node driver's registry status, the transport in use per registry
/// (`transport`: `udp`, `tls` or `wss`) and the data plane's local port.
pub async fn report(
    control: &NodeHandle,
    mode: String,
    local_port: u16,
    transport: impl Fn(SocketAddr) -> &'static str,
) -> ApiResult<NetcheckData> {
    let mut registries = control
        .call(|reply| NodeCommand::RegistryStatus { reply })
        .await?;
    for r in &mut registries {
        r.transport = transport(r.registry).into();
    }
    let tun = crate::daemon::mode::tun_available();
    Ok(build(registries, mode, tun, local_port))
}

/// The report from its parts (pure, for tests).
pub fn build(
    registries: Vec<RegistryStatus>,
    mode: String,
    tun: Result<(), String>,
    local_port: u16,
) -> NetcheckData {
    let mut reflexive: Vec<SocketAddr> = Vec::new();
    for r in registries.iter().filter_map(|r| r.reflexive) {
        if !reflexive.contains(&r) {
            reflexive.push(r);
        }
    }
    let answered = registries.iter().filter(|r| r.reflexive.is_some()).count();
    let nat = nat_kind(&reflexive, answered, local_port);
    let clock_skew_ms = registries
        .iter()
        .map(|r| r.clock_offset_ms)
        .max_by_key(|o| o.unsigned_abs())
        .unwrap_or(0);
    NetcheckData {
        mode,
        tun_available: tun.is_ok(),
        tun_unavailable_reason: tun.err(),
        local_port,
        registries,
        reflexive,
        nat: nat.into(),
        clock_skew_ms,
    }
}

/// What the reflexive addresses say of our NAT.
fn nat_kind(reflexive: &[SocketAddr], answered: usize, local_port: u16) -> &'static str {
    let local = |a: &SocketAddr| a.port() == local_port && is_local(a);
    if !reflexive.is_empty() && reflexive.iter().all(local) {
        return "no-nat";
    }
    if answered < 2 {
        return "unknown";
    }
    match reflexive {
        [_] => "endpoint-independent",
        _ => "endpoint-dependent",
    }
}

/// Whether `a`'s IP is one of this host's own addresses (loopback, or bound locally).
fn is_local(a: &SocketAddr) -> bool {
    a.ip().is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(a.ip(), 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(port: u16, reflexive: Option<&str>, offset: i64) -> RegistryStatus {
        RegistryStatus {
            registry: SocketAddr::from(([198, 51, 100, 1], port)),
            registered: reflexive.is_some(),
            reflexive: reflexive.map(|r| r.parse().unwrap()),
            clock_offset_ms: offset,
            rtt_ms: None,
            transport: "udp".into(),
            home: false,
        }
    }

    #[test]
    fn the_nat_is_judged_from_what_two_registries_saw() {
        let same = vec![
            reg(1, Some("203.0.113.5:40000"), 0),
            reg(2, Some("203.0.113.5:40000"), -900),
        ];
        let r = build(
            same,
            "userspace".into(),
            Err("no /dev/net/tun".into()),
            51820,
        );
        assert_eq!(r.nat, "endpoint-independent");
        assert_eq!(r.reflexive.len(), 1);
        assert_eq!(r.clock_skew_ms, -900);
        assert!(!r.tun_available);
        assert_eq!(r.tun_unavailable_reason.as_deref(), Some("no /dev/net/tun"));
        let differ = vec![
            reg(1, Some("203.0.113.5:40000"), 0),
            reg(2, Some("203.0.113.5:40001"), 0),
        ];
        assert_eq!(
            build(differ, "tun".into(), Ok(()), 1).nat,
            "endpoint-dependent"
        );
        let one = vec![reg(1, Some("203.0.113.5:40000"), 0), reg(2, None, 0)];
        assert_eq!(build(one, "tun".into(), Ok(()), 1).nat, "unknown");
        let lo = vec![reg(1, Some("127.0.0.1:5555"), 0)];
        assert_eq!(build(lo, "tun".into(), Ok(()), 5555).nat, "no-nat");
    }
}
