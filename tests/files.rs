//! The file service between two real userspace daemons on loopback (no TUN, no root): a file
//! of a few MB arrives intact, a refusal reaches the sender with its code, and a transfer
//! resumes from the receiver's verified offset after the receiving daemon is killed.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::home::Home;
use support::net::free_udp_port;
use support::process::wait_until;

/// Two userspace daemons that pin each other as static peers (A = `node-a`, B = `node-b`);
/// `a_files` and `b_files` are their `[files]` sections.
fn pair(a_files: &str, b_files: &str) -> (Home, Home) {
    pair_homes(
        Home::new("pilot-files"),
        Home::new("pilot-files"),
        a_files,
        b_files,
    )
}

/// [`pair`] on homes made by the caller.
fn pair_homes(a: Home, b: Home, a_files: &str, b_files: &str) -> (Home, Home) {
    let keys = [a.identity_key(), b.identity_key()];
    let (pa, pb) = (free_udp_port(), free_udp_port());
    for (home, port, peer, name, peer_port, files) in [
        (&a, pa, &keys[1], "node-b", pb, a_files),
        (&b, pb, &keys[0], "node-a", pa, b_files),
    ] {
        std::fs::write(
            home.path().join("config.toml"),
            format!(
                "mode = \"userspace\"\n[tunnel]\nlisten_port = {port}\n[socks5]\nenabled = false\n\
                 [files]\n{files}\n\
                 [[peer]]\npublic_key = \"{peer}\"\nhostname = \"{name}\"\nendpoint = \"127.0.0.1:{peer_port}\"\n"
            ),
        )
        .unwrap();
    }
    a.ok(&["daemon", "start"]);
    b.ok(&["daemon", "start"]);
    (a, b)
}

