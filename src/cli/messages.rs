//! `send-message` (with `--wait`), `reply`, `inbox` (filters, `read ID`) and `events`: the
//! payload read from `--data`, `--file` or stdin, the `--since` time, and the event stream.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine;

use super::args::{InboxArgs, InboxCmd, ReplyArgs, SendMessageArgs};
use super::output::{ask_within, paths, Answer, Output};
use super::render;
use crate::api::{Client, InboxData, InboxEntry, Request, SentMessage};
use crate::error::{ErrorCode, PilotError};

/// How much longer than `--wait` the CLI waits for the daemon's answer.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// The payload as the API takes it: text, JSON text, or (binary) base64 of the bytes, from
/// `--data`, `--file`, or stdin when neither is given.
pub fn payload(
    data: Option<String>,
    file: Option<&Path>,
    kind: &str,
) -> Result<String, PilotError> {
    let bytes = match (data, file) {
        (Some(d), _) => d.into_bytes(),
        (None, Some(path)) => std::fs::read(path).map_err(|e| {
            PilotError::invalid(
                format!("cannot read {}: {e}", path.display()),
                "give a readable file with --file PATH",
            )
        })?,
        (None, None) => {
            // SAFETY: isatty only inspects file descriptor 0.
            if unsafe { libc::isatty(0) } == 1 {
                return Err(PilotError::invalid(
                    "no payload: give --data, --file, or pipe it to stdin",
                    "e.g. pilotctl send-message worker-node --data hello",
                ));
            }
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map_err(|e| {
                PilotError::invalid(format!("cannot read stdin: {e}"), "give --data or --file")
            })?;
            b
        }
    };
    if kind == "binary" {
        return Ok(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    String::from_utf8(bytes).map_err(|_| {
        PilotError::invalid(
            format!("a {kind} payload must be UTF-8 text"),
            "send arbitrary bytes with --type binary",
        )
    })
}

/// `send-message PEER [--data D | --file PATH] [--type T] [--wait [SECONDS]]`.
pub fn send_message(a: SendMessageArgs) -> Result<Output, PilotError> {
    let data = payload(a.data, a.file.as_deref(), &a.kind)?;
    let wait = match a.wait {
        Some(s) if !(0.0..=600.0).contains(&s) => {
            return Err(PilotError::invalid(
                format!("--wait {s}: at most 600 seconds"),
                "e.g. --wait 30",
            ))
        }
        w => w.map(Duration::from_secs_f64),
    };
    let req = Request::SendMessage {
        peer: a.peer,
        data,
        kind: Some(a.kind),
        wait_ms: wait.map(|w| w.as_millis() as u64),
    };
    let answer: Answer<SentMessage> =
        ask_within("send-message", &req, wait.unwrap_or_default() + WAIT_MARGIN)?;
    if let Some(w) = wait {
        if answer.typed.reply.as_ref().is_none_or(|r| r.is_none()) {
            return Err(PilotError::new(
                ErrorCode::Timeout,
                format!(
                    "no reply to message {} within {:.1} s (it is {})",
                    answer.typed.id,
                    w.as_secs_f64(),
                    render::delivery_word(answer.typed.status)
                ),
                format!(
                    "a later reply lands in the inbox: `pilotctl inbox` shows it with in_reply_to {}",
                    answer.typed.id
                ),
            ));
        }
    }
    Ok(answer.render(render::sent_message))
}

/// `reply ID [--data D | --file PATH] [--type T]`.
pub fn reply(a: ReplyArgs) -> Result<Output, PilotError> {
    let data = payload(a.data, a.file.as_deref(), &a.kind)?;
    let req = Request::Reply {
        id: a.id,
        data,
        kind: Some(a.kind),
    };
    Ok(ask_within::<SentMessage>("reply", &req, WAIT_MARGIN)?.render(render::sent_message))
}

/// `inbox [--from PEER] [--since T] [--limit N] [--clear]` and `inbox read ID`.
pub fn inbox(a: InboxArgs) -> Result<Output, PilotError> {
    if let Some(InboxCmd::Read { id }) = a.cmd {
        let req = Request::InboxRead { id };
        return Ok(
            ask_within::<InboxEntry>("inbox read", &req, WAIT_MARGIN)?.render(render::inbox_entry)
        );
    }
    let now_ms = crate::clock::unix_ms_now();
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ms))
        .transpose()?;
    let req = Request::Inbox {
        clear: a.clear,
        from: a.from,
        since,
        limit: a.limit,
    };
    Ok(ask_within::<InboxData>("inbox", &req, WAIT_MARGIN)?.render(render::inbox))
}

fn bad_since(s: &str) -> PilotError {
    PilotError::invalid(
        format!("--since `{s}` is neither a time nor a duration"),
        "give a duration (90s, 10m, 2h, 1d), unix seconds, or RFC 3339 (2026-12-05T12:00:00Z)",
    )
}

/// `--since`: a duration back from `now_ms` (`90s`, `10m`, `2h`, `1d`), unix seconds, or an
/// RFC 3339 time; as unix ms.
pub fn parse_since(s: &str, now_ms: u64) -> Result<u64, PilotError> {
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad_since(s))?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(secs * 1000)));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(|n| n.saturating_mul(1000))
            .map_err(|_| bad_since(s));
    }
    rfc3339_ms(t).ok_or_else(|| bad_since(s))
}

/// Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as unix ms.
fn rfc3339_ms(t: &str) -> Option<u64> {
    let num = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = f.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let v = o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs * 1000 + ms).ok()
}

/// `events [--count N] [--timeout S]`: prints each event as it comes (NDJSON with `json`)
/// until `count` events, `timeout` seconds, or the daemon stops.
pub fn events(
    count: Option<usize>,
    timeout: Option<f64>,
    json: bool,
) -> Result<Output, PilotError> {
    let events = Client::connect(&paths()?.socket)?.events()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for e in events {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    let deadline = timeout.map(|s| std::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut out = std::io::stdout().lock();
    let mut seen = 0usize;
    while count.is_none_or(|n| seen < n) {
        let next = match deadline {
            Some(d) => {
                match rx.recv_timeout(d.saturating_duration_since(std::time::Instant::now())) {
                    Ok(e) => e,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(_) => return Ok(Output::nothing()),
                }
            }
            None => match rx.recv() {
                Ok(e) => e,
                Err(_) => return Ok(Output::nothing()),
            },
        };
        let e = next?;
        let line = if json {
            serde_json::to_string(&e).map_err(|e| PilotError::internal(e.to_string()))?
        } else {
            super::escape::terminal(&render::event(&e)).into_owned()
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
        seen += 1;
    }
    Ok(Output::nothing())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_unix_seconds_and_rfc3339() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("90s", now).unwrap(), now - 90_000);
        assert_eq!(parse_since("10m", now).unwrap(), now - 600_000);
        assert_eq!(parse_since("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_since("1d", now).unwrap(), now - 86_400_000);
        assert_eq!(parse_since("1700000000", now).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_since("2023-11-14T23:13:20.5+01:00", now).unwrap(),
            1_700_000_000_500
        );
        for bad in [
            "",
            "x",
            "10y",
            "m",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn binary_payloads_are_base64_and_text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        std::fs::write(&f, [0u8, 159, 146, 150]).unwrap();
        assert_eq!(payload(None, Some(&f), "binary").unwrap(), "AJ+Slg==");
        assert_eq!(
            payload(None, Some(&f), "text").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(payload(Some("hi".into()), None, "text").unwrap(), "hi");
        assert_eq!(payload(Some("hi".into()), None, "binary").unwrap(), "aGk=");
    }
}
