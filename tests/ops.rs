//! Operations: systemd readiness and watchdog through a fake notify socket, reload on SIGHUP,
//! journal-style logs, the Prometheus endpoints scraped during a transfer (and parsed as the
//! exposition format), no key material in the logs of a full run, the installer into a
//! temporary DESTDIR, and the units measured by `systemd-analyze`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::home::{Home, BIN};
use support::net::{free_tcp_port, free_udp_port};
use support::process::{signal, terminate, wait_until, Guard, STOP_GRACE};
use support::socks::{byte_server, socks_connect};

/// A fake systemd notification socket: every datagram, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    rx: mpsc::Receiver<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("pilot-notify")
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((Instant::now(), text)).is_err() {
                    return;
                }
            }
        });
        NotifySocket {
            path,
            rx,
            _dir: dir,
        }
    }

    /// The next message containing `line` (as a whole line), within `timeout`; every message
    /// seen on the way is appended to `seen`.
    fn wait_for(&self, line: &str, timeout: Duration, seen: &mut Vec<String>) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok((at, msg)) = self.rx.recv_timeout(left) else {
                return None;
            };
            seen.push(msg.clone());
            if msg.lines().any(|l| l == line) {
                return Some(at);
            }
        }
        None
    }

    /// Arrival times of the messages holding `line` during `window`.
    fn collect(&self, line: &str, window: Duration, seen: &mut Vec<String>) -> Vec<Instant> {
        let deadline = Instant::now() + window;
        let mut at = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, msg)) => {
                    if msg.lines().any(|l| l == line) {
                        at.push(t);
                    }
                    seen.push(msg);
                }
                Err(_) => break,
            }
        }
        at
    }
}

/// `GET path` on the daemon's API socket: the status line and body.
fn api_get(socket: &Path, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: pilot\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let err = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Pets must come at least as often as systemd needs (`timeout`), and not as a flood.
fn assert_cadence(pets: &[Instant], timeout: Duration, seen: &[String]) {
    assert!(pets.len() >= 3, "too few WATCHDOG=1: {seen:?}");
    for w in pets.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap < timeout, "a {gap:?} gap between pets: {seen:?}");
        assert!(gap > timeout / 8, "pets {gap:?} apart: a flood");
    }
}

#[test]
fn the_daemon_is_ready_only_once_its_api_answers_pets_the_watchdog_reloads_and_says_stopping() {
    let home = Home::new("pilot-ops");
    let notify = NotifySocket::new();
    let log = home.path().join("daemon.out");
    let socket = home.path().join("pilot.sock");
    let mut child = spawn_logged(
        home.command()
            .args(["daemon", "run", "--mode", "userspace"])
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "2000000")
            // The config's log_level rules (a reload changes it).
            .env_remove("PILOT_LOG")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM"),
        &log,
    );
    let mut seen = Vec::new();
    let ready = notify.wait_for("READY=1", Duration::from_secs(20), &mut seen);
    // The moment READY=1 arrives, the API must already answer.
    let answer = api_get(&socket, "/v1/info").unwrap_or_default();
    assert!(ready.is_some(), "no READY=1: {seen:?}\n{}", read(&log));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        seen[0].contains("STATUS=starting"),
        "the first message is a starting status: {seen:?}"
    );
    let ready_msg = seen.last().unwrap().clone();
    assert!(ready_msg.contains("STATUS=running: "), "{ready_msg}");
    assert!(ready_msg.contains("userspace mode"), "{ready_msg}");

    let pets = notify.collect("WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert_cadence(&pets, Duration::from_secs(2), &seen);

    // A reload applies log_level and names what needs a restart.
    std::fs::write(
        home.path().join("config.toml"),
        "log_level = \"debug\"\n[socks5]\nlisten = \"127.0.0.1:0\"\n[tunnel]\nlisten_port = 1\n\
         [trust]\nallow = [\"orchestrator\"]\n",
    )
    .unwrap();
    signal(child.id(), libc::SIGHUP);
    assert!(
        notify
            .wait_for("RELOADING=1", Duration::from_secs(5), &mut seen)
            .is_some(),
        "{seen:?}"
    );
    assert!(notify
        .wait_for("READY=1", Duration::from_secs(5), &mut seen)
        .is_some());
    let after = seen.last().unwrap();
    assert!(
        after.contains("only a restart applies them: tunnel"),
        "{after}"
    );
    let text = read(&log);
    assert!(
        text.contains("applied log_level = debug, trust.allow (1 entries)"),
        "{text}"
    );
    assert!(
        text.contains("only a restart applies them: tunnel"),
        "{text}"
    );
    assert!(
        !text.contains("only a restart applies them: trust"),
        "{text}"
    );

    signal(child.id(), libc::SIGTERM);
    assert!(
        notify
            .wait_for("STOPPING=1", Duration::from_secs(10), &mut seen)
            .is_some(),
        "no STOPPING=1: {seen:?}"
    );
    let status = terminate(&mut child, STOP_GRACE).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", read(&log));
}

