//! `send-file PEER PATH [--name NAME] [--wait [SECONDS]]`: the path is made absolute here (the
//! daemon runs elsewhere); with `--wait`, the command ends when the peer has the file.

use std::path::Path;
use std::time::Duration;

use super::escape::untrusted;
use super::output::{ask_within, Output};
use super::render;
use crate::api::{Request, Transfer, TransferState};
use crate::error::{ErrorCode, PilotError};

/// The longest `--wait`: a day.
const MAX_WAIT_SECS: f64 = 86_400.0;
/// How much longer than `--wait` the CLI waits for the daemon's answer.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// `send-file`.
pub fn send_file(
    peer: String,
    path: &Path,
    name: Option<String>,
    wait: Option<f64>,
) -> Result<Output, PilotError> {
    let wait = match wait {
        Some(s) if !(0.0..=MAX_WAIT_SECS).contains(&s) => {
            return Err(PilotError::invalid(
                format!("--wait {s}: between 0 and {MAX_WAIT_SECS} seconds"),
                "e.g. --wait 600; `pilotctl transfers` follows a transfer without waiting",
            ))
        }
        w => w.map(Duration::from_secs_f64),
    };
    let abs = std::fs::canonicalize(path).map_err(|e| {
        PilotError::invalid(
            format!("cannot read {}: {e}", path.display()),
            "give the path of a file, e.g. pilotctl send-file worker-node ./results.csv",
        )
    })?;
    let req = Request::SendFile {
        peer,
        path: abs.display().to_string(),
        name,
        wait_ms: wait.map(|w| w.as_millis() as u64),
    };
    let timeout = wait.unwrap_or_default() + WAIT_MARGIN;
    let answer = ask_within::<Transfer>("send-file", &req, timeout)?;
    let Some(w) = wait else {
        return Ok(answer.render(render::sent_file));
    };
    match answer.typed.state {
        TransferState::Done => Ok(answer.render(render::delivered_file)),
        TransferState::Failed => Err(failed(&answer.typed)),
        _ => Err(PilotError::new(
            ErrorCode::Timeout,
            format!(
                "transfer {} is not delivered within {:.1} s ({} of {} bytes confirmed)",
                answer.typed.id,
                w.as_secs_f64(),
                answer.typed.offset,
                answer.typed.size
            ),
            "the transfer goes on: `pilotctl transfers` shows its progress",
        )),
    }
}

/// The error of a transfer that failed for good, with the receiver's or our code.
fn failed(t: &Transfer) -> PilotError {
    let (code, message) = t
        .error
        .as_ref()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .unwrap_or(("unknown", "no reason recorded"));
    let kind = match code {
        "file_changed" | "file_unreadable" => ErrorCode::InvalidArgument,
        _ => ErrorCode::ConnectionFailed,
    };
    PilotError::new(
        kind,
        format!(
            "transfer {} failed ({}): {}",
            untrusted(&t.id),
            untrusted(code),
            untrusted(message)
        ),
        "see `pilotctl transfers`; a refusal's code says what the receiver objected to",
    )
}
