//! A minimal driver for the data plane, for benchmarks and manual tests before the daemon
//! integrates it:
//!
//! ```text
//! wgpair <seed-byte> <listen-port> <tun-name> [<peer-seed-byte>=<ip:port>|<peer-seed-byte>]...
//! ```
//! The identity is `Identity::from_seed([seed; 32])`. Every second the peer table and counters
//! are written as JSON to `$WGPAIR_STATUS` when set. Runs until killed.

use std::time::Duration;

use pilot::identity::Identity;
use pilot::mapping::DEFAULT_NETWORK;
use pilot::tun::{TunConfig, TunDevice};
use pilot::wg::{DataPlane, DataPlaneConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: wgpair <seed-byte> <listen-port> <tun-name> [<peer-seed>[=<ip:port>]]..."
        );
        std::process::exit(2);
    }
    let id = Identity::from_seed([args[0].parse()?; 32]);
    let port: u16 = args[1].parse()?;
    let ip = DEFAULT_NETWORK.ipv6(id.addr48());
    let mut tc = TunConfig::new(ip);
    tc.name = args[2].clone();
    if let Ok(m) = std::env::var("WGPAIR_MTU") {
        tc.mtu = m.parse()?;
    }
    tc.offload = std::env::var("WGPAIR_OFFLOAD").map_or(true, |v| v != "0");
    let tun = TunDevice::create(&tc)?;
    eprintln!("{} {} offload={}", tun.name(), ip, tun.offload());
    let cfg = DataPlaneConfig {
        listen_port: port,
        ..Default::default()
    };
    let plane = DataPlane::start(&id, &cfg, tun.into_inner(), None)?;
    for p in &args[3..] {
        let (seed, ep) = match p.split_once('=') {
            Some((s, e)) => (s, Some(e.parse()?)),
            None => (p.as_str(), None),
        };
        let key = Identity::from_seed([seed.parse()?; 32]).public_key();
        plane.add_peer(key, ep)?;
        eprintln!("peer {} {}", key, DEFAULT_NETWORK.ipv6(key.addr48()));
    }
    let status = std::env::var("WGPAIR_STATUS").ok();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(path) = &status {
            let v = serde_json::json!({"peers": plane.peers(), "counters": plane.counters()});
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, v.to_string())?;
            std::fs::rename(&tmp, path)?;
        }
    }
}
