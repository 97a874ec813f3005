//! One-shot streams over the local API: `connect --message` and `send` (one request, one
//! reply), `recv` (N connections from trusted peers, what each sent) and `bench` (bytes
//! through a peer's echo port 7: throughput and round-trip time).

use serde::Serialize;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::output::{decode, paths, Output};
use crate::api::{ConnectData, ListenData, Request};
use crate::error::{ErrorCode, PilotError};

/// The overlay port of the echo service.
pub const ECHO_PORT: u16 = 7;
/// The most one reply may hold (`send`, `connect --message`).
pub const MAX_REPLY: u64 = 16 << 20;
/// The most `bench` sends.
pub const MAX_BENCH_MB: u32 = 1024;

/// `send` and `connect --message`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Exchanged {
    /// The peer's public key.
    pub peer: String,
    /// Its overlay IPv6.
    pub ipv6: String,
    /// Its port.
    pub port: u16,
    /// Bytes sent.
    pub sent_bytes: usize,
    /// The reply (UTF-8, invalid sequences replaced).
    pub reply: String,
    /// The reply's length in bytes.
    pub reply_bytes: usize,
    /// False when the timeout cut the reply short (the peer had not closed its side).
    pub complete: bool,
}

/// What one peer sent to `recv`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// The peer's public key, if it is in the peer table.
    pub peer: Option<String>,
    /// Its hostname, if known.
    pub peer_hostname: Option<String>,
    /// Its overlay IPv6.
    pub peer_ipv6: String,
    /// What it sent (UTF-8, invalid sequences replaced).
    pub data: String,
    /// Its length in bytes.
    pub bytes: usize,
}

/// `recv`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceivedAll {
    /// Our overlay port.
    pub port: u16,
    /// One entry per connection, in order.
    pub received: Vec<Received>,
}

/// `bench`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BenchReport {
    /// The peer's public key.
    pub peer: String,
    /// Bytes sent (and echoed back).
    pub bytes: u64,
    /// Seconds from the first byte sent to the last byte echoed.
    pub seconds: f64,
    /// Throughput of the round trip, megabits per second (bytes × 8 / seconds / 10⁶).
    pub mbit_s: f64,
    /// Round-trip times of 1-byte echoes before the transfer, milliseconds.
    pub rtt_ms: Vec<f64>,
    /// Their mean.
    pub rtt_avg_ms: f64,
}

fn timed_out(what: &str) -> PilotError {
    PilotError::new(
        ErrorCode::Timeout,
        format!("{what} timed out"),
        "raise --timeout, check `pilotctl peers` and that the peer's service runs",
    )
}

fn broken(e: std::io::Error) -> PilotError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        return timed_out("the stream");
    }
    PilotError::new(
        ErrorCode::ConnectionFailed,
        format!("the stream broke: {e}"),
        "see the daemon log",
    )
}

/// Opens the stream `req` asks for, with every read and write bounded by `timeout`.
fn open(
    req: &Request,
    timeout: Option<Duration>,
) -> Result<(serde_json::Value, UnixStream), PilotError> {
    let socket = paths()?.socket;
    let mut s = UnixStream::connect(&socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            PilotError::not_running(format!("no daemon is listening on {}", socket.display()))
        }
        _ => broken(e),
    })?;
    s.set_read_timeout(timeout).map_err(broken)?;
    s.set_write_timeout(timeout).map_err(broken)?;
    let started = Instant::now();
    let raw = crate::api::stream::open(&mut s, req).map_err(|e| {
        let expired = timeout.is_some_and(|t| started.elapsed() >= t);
        if expired && e.code == ErrorCode::ConnectionFailed {
            timed_out("waiting for the daemon")
        } else {
            e
        }
    })?;
    Ok((raw, s))
}

/// Reads until the peer closes, `limit` bytes, or the socket's timeout: the bytes and whether
/// the peer closed.
fn read_reply(s: &mut UnixStream, limit: u64) -> Result<(Vec<u8>, bool), PilotError> {
    let mut buf = Vec::new();
    match s.take(limit).read_to_end(&mut buf) {
        Ok(_) => Ok((buf, true)),
        Err(e)
            if !buf.is_empty()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
        {
            Ok((buf, false))
        }
        Err(e) => Err(broken(e)),
    }
}

