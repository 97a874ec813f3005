//! The file service between two TUN-mode hosts: a 1 GiB file arrives intact although the
//! receiving daemon is killed with SIGKILL half way and started again; the transfer resumes
//! from the verified offset (bytes sent in total < 1.2 GiB) and neither daemon's RSS grows
//! past 64 MiB.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::netns::{Host, Lab};
use crate::support::process::{lock_holder, wait_until};

const GIB: u64 = 1 << 30;

/// A sparse file of `len` bytes with 4 KiB of varied bytes every 64 MiB (so an offset error
/// changes the content).
fn sparse_file(path: &Path, len: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    let mut at = 0;
    while at < len {
        f.seek(SeekFrom::Start(at)).unwrap();
        let block: Vec<u8> = (0..4096u64).map(|i| ((at >> 26) * 31 + i) as u8).collect();
        f.write_all(&block).unwrap();
        at += 64 << 20;
    }
}

/// Whether two files hold the same bytes (`cmp`: this test crate is built without
/// optimisation, and the machine may be busy).
fn same_bytes(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .args(["-s"])
        .arg(a)
        .arg(b)
        .status()
        .expect("cmp")
        .success()
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples the RSS of whatever daemons hold the homes' locks every 100 ms until `stop`;
/// returns the largest seen (KiB).
fn sample_rss(locks: Vec<std::path::PathBuf>, stop: Arc<AtomicBool>) -> Arc<AtomicU64> {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            for l in &locks {
                if let Some(kib) = lock_holder(l).and_then(rss_kib) {
                    p.fetch_max(kib, Ordering::SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    peak
}

/// Two TUN hosts that pin each other, with `[files]` settings for the test.
fn file_hosts(lab: &mut Lab) -> (Host, Host) {
    let mut a = lab.host("a", "198.51.100.1");
    let mut b = lab.host("b", "198.51.100.2");
    a.configure(25, &[b.as_peer()]);
    b.configure(25, &[a.as_peer()]);
    for h in [&a, &b] {
        let cfg = h.home().join("config.toml");
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text = text.replace("log_level = \"debug\"\n", "log_level = \"info\"\n");
        text.push_str("[files]\nsync_every_mib = 16\nstall_timeout_secs = 5\nmin_free_disk = 0\n");
        std::fs::write(&cfg, text).unwrap();
    }
    a.start_daemon();
    b.start_daemon();
    assert!(a.ping_until(b.ipv6(), Duration::from_secs(10)), "no tunnel");
    (a, b)
}

/// The largest verified offset recorded in `home`'s partial area.
fn verified(home: &Path) -> u64 {
    std::fs::read_dir(home.join("files").join("partial"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).ok()?).ok()
        })
        .filter_map(|m| m["offset"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn a_1_gib_file_survives_a_sigkill_of_the_receiver_half_way_with_bounded_memory() {
    let mut lab = Lab::new();
    let (a, mut b) = file_hosts(&mut lab);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("weights.bin");
    sparse_file(&path, GIB);
    let stop = Arc::new(AtomicBool::new(false));
    let locks = [a.home(), b.home()].map(|h| h.join("daemon.lock")).to_vec();
    let peak = sample_rss(locks, stop.clone());
    let started = Instant::now();

    let sent = a.ok(&["send-file", &b.key.to_string(), path.to_str().unwrap()]);
    let id = sent["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(30), || verified(b.home()) >= GIB / 2),
        "B holds no half: {}",
        b.daemon_log()
    );
    b.kill_daemon();
    let held = verified(b.home());
    assert!(held < GIB, "finished before the kill");
    b.start_daemon();

    let mut t = serde_json::Value::Null;
    let done = wait_until(Duration::from_secs(60), || {
        t = a.ok(&["transfers"])["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
            .cloned()
            .unwrap_or_default();
        t["state"] == "done" || t["state"] == "failed"
    });
    stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    assert!(
        done && t["state"] == "done",
        "{t}\nA:\n{}\nB:\n{}",
        a.daemon_log(),
        b.daemon_log()
    );
    // The receiver's SHA-256 matched the sender's, and the bytes are the source's.
    let got = b.ok(&["received"]);
    assert_eq!(got["files"][0]["sha256"], t["sha256"], "{got}");
    assert_eq!(got["files"][0]["size"], GIB);
    assert!(same_bytes(
        &path,
        &b.home().join("received").join("weights.bin")
    ));
    let bytes_sent = t["bytes_sent"].as_u64().unwrap();
    assert!(
        bytes_sent < GIB * 6 / 5,
        "{bytes_sent} bytes sent for 1 GiB ({held} held at the kill)"
    );
    let peak_mib = peak.load(Ordering::SeqCst) / 1024;
    assert!(peak_mib < 64, "a daemon's RSS reached {peak_mib} MiB");
    eprintln!(
        "1 GiB with a receiver SIGKILL at {held} bytes: {elapsed:?}, {bytes_sent} bytes sent, peak RSS {peak_mib} MiB"
    );
}
