//! Local candidate endpoints: this host's own addresses with the tunnel's UDP port, offered to
//! trusted peers so that two nodes on one LAN (or behind one NAT) find the direct local path.

use std::net::{IpAddr, SocketAddr};

/// Most candidates offered (registry messages are bounded in size).
pub const MAX_CANDIDATES: usize = 8;

/// Whether an address is worth offering to a peer: not loopback, link-local, multicast,
/// unspecified, or inside an overlay (ULA addresses of our own TUN are skipped by name).
pub fn is_candidate(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast())
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xffc0) == 0xfe80)
        }
    }
}

/// This host's candidate addresses (IPv4 first), with `port`, skipping the interface named
/// `skip_interface` (our TUN device).
pub fn local_candidates(port: u16, skip_interface: &str) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list that we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if name == skip_interface {
                continue;
            }
            let family = (*ifa.ifa_addr).sa_family as i32;
            let ip = if family == libc::AF_INET {
                let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes())
            } else if family == libc::AF_INET6 {
                let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                IpAddr::from(sa.sin6_addr.s6_addr)
            } else {
                continue;
            };
            if is_candidate(&ip) {
                let sa = SocketAddr::new(ip, port);
                if !out.contains(&sa) {
                    out.push(sa);
                }
            }
        }
        libc::freeifaddrs(ifap);
    }
    out.sort_by_key(|a| a.is_ipv6());
    out.truncate(MAX_CANDIDATES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_link_local_and_multicast_are_not_candidates() {
        for s in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "ff02::1",
            "169.254.1.1",
            "0.0.0.0",
            "::",
        ] {
            assert!(!is_candidate(&s.parse().unwrap()), "{s}");
        }
        for s in ["198.51.100.7", "10.1.2.3", "2001:db8::1"] {
            assert!(is_candidate(&s.parse().unwrap()), "{s}");
        }
    }

    #[test]
    fn local_candidates_carry_the_port_and_skip_loopback() {
        let c = local_candidates(4242, "none");
        assert!(c.len() <= MAX_CANDIDATES);
        for a in &c {
            assert_eq!(a.port(), 4242);
            assert!(!a.ip().is_loopback());
        }
    }
}