#[test]
fn the_registry_notifies_systemd_and_logs_journal_priorities_without_timestamps() {
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("registry.out");
    let err = std::fs::File::create(&log).unwrap();
    // JOURNAL_STREAM names our stderr, as systemd sets it when stderr is the journal.
    let journal = {
        use std::os::unix::fs::MetadataExt;
        let st = err.metadata().unwrap();
        format!("{}:{}", st.dev(), st.ino())
    };
    let child = Command::new(BIN)
        .args(["registry", "run", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("state"))
        .env("PILOT_HOME", dir.path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .env("JOURNAL_STREAM", &journal)
        .env("PILOT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let mut seen = Vec::new();
    assert!(
        notify
            .wait_for("READY=1", Duration::from_secs(20), &mut seen)
            .is_some(),
        "{seen:?}\n{}",
        read(&log)
    );
    assert!(
        seen.last()
            .unwrap()
            .contains("STATUS=running: UDP 127.0.0.1:"),
        "{seen:?}"
    );
    let pets = notify.collect("WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert_cadence(&pets, Duration::from_secs(2), &seen);
    signal(child.0.id(), libc::SIGTERM);
    assert!(notify
        .wait_for("STOPPING=1", Duration::from_secs(10), &mut seen)
        .is_some());
    let status = terminate(&mut child.0, STOP_GRACE).expect("exits on SIGTERM");
    assert!(status.success());

    let text = read(&log);
    let running = text
        .lines()
        .find(|l| l.contains("registry running"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(running.starts_with("<6>"), "{running}");
    assert!(!running.contains("Z "), "no timestamp of ours: {running}");
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics and secrets: a registry and two userspace daemons on loopback, a handshake, a
// transfer through the SOCKS5 proxy and a message.

/// `GET /metrics` on `addr`: the body, after checking status and content type.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics on {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    // The body may be chunked.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// Parses the OpenMetrics/Prometheus text format strictly enough to catch a malformed line:
/// `# TYPE`/`# HELP`/`# UNIT` lines, samples `name{k="v",...} value` whose name belongs to a
/// declared family, `# EOF` last. Returns each sample (name with labels) and its value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let (kw, name) = (it.next().unwrap(), it.next().expect("family name"));
            assert!(valid_name(name), "bad family name in {line:?}");
            match kw {
                "TYPE" => {
                    let ty = it.next().expect("type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "unknown",
                            "info",
                            "stateset",
                            "gaugehistogram"
                        ]
                        .contains(&ty),
                        "{line:?}"
                    );
                    assert!(
                        families.insert(name.to_string(), ty.to_string()).is_none(),
                        "family declared twice: {line:?}"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    assert!(valid_name(k), "bad label name in {line:?}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line:?}");
                }
            }
        }
        let family = families
            .keys()
            .filter(|f| {
                name == f.as_str()
                    || name.strip_prefix(f.as_str()).is_some_and(|s| {
                        ["_total", "_created", "_bucket", "_count", "_sum", "_info"].contains(&s)
                    })
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample of no declared family: {line:?}"));
        if families[family] == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "{line:?}"
            );
            assert!(value >= 0.0, "{line:?}");
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate {line:?}"
        );
    }
    samples
}

/// Every secret form of an identity key file's seed (and its WireGuard key) a log could show.
fn secret_forms(key_file: &Path) -> Vec<String> {
    use base64::Engine;
    let text = read(key_file);
    let b64 = text
        .split_whitespace()
        .nth(1)
        .expect("key file")
        .to_string();
    let seed = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let id = pilot::identity::Identity::from_seed(seed.clone().try_into().unwrap());
    let wg = id.wg_secret().to_bytes();
    let mut forms = Vec::new();
    for bytes in [seed.as_slice(), wg.as_slice()] {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(hex.to_uppercase());
        forms.push(hex);
        forms.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        forms.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        forms.push(format!("{bytes:?}"));
        forms.push(format!("{bytes:?}").replace(' ', ""));
    }
    forms.push(b64);
    forms
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", samples.keys()))
}

#[test]
fn metrics_move_during_a_transfer_parse_as_exposition_and_no_log_holds_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (reg_port, reg_metrics) = (free_udp_port(), format!("127.0.0.1:{}", free_tcp_port()));
    let reg_addr = format!("127.0.0.1:{reg_port}");
    let reg_cfg = dir.path().join("registry.toml");
    std::fs::write(
        &reg_cfg,
        format!(
            "listen = \"{reg_addr}\"\nstate_dir = \"{}\"\n[metrics]\nlisten = \"{reg_metrics}\"\n",
            dir.path().join("reg-state").display()
        ),
    )
    .unwrap();
    let reg_log = dir.path().join("registry.out");
    let _registry = Guard(spawn_logged(
        Command::new(BIN)
            .args(["registry", "run", "--config"])
            .arg(&reg_cfg)
            .env("PILOT_HOME", dir.path())
            .env("PILOT_LOG", "debug"),
        &reg_log,
    ));
    assert!(wait_until(Duration::from_secs(20), || read(&reg_log)
        .contains("registry running")));

    let a = Home::new("pilot-ops");
    let b = Home::new("pilot-ops");
    let a_metrics = format!("127.0.0.1:{}", free_tcp_port());
    let b_metrics = format!("127.0.0.1:{}", free_tcp_port());
    let served = byte_server(4 << 20, 4);
    for (h, name, extra) in [
        (
            &a,
            "node-a",
            format!("log_format = \"json\"\n[metrics]\nlisten = \"{a_metrics}\"\n"),
        ),
        (
            &b,
            "node-b",
            format!(
                "[[expose]]\nport = 8080\nto = \"127.0.0.1:{served}\"\n[metrics]\nlisten = \"{b_metrics}\"\n"
            ),
        ),
    ] {
        std::fs::write(
            h.path().join("config.toml"),
            format!(
                "mode = \"userspace\"\nhostname = \"{name}\"\nregistries = [\"{reg_addr}\"]\n{extra}[socks5]\nlisten = \"127.0.0.1:0\"\n"
            ),
        )
        .unwrap();
        h.start_env(&[], &[("PILOT_LOG", "debug")]);
    }
    let before = parse_exposition(&scrape(&a_metrics));
    assert_eq!(value(&before, "pilot_data_plane_up"), 1.0);
    assert_eq!(value(&before, "pilot_peers{path=\"direct\"}"), 0.0);

    // Trust: a asks, b approves.
    assert!(
        wait_until(Duration::from_secs(15), || a
            .json(&["handshake", "node-b", "metrics test"])
            .0
            == 0),
        "handshake: {}",
        a.logs()
    );
    assert!(
        wait_until(Duration::from_secs(15), || b.json(&["approve", "node-a"]).0
            == 0),
        "approve: {}",
        b.logs()
    );
    let proxy = a.ok(&["info"])["socks5"].as_str().unwrap().to_string();
    let mut stream = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            stream = std::panic::catch_unwind(|| socks_connect(&proxy, "node-b.pilot", 8080))
                .ok()
                .and_then(|(code, s)| (code == 0).then_some(s));
            stream.is_some()
        }),
        "no tunnel: {}",
        a.logs()
    );
    let mut stream = stream.unwrap();
    let mut got = vec![0u8; 1 << 20];
    stream.read_exact(&mut got).unwrap();
    let during = parse_exposition(&scrape(&a_metrics));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert_eq!(got.len() + rest.len(), 4 << 20);
    let after = parse_exposition(&scrape(&a_metrics));

    let rx = "pilot_tunnel_bytes_total{direction=\"rx\"}";
    let packets = "pilot_tunnel_packets_total{direction=\"rx\"}";
    assert!(value(&during, rx) >= (1 << 20) as f64, "{during:?}");
    assert!(value(&after, rx) >= value(&during, rx) + (2 << 20) as f64);
    assert!(value(&after, packets) > value(&during, packets));
    assert!(
        value(&during, "pilot_peers{path=\"direct\"}")
            + value(&during, "pilot_peers{path=\"relay\"}")
            >= 1.0
    );
    assert_eq!(value(&after, "pilot_trust_peers{state=\"trusted\"}"), 1.0);
    assert!(value(&after, "pilot_handshakes_completed_total") >= 1.0);
    assert_eq!(
        value(&after, "pilot_trust_events_total{event=\"trusted\"}"),
        1.0
    );
    assert!(value(&after, "pilot_peer_transitions_total{to=\"up\"}") >= 1.0);
    assert!(value(&after, "pilot_path_changes_total{path=\"direct\"}") >= 1.0);
    assert!(value(&after, "process_resident_memory_bytes") > 0.0);
    assert!(value(&after, "process_cpu_seconds_total") >= 0.0);

    let m = a.ok(&["send-message", "node-b", "--data", "{\"ops\":1}"]);
    assert_eq!(m["status"], "delivered", "{m}");
    let sent = parse_exposition(&scrape(&a_metrics));
    assert_eq!(value(&sent, "pilot_messages_delivered_total"), 1.0);
    assert_eq!(
        value(&sent, "pilot_messages_queued{last_attempt=\"pending\"}"),
        0.0
    );
    assert!(sent.contains_key("pilot_message_delivery_retries_total"));
    let got = parse_exposition(&scrape(&b_metrics));
    assert_eq!(value(&got, "pilot_messages_received_total"), 1.0);
    assert_eq!(value(&got, "pilot_inbox_messages"), 1.0);
    assert_eq!(
        value(&got, "pilot_trust_events_total{event=\"request_received\"}"),
        1.0
    );
    assert!(value(&got, "pilot_tunnel_bytes_total{direction=\"tx\"}") >= (4 << 20) as f64);
    let reg = parse_exposition(&scrape(&reg_metrics));
    assert!(
        value(
            &reg,
            "pilot_registry_datagrams_received_total{type=\"register\"}"
        ) >= 2.0
    );
    assert!(
        value(
            &reg,
            "pilot_registry_datagrams_received_total{type=\"trust_request\"}"
        ) >= 1.0
    );
    assert!(value(&reg, "pilot_registry_requests_total{result=\"accepted\"}") >= 4.0);
    assert!(value(&reg, "pilot_registry_nodes_online") >= 2.0);
    assert!(reg.contains_key("pilot_registry_nonce_cache_entries"));
    assert!(reg.contains_key("pilot_registry_held_messages"));

    // JSON logs are JSON, one object a line.
    let a_log = a.bg_log();
    let json_lines = a_log.lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines > 5, "{a_log}");
    for l in a_log.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }

    // No secret in any log of the run.
    a.ok(&["daemon", "stop"]);
    b.ok(&["daemon", "stop"]);
    let logs = [a.bg_log(), b.bg_log(), read(&reg_log)].join("\n");
    let mut secrets = secret_forms(&a.path().join("identity.key"));
    secrets.extend(secret_forms(&b.path().join("identity.key")));
    secrets.extend(secret_forms(&dir.path().join("reg-state/registry.key")));
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a log holds key material ({s})");
    }
    assert!(logs.len() > 2000, "the logs are too short to mean anything");
}

