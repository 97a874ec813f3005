//! The README's first command, `scripts/demo.sh`, run both ways it supports: as root (network
//! namespaces, TUN) and as an unprivileged user (userspace mode on loopback, SOCKS5). Each run
//! must end in a real curl that fetched the worker's page across the overlay.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::netns::{assert_root, pilotctl};

const PAGE: &str = "hello from worker-node, across the pilot overlay";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh")
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn demo_as_root_uses_namespaces_and_tun_and_ends_in_curl() {
    assert_root();
    let out = Command::new("bash")
        .arg(script())
        .env("PILOT_BIN", pilotctl())
        .env("PILOT_DEMO_MODE", "netns")
        .stdin(Stdio::null())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(PAGE), "{stdout}");
    assert!(stdout.contains("trust is mutual"), "{stdout}");
}

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it with --include-ignored as root"]
fn demo_as_an_unprivileged_user_uses_userspace_mode_and_socks5() {
    assert_root();
    // A copy the unprivileged user can read and run, outside root-only directories.
    let dir = tempfile::Builder::new()
        .prefix("pilot-demo-user")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    let s = dir.path().join("scripts/demo.sh");
    std::fs::copy(script(), &s).unwrap();
    let bin = dir.path().join("pilotctl");
    std::fs::copy(pilotctl(), &bin).unwrap();
    for p in [&s, &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("TMPDIR={}", dir.path().display()))
        .arg(format!("PILOT_BIN={}", bin.display()))
        .arg("bash")
        .arg(&s)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run demo as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("--socks5-hostname"), "{stdout}");
    assert!(stdout.contains(PAGE), "{stdout}");
}
