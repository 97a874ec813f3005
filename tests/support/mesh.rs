//! Userspace-mode daemons on loopback that all trust each other as static peers
//! (`node-0`, `node-1`, …), with extra config appended to each config file.

use super::home::Home;
use super::net::free_udp_port;

/// `n` homes whose daemons (userspace mode, no SOCKS5 unless `extra` has a `[socks5]`) list
/// each other as static peers named `node-I`; `extra` is appended to every config file
/// (before the peers). Not started.
pub fn mesh(n: usize, extra: &str) -> (Vec<Home>, Vec<String>) {
    let homes: Vec<Home> = (0..n).map(|_| Home::new("pilot-mesh")).collect();
    let keys: Vec<String> = homes.iter().map(|h| h.identity_key()).collect();
    let ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
    for (i, h) in homes.iter().enumerate() {
        let mut cfg = format!(
            "mode = \"userspace\"\n{extra}\n[tunnel]\nlisten_port = {}\n",
            ports[i]
        );
        if !extra.contains("[socks5]") {
            cfg.push_str("[socks5]\nenabled = false\n");
        }
        for j in (0..n).filter(|j| *j != i) {
            cfg.push_str(&format!(
                "[[peer]]\npublic_key = \"{}\"\nhostname = \"node-{j}\"\nendpoint = \"127.0.0.1:{}\"\n",
                keys[j], ports[j]
            ));
        }
        std::fs::write(h.path().join("config.toml"), cfg).unwrap();
    }
    (homes, keys)
}

/// Starts every home's daemon in the background.
pub fn start_all(homes: &[Home]) {
    for h in homes {
        h.ok(&["daemon", "start"]);
    }
}