// ---------------------------------------------------------------------------------------------
// The units, measured by systemd itself, and the installer.

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";

/// The systemd units of the repository, each with the highest exposure
/// `systemd-analyze security --offline=yes` may give it, and whether it is a user unit.
const UNITS: &[(&str, f64, bool)] = &[
    ("pilot-registry.service", 2.0, false),
    ("pilot.service", 3.0, false),
    // A user unit cannot set User= or drop capabilities it never had; 1.5 measured.
    ("pilot-user.service", 2.0, true),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `systemd-analyze`, or `None` (with a note) where it is missing outside CI.
fn systemd_analyze() -> Option<&'static str> {
    if Path::new(SYSTEMD_ANALYZE).exists() {
        return Some(SYSTEMD_ANALYZE);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{SYSTEMD_ANALYZE} is missing: .ci/run installs the systemd package"
    );
    eprintln!("SKIPPED: {SYSTEMD_ANALYZE} is missing (apt-get install systemd)");
    None
}

#[test]
fn the_units_verify_clean_and_their_exposure_stays_under_the_thresholds() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for (unit, max, user) in UNITS {
        // The unit as installed, its ExecStart pointing at a binary that exists here.
        let text = read(&repo().join("systemd").join(unit))
            .replace("/usr/local/bin/pilotctl", BIN)
            .replace("%h/.cargo/bin/pilotctl", BIN);
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let run = |args: &[&str]| {
            let mut c = Command::new(analyze);
            if *user {
                c.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
            }
            let out = c.args(args).arg(&path).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, out) = run(&["verify", "--man=no"]);
        assert!(ok && out.trim().is_empty(), "verify {unit}: {out}");
        let (_, out) = run(&["security", "--offline=yes", "--no-pager"]);
        let level: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {out}"));
        eprintln!("{unit}: exposure {level}");
        assert!(level <= *max, "{unit}: exposure {level} > {max}:\n{out}");
    }
}