/// `send PEER PORT --data D` and `connect PEER [PORT] --message M`: one request, one reply.
pub fn send(peer: String, port: u16, data: &str, timeout: Duration) -> Result<Output, PilotError> {
    if port == 0 {
        return Err(PilotError::invalid(
            "port 0 is not a port",
            "use 1-65535, e.g. 1000",
        ));
    }
    let (raw, mut s) = open(&Request::Connect { peer, port }, Some(timeout))?;
    let c: ConnectData = decode("send", raw)?;
    s.write_all(data.as_bytes()).map_err(broken)?;
    s.shutdown(Shutdown::Write).map_err(broken)?;
    let (reply, complete) = read_reply(&mut s, MAX_REPLY)?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let out = Exchanged {
        peer: c.peer.to_string(),
        ipv6: c.ipv6.to_string(),
        port: c.port,
        sent_bytes: data.len(),
        reply_bytes: reply.len(),
        reply: text.clone(),
        complete,
    };
    Output::local(&out, super::escape::untrusted(&text).into_owned())
}

/// `recv PORT [--count N] [--timeout S]`.
pub fn recv(port: u16, count: u32, timeout: Option<Duration>) -> Result<Output, PilotError> {
    if port == 0 || count == 0 {
        return Err(PilotError::invalid(
            "port and --count must be at least 1",
            "e.g. pilotctl recv 1000 --count 2",
        ));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut received = Vec::new();
    for _ in 0..count {
        let left = match deadline {
            Some(d) => Some(
                d.checked_duration_since(Instant::now())
                    .filter(|l| !l.is_zero())
                    .ok_or_else(|| timed_out("recv"))?,
            ),
            None => None,
        };
        let (raw, mut s) = open(&Request::Listen { port }, left)?;
        let l: ListenData = decode("recv", raw)?;
        let (data, _) = read_reply(&mut s, MAX_REPLY)?;
        received.push(Received {
            peer: l.peer.map(|k| k.to_string()),
            peer_hostname: l.peer_hostname,
            peer_ipv6: l.peer_ipv6.to_string(),
            bytes: data.len(),
            data: String::from_utf8_lossy(&data).into_owned(),
        });
    }
    let text = super::render::recv_report(&received);
    Output::local(&ReceivedAll { port, received }, text)
}

/// `bench PEER [MB]`: five 1-byte echoes, then MB megabytes through the echo port.
pub fn bench(peer: String, mb: u32) -> Result<Output, PilotError> {
    if mb == 0 || mb > MAX_BENCH_MB {
        return Err(PilotError::invalid(
            format!("{mb} MB is out of range"),
            format!("send 1 to {MAX_BENCH_MB} MB, e.g. pilotctl bench worker-node 10"),
        ));
    }
    let timeout = Some(Duration::from_secs(30));
    let (raw, mut s) = open(
        &Request::Connect {
            peer,
            port: ECHO_PORT,
        },
        timeout,
    )?;
    let c: ConnectData = decode("bench", raw)?;
    let mut rtt_ms = Vec::new();
    let mut one = [0u8; 1];
    for i in 0..5u8 {
        let t = Instant::now();
        s.write_all(&[i]).map_err(broken)?;
        s.read_exact(&mut one).map_err(broken)?;
        rtt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let bytes = u64::from(mb) << 20;
    let mut writer = s.try_clone().map_err(broken)?;
    let started = Instant::now();
    let pump = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok::<_, std::io::Error>(())
    });
    let got = std::io::copy(&mut (&mut s).take(bytes), &mut std::io::sink()).map_err(broken)?;
    let seconds = started.elapsed().as_secs_f64();
    pump.join()
        .map_err(|_| PilotError::internal("the bench writer panicked"))?
        .map_err(broken)?;
    if got < bytes {
        return Err(PilotError::new(
            ErrorCode::ConnectionFailed,
            format!("the echo stopped after {got} of {bytes} bytes"),
            "see the daemon logs of both nodes",
        ));
    }
    let report = BenchReport {
        peer: c.peer.to_string(),
        bytes,
        mbit_s: bytes as f64 * 8.0 / seconds.max(1e-9) / 1e6,
        seconds,
        rtt_avg_ms: rtt_ms.iter().sum::<f64>() / rtt_ms.len() as f64,
        rtt_ms,
    };
    let text = super::render::bench(&report);
    Output::local(&report, text)
}
