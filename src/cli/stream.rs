//! `connect` and `listen`: the API connection becomes a byte stream; stdin is pumped to it
//! and it to stdout until both ends finish. With `--json`, only errors use the envelope: the
//! stream's bytes are the output.

use std::io::Write;
use std::time::Duration;

use super::output::{decode, paths, Output};
use crate::api::{Client, ConnectData, ListenData, Request};
use crate::error::{ErrorCode, PilotError};

/// Opens the stream `req` asks for (`connect` or `listen`) and pumps it.
pub fn run(req: &Request) -> Result<Output, PilotError> {
    run_within(req, None)
}

/// A plain `connect PEER PORT [--timeout S]`.
pub fn connect(peer: String, port: u16, timeout: Option<u64>) -> Result<Output, PilotError> {
    run_within(
        &Request::Connect { peer, port },
        timeout.map(Duration::from_secs),
    )
}

/// [`run`], giving up when the stream is not open within `within` (`connect --timeout`).
pub fn run_within(req: &Request, within: Option<Duration>) -> Result<Output, PilotError> {
    let client = Client::connect(&paths()?.socket)?;
    let (raw, mut reader, mut writer) = match within {
        Some(t) => client.open_stream_within(req, t)?,
        None => client.open_stream(req)?,
    };
    // The first answer says who is at the other end; nothing prints it, but it must be one.
    match req {
        Request::Listen { .. } => {
            decode::<ListenData>("listen", raw)?;
        }
        _ => {
            decode::<ConnectData>("connect", raw)?;
        }
    }
    let up = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = std::io::copy(&mut stdin, &mut writer);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut reader, &mut stdout).map_err(|e| {
        PilotError::new(
            ErrorCode::ConnectionFailed,
            format!("the stream broke: {e}"),
            "see the daemon log",
        )
    })?;
    let _ = stdout.flush();
    // Let what stdin still holds reach the peer (a reply written after the peer finished
    // sending), unless stdin is a terminal that may never end.
    // SAFETY: isatty only inspects file descriptor 0.
    if unsafe { libc::isatty(0) } == 0 {
        let _ = up.join();
    }
    Ok(Output::nothing())
}
