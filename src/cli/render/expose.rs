//! Exposed overlay ports: `expose`, `expose --list`, `expose --remove`.

use super::untrusted;
use crate::api::ExposeList;
use crate::userspace::expose::{ExposeProtocol, Exposed};

/// `8080` for TCP, `5353/udp` for UDP.
fn port(e: &Exposed) -> String {
    match e.protocol {
        ExposeProtocol::Tcp => e.port.to_string(),
        ExposeProtocol::Udp => format!("{}/udp", e.port),
    }
}

/// `expose PORT --to HOST:PORT`.
pub fn expose_added(e: &Exposed) -> String {
    format!("overlay port {} forwarded to {}", port(e), untrusted(&e.to))
}

/// `expose --list`: one line per port.
pub fn expose_list(l: &ExposeList) -> String {
    if l.exposed.is_empty() {
        return "no exposed ports".into();
    }
    l.exposed
        .iter()
        .map(|e| format!("{:<6} -> {}", port(e), untrusted(&e.to)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `expose --remove PORT`.
pub fn expose_removed(e: &Exposed) -> String {
    format!(
        "overlay port {} no longer forwarded to {}",
        port(e),
        untrusted(&e.to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(port: u16, to: &str) -> Exposed {
        Exposed {
            port,
            to: to.into(),
            protocol: ExposeProtocol::Tcp,
        }
    }

    #[test]
    fn udp_ports_show_their_protocol() {
        let mut e = exposed(5353, "127.0.0.1:5353");
        e.protocol = ExposeProtocol::Udp;
        assert_eq!(
            expose_added(&e),
            "overlay port 5353/udp forwarded to 127.0.0.1:5353"
        );
    }

    #[test]
    fn expose_confirms_the_forwarding() {
        let e = exposed(8080, "127.0.0.1:3000");
        assert_eq!(
            expose_added(&e),
            "overlay port 8080 forwarded to 127.0.0.1:3000"
        );
        assert_eq!(
            expose_removed(&e),
            "overlay port 8080 no longer forwarded to 127.0.0.1:3000"
        );
    }

    #[test]
    fn expose_list_aligns_ports() {
        let l = ExposeList {
            exposed: vec![exposed(8080, "127.0.0.1:3000"), exposed(22, "localhost:22")],
        };
        assert_eq!(
            expose_list(&l),
            "8080   -> 127.0.0.1:3000\n22     -> localhost:22"
        );
        assert_eq!(
            expose_list(&ExposeList { exposed: vec![] }),
            "no exposed ports"
        );
    }
}