/// Every path under `root` with its permission bits.
fn tree(root: &Path) -> BTreeMap<String, u32> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, meta.permissions().mode() & 0o7777);
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn install(destdir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .args(args)
        .env("DESTDIR", destdir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_installer_puts_each_file_in_place_with_its_mode_keeps_configs_and_uninstalls_exactly() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    // What was there before: an edited config and another unit.
    std::fs::create_dir_all(d.join("etc/pilot")).unwrap();
    std::fs::create_dir_all(d.join("etc/systemd/system")).unwrap();
    std::fs::write(d.join("etc/pilot/pilot.toml"), "# mine\n").unwrap();
    std::fs::write(d.join("etc/systemd/system/other.service"), "[Unit]\n").unwrap();
    let before = tree(d);

    let (ok, out) = install(d, &["--prefix", "/opt/pilot", "--binary", BIN]);
    assert!(ok, "{out}");
    let t = tree(d);
    for (path, mode) in [
        ("opt/pilot/bin/pilotctl", 0o755),
        ("etc/systemd/system/pilot.service", 0o644),
        ("etc/systemd/system/pilot-registry.service", 0o644),
        ("etc/systemd/user/pilot.service", 0o644),
        ("etc/pilot/registry.toml", 0o644),
        ("etc/pilot", 0o755),
        ("var/lib/pilot", 0o700),
        ("var/lib/pilot-registry", 0o700),
    ] {
        assert_eq!(t.get(path), Some(&mode), "{path}: {t:#?}");
    }
    assert_eq!(read(&d.join("etc/pilot/pilot.toml")), "# mine\n", "kept");
    assert!(out.contains("kept     /etc/pilot/pilot.toml"), "{out}");
    for unit in [
        "etc/systemd/system/pilot.service",
        "etc/systemd/user/pilot.service",
    ] {
        let text = read(&d.join(unit));
        assert!(
            text.contains("ExecStart=/opt/pilot/bin/pilotctl "),
            "{unit}: {text}"
        );
    }
    assert_eq!(
        std::fs::read(d.join("opt/pilot/bin/pilotctl")).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    // The next two commands.
    assert!(out.contains("  systemctl daemon-reload\n"), "{out}");
    assert!(out.contains("  systemctl enable --now pilot"), "{out}");
    // A second install refuses rather than mixing two.
    assert!(!install(d, &["--prefix", "/opt/pilot", "--binary", BIN]).0);

    let (ok, out) = install(d, &["--prefix", "/opt/pilot", "--uninstall"]);
    assert!(ok, "{out}");
    assert_eq!(
        tree(d),
        before,
        "uninstall removes exactly what was installed:\n{out}"
    );

    // A state directory holding data is kept, and said so.
    assert!(install(d, &["--binary", BIN]).0);
    std::fs::write(d.join("var/lib/pilot/identity.key"), "x").unwrap();
    let (ok, out) = install(d, &["--uninstall"]);
    assert!(ok, "{out}");
    assert!(out.contains("kept     /var/lib/pilot (not empty"), "{out}");
    assert!(d.join("var/lib/pilot/identity.key").exists());
    assert!(!d.join("usr/local/bin/pilotctl").exists());
}

#[test]
fn the_debian_package_metadata_names_files_that_exist_and_its_drop_ins_only_move_the_binary() {
    let manifest: toml::Value = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("assets");
    let mut targets = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let (src, dest, mode) = (
            a[0].as_str().unwrap(),
            a[1].as_str().unwrap(),
            a[2].as_str().unwrap(),
        );
        assert!(
            src.starts_with("target/release/") || repo().join(src).is_file(),
            "asset {src} is missing"
        );
        assert!(mode == "644" || mode == "755", "{src}: mode {mode}");
        targets.push(dest.to_string());
    }
    assert!(targets.contains(&"usr/bin/".to_string()));
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    assert!(repo().join(scripts).join("postinst").is_file());
    // Each drop-in's ExecStart is its unit's, with the binary in /usr/bin.
    for (unit, drop_in) in [
        ("pilot.service", "pilot.service.d"),
        ("pilot-registry.service", "pilot-registry.service.d"),
        ("pilot-user.service", "user/pilot.service.d"),
    ] {
        let exec = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with("ExecStart=") && l.len() > "ExecStart=".len())
                .map(|l| l.split_once(" ").unwrap().1.to_string())
                .collect::<Vec<_>>()
        };
        let unit_text = read(&repo().join("systemd").join(unit));
        let drop_text = read(
            &repo()
                .join("systemd/deb")
                .join(drop_in)
                .join("package.conf"),
        );
        assert!(
            drop_text.contains("\nExecStart=\n"),
            "{drop_in} clears ExecStart"
        );
        assert!(
            drop_text.contains("ExecStart=/usr/bin/pilotctl "),
            "{drop_in}"
        );
        assert_eq!(exec(&unit_text), exec(&drop_text), "{unit} vs {drop_in}");
    }
}