/// A file of `len` bytes of a pattern that differs at every offset, and its SHA-256.
fn make_file(dir: &Path, name: &str, len: usize) -> (PathBuf, String) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, hex(&Sha256::digest(&data)))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outgoing transfer `id` as A's `transfers` lists it.
fn outgoing(a: &Home, id: &str) -> Value {
    let all = a.ok(&["transfers"]);
    all["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until transfer `id` is done or failed; its last view.
fn settle(a: &Home, id: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    wait_until(within, || {
        last = outgoing(a, id);
        last["state"] == "done" || last["state"] == "failed"
    });
    last
}

#[test]
fn a_file_arrives_intact_and_too_large_and_disk_full_refusals_reach_the_sender_with_their_codes() {
    let (a, mut b) = pair("", "max_file_size = 8000000\nmin_free_disk = 0\n");
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "results.bin", 3 << 20);
    let sent = a.ok(&["send-file", "node-b", path.to_str().unwrap()]);
    assert_eq!(sent["state"], "queued", "{sent}");
    let id = sent["id"].as_str().unwrap().to_string();
    let t = settle(&a, &id, Duration::from_secs(60));
    assert_eq!(t["state"], "done", "{t}\n{}\n{}", a.logs(), b.logs());
    assert_eq!(t["sha256"], sha.as_str());
    assert_eq!(t["stored_as"], "results.bin");

    let got = b.ok(&["received"]);
    let f = &got["files"][0];
    assert_eq!(f["name"], "results.bin", "{got}");
    assert_eq!(f["size"], 3 << 20);
    assert_eq!(f["sha256"], sha.as_str());
    assert_eq!(f["from_hostname"], "node-a");
    let stored = std::fs::read(b.path().join("received").join("results.bin")).unwrap();
    assert_eq!(hex(&Sha256::digest(&stored)), sha);
    // Nothing is left in the partial area once the file is in received/.
    let partial = std::fs::read_dir(b.path().join("files").join("partial")).unwrap();
    assert_eq!(partial.count(), 0);

    // The same file again, under a name given: a new file, nothing overwritten.
    let again = a.ok(&[
        "send-file",
        "node-b",
        path.to_str().unwrap(),
        "--name",
        "results.bin",
    ]);
    let t = settle(&a, again["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(t["stored_as"], "results-1.bin", "{t}");

    // Over B's max_file_size: refused with a code the sender shows, and never retried.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(9_000_000)
        .unwrap();
    let refused = a.ok(&["send-file", "node-b", big.to_str().unwrap()]);
    let t = settle(&a, refused["id"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "too_large", "{t}");
    let text = String::from_utf8_lossy(&a.pilotctl(&["transfers"]).stdout).into_owned();
    assert!(text.contains("too_large"), "{text}");

    let cleared = b.ok(&["received", "--clear"]);
    assert_eq!(cleared["files"].as_array().unwrap().len(), 2, "{cleared}");
    assert_eq!(b.ok(&["received"])["files"], serde_json::json!([]));

    // A receiver whose disk would fall below its free-space floor refuses with disk_full; the
    // sender shows it and keeps retrying (the space may come back).
    b.stop_daemon();
    let cfg = b.path().join("config.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("min_free_disk = 0", "min_free_disk = 1152921504606846976");
    std::fs::write(&cfg, text).unwrap();
    b.ok(&["daemon", "start"]);
    let full = a.ok(&["send-file", "node-b", path.to_str().unwrap()]);
    let id = full["id"].as_str().unwrap().to_string();
    let mut t = Value::Null;
    let refused = wait_until(Duration::from_secs(30), || {
        t = outgoing(&a, &id);
        t["state"] == "refused"
    });
    assert!(refused, "{t}");
    assert_eq!(t["error"]["code"], "disk_full", "{t}");
}

#[test]
fn send_file_wait_ends_when_the_peer_has_the_file_and_says_why_when_it_cannot() {
    let (a, mut b) = pair("", "max_file_size = 8000000\nmin_free_disk = 0\n");
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "model.bin", 2 << 20);
    let p = path.to_str().unwrap();
    // The answer comes when the peer has the file: it is already in B's received/.
    let t = a.ok(&["send-file", "node-b", p, "--wait", "60"]);
    assert_eq!(t["state"], "done", "{t}\n{}\n{}", a.logs(), b.logs());
    assert_eq!(t["stored_as"], "model.bin");
    assert_eq!(t["sha256"], sha.as_str());
    assert_eq!(b.ok(&["received"])["files"][0]["sha256"], sha.as_str());
    let text = String::from_utf8_lossy(&a.pilotctl(&["send-file", "node-b", p, "--wait"]).stdout)
        .into_owned();
    assert!(
        text.contains("delivered model.bin") && text.contains("model-1.bin"),
        "{text}"
    );

    // Refused for good: the command fails with the receiver's code in its message.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(9_000_000)
        .unwrap();
    let (code, e) = a.json(&["send-file", "node-b", big.to_str().unwrap(), "--wait", "60"]);
    assert_ne!(code, 0, "{e}");
    assert_eq!(e["code"], "connection_failed", "{e}");
    assert!(e["message"].as_str().unwrap().contains("too_large"), "{e}");

    // The peer is down: a timeout error, and the transfer stays queued.
    b.stop_daemon();
    let (code, e) = a.json(&["send-file", "node-b", p, "--wait", "1"]);
    assert_ne!(code, 0, "{e}");
    assert_eq!(e["code"], "timeout", "{e}");
    let pending = a.ok(&["transfers"])["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "queued")
        .count();
    assert_eq!(pending, 1);
    let (code, e) = a.json(&["send-file", "node-b", p, "--wait", "100000"]);
    assert_ne!(code, 0);
    assert_eq!(e["code"], "invalid_argument", "{e}");
}

#[test]
fn a_transfer_resumes_from_the_verified_offset_after_the_receiving_daemon_is_killed() {
    // Checkpoints every MiB, so the receiver holds a verified prefix when it dies.
    let (a, mut b) = pair(
        "stall_timeout_secs = 3\n",
        "sync_every_mib = 1\nmin_free_disk = 0\nstall_timeout_secs = 3\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let len = 16 << 20;
    let (path, sha) = make_file(dir.path(), "model.bin", len);
    let started = std::time::Instant::now();
    let sent = a.ok(&["send-file", "node-b", path.to_str().unwrap()]);
    let id = sent["id"].as_str().unwrap().to_string();

    // Kill B once it holds a verified prefix of at least a fifth of the file.
    let partial = b.path().join("files").join("partial");
    let verified = || -> u64 {
        std::fs::read_dir(&partial)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice::<Value>(&std::fs::read(e.path()).ok()?).ok())
            .filter_map(|m| m["offset"].as_u64())
            .max()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || verified() >= (len / 5) as u64),
        "no verified prefix: {}\n{}",
        outgoing(&a, &id),
        b.logs()
    );
    eprintln!("killing B after {:?}", started.elapsed());
    b.kill_daemon();
    let held = verified();
    assert!(held < len as u64, "the transfer finished before the kill");
    b.ok(&["daemon", "start"]);

    let t = settle(&a, &id, Duration::from_secs(90));
    eprintln!("done after {:?}", started.elapsed());
    assert_eq!(t["state"], "done", "{t}\n{}\n{}", a.logs(), b.logs());
    let got = b.ok(&["received"]);
    assert_eq!(got["files"][0]["sha256"], sha.as_str(), "{got}");
    let stored = std::fs::read(b.path().join("received").join("model.bin")).unwrap();
    assert_eq!(hex(&Sha256::digest(&stored)), sha);
    // It resumed: what was resent is at most what the dead daemon had not yet made durable.
    let bytes_sent = t["bytes_sent"].as_u64().unwrap();
    assert!(
        bytes_sent < (2 * len) as u64 - held,
        "{bytes_sent} bytes sent for a {len}-byte file with {held} held"
    );
}

#[test]
fn a_file_queued_while_the_peer_is_down_survives_a_restart_of_the_sender_and_arrives() {
    let (mut a, mut b) = pair("stall_timeout_secs = 2\n", "min_free_disk = 0\n");
    b.stop_daemon();
    let dir = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(dir.path(), "notes.txt", 1 << 20);
    let sent = a.ok(&["send-file", "node-b", path.to_str().unwrap()]);
    let id = sent["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(20), || outgoing(&a, &id)["error"]
            ["code"]
            == "unreachable"),
        "{}",
        outgoing(&a, &id)
    );
    a.stop_daemon();
    a.ok(&["daemon", "start"]);
    assert_eq!(
        outgoing(&a, &id)["state"],
        "queued",
        "the queue survives a restart"
    );
    b.ok(&["daemon", "start"]);
    let t = settle(&a, &id, Duration::from_secs(60));
    assert_eq!(t["state"], "done", "{t}\n{}\n{}", a.logs(), b.logs());
    assert_eq!(b.ok(&["received"])["files"][0]["sha256"], sha.as_str());
}

/// A tmpfs of `mib` MiB mounted on `dir` while it lives (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes `path` until the file system is full; the bytes written.
fn fill_disk(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    let mut n = 0;
    while let Ok(w) = f.write(&block) {
        if w == 0 {
            break;
        }
        n += w as u64;
    }
    let _ = f.sync_all();
    n
}

#[test]
#[ignore = "needs root (mounts a tmpfs): scripts/test.sh runs it as root"]
fn a_disk_that_fills_mid_transfer_reaches_the_sender_as_disk_full_and_the_transfer_resumes() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "mounting a small tmpfs needs root: run scripts/test.sh as root"
    );
    // B's whole state directory on a 48 MiB tmpfs: the offer of 28 MiB fits, then the disk
    // fills while the bytes arrive.
    let b_home = Home::new("pilot-files-full");
    let tmpfs = Tmpfs::mount(b_home.path(), 48);
    let (a, mut b) = pair_homes(
        Home::new("pilot-files"),
        b_home,
        "stall_timeout_secs = 3\n",
        "sync_every_mib = 1\nmin_free_disk = 0\nstall_timeout_secs = 3\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let len = 28 << 20;
    let (path, sha) = make_file(dir.path(), "dataset.bin", len);
    let sent = a.ok(&["send-file", "node-b", path.to_str().unwrap()]);
    let id = sent["id"].as_str().unwrap().to_string();
    let partial = b.path().join("files").join("partial");
    let arriving = || -> u64 {
        std::fs::read_dir(&partial)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || arriving() >= 1 << 20),
        "no bytes arrived: {}",
        outgoing(&a, &id)
    );
    let ballast = b.path().join("ballast");
    let filled = fill_disk(&ballast);
    assert!(
        arriving() < len as u64,
        "the file arrived before the disk filled"
    );
    eprintln!("filled {filled} bytes with {} of the file in", arriving());

    let mut t = Value::Null;
    let refused = wait_until(Duration::from_secs(30), || {
        t = outgoing(&a, &id);
        t["state"] == "refused"
    });
    assert!(refused, "{t}\n{}", b.logs());
    assert_eq!(t["error"]["code"], "disk_full", "{t}");
    // Nothing partial is ever shown as received.
    let received: Vec<_> = std::fs::read_dir(b.path().join("received"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(received.is_empty(), "{received:?}");
    assert_eq!(b.ok(&["received"])["files"], serde_json::json!([]));

    // Space comes back: the sender's retry resumes and the file arrives intact.
    std::fs::remove_file(&ballast).unwrap();
    let t = settle(&a, &id, Duration::from_secs(90));
    assert_eq!(t["state"], "done", "{t}\n{}", b.logs());
    assert_eq!(t["sha256"], sha.as_str());
    assert!(
        t["bytes_sent"].as_u64().unwrap() < 2 * len as u64,
        "it started over instead of resuming: {t}"
    );
    assert!(same_file(
        &path,
        &b.path().join("received").join("dataset.bin")
    ));
    b.stop_daemon();
    drop(tmpfs);
}

fn same_file(x: &Path, y: &Path) -> bool {
    std::fs::read(x).unwrap() == std::fs::read(y).unwrap()
}
