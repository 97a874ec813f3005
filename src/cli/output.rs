//! What a command produces and how it reaches the user: the daemon's answer decoded into its
//! type, the JSON envelope (`--json`) or the text rendering, and errors as code + message + hint.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::escape::{terminal, untrusted};
use crate::api::{Client, Envelope, Request};
use crate::error::PilotError;
use crate::state::paths::StatePaths;

/// What a command produced: data for the envelope plus its text rendering.
#[derive(Debug)]
pub struct Output {
    /// The envelope's `data`.
    pub data: serde_json::Value,
    /// The text shown without `--json` (nothing when empty).
    pub text: String,
}

impl Output {
    /// Output of a command that runs here (not in the daemon): its typed data and its text.
    pub fn local<T: Serialize>(data: &T, text: impl Into<String>) -> Result<Self, PilotError> {
        let data = serde_json::to_value(data)
            .map_err(|e| PilotError::internal(format!("cannot encode the output: {e}")))?;
        Ok(Output {
            data,
            text: text.into(),
        })
    }

    /// Output of a stream command: its bytes went to stdout already.
    pub fn nothing() -> Self {
        Output {
            data: serde_json::Value::Null,
            text: String::new(),
        }
    }

    /// Prints the output: the envelope with `--json` (exact), else the text (if any) with
    /// any control character a renderer let through escaped.
    pub fn print(self, json: bool) {
        if json {
            let env = Envelope::Ok { data: self.data };
            match serde_json::to_string(&env) {
                Ok(line) => println!("{line}"),
                Err(e) => print_error(true, &PilotError::internal(e.to_string())),
            }
        } else if !self.text.is_empty() {
            println!("{}", terminal(self.text.trim_end()));
        }
    }
}

/// A daemon answer decoded into its type, kept beside the JSON it came in (which `--json`
/// prints unchanged).
#[derive(Debug)]
pub struct Answer<T> {
    /// The decoded answer.
    pub typed: T,
    /// The answer as the daemon sent it.
    pub raw: serde_json::Value,
}

impl<T> Answer<T> {
    /// The output: the raw answer for the envelope, `render` of the typed one for the text.
    pub fn render(self, render: impl FnOnce(&T) -> String) -> Output {
        Output {
            text: render(&self.typed),
            data: self.raw,
        }
    }
}

/// Sends `req` to the daemon and decodes its answer as `T`; `command` names it in errors.
pub fn ask<T: DeserializeOwned>(command: &str, req: &Request) -> Result<Answer<T>, PilotError> {
    let raw = Client::connect(&paths()?.socket)?.call(req)?;
    let typed = decode(command, raw.clone())?;
    Ok(Answer { typed, raw })
}

/// Sends `req` and decodes its answer, waiting up to `timeout` for the daemon (for requests
/// that wait themselves, e.g. `wait_ms`).
pub fn ask_within<T: DeserializeOwned>(
    command: &str,
    req: &Request,
    timeout: std::time::Duration,
) -> Result<Answer<T>, PilotError> {
    let raw = Client::connect(&paths()?.socket)?.call_within(req, timeout)?;
    let typed = decode(command, raw.clone())?;
    Ok(Answer { typed, raw })
}

/// Decodes the daemon's answer to `command`: one that does not match its type is an
/// `internal` error naming the command.
pub fn decode<T: DeserializeOwned>(command: &str, raw: serde_json::Value) -> Result<T, PilotError> {
    serde_json::from_value(raw).map_err(|e| {
        let mut err = PilotError::internal(format!(
            "the daemon's answer to `{command}` is not what this pilotctl expects: {e}"
        ));
        err.hint = "the daemon may run another version of pilot: restart it with this pilotctl \
                    (`pilotctl daemon stop && pilotctl daemon start`)"
            .into();
        err
    })
}

/// This node's state paths (`$PILOT_HOME`, `$PILOT_SOCKET`).
pub fn paths() -> Result<StatePaths, PilotError> {
    StatePaths::from_env()
}

/// Prints an error: the envelope on stderr with `--json`, else `error: … [code]` and a hint
/// line, escaped (an error may quote what a peer or registry said).
pub fn print_error(json: bool, e: &PilotError) {
    if json {
        match serde_json::to_string(&Envelope::Error(e.clone())) {
            Ok(line) => eprintln!("{line}"),
            Err(_) => eprintln!("{{\"status\":\"error\",\"code\":\"internal\"}}"),
        }
    } else {
        eprintln!("{}", error_text(e));
    }
}

/// An error for humans: `error: MESSAGE [code]`, then `hint: HINT` if there is one.
fn error_text(e: &PilotError) -> String {
    let mut text = format!("error: {} [{}]", untrusted(&e.message), e.code);
    if !e.hint.is_empty() {
        text.push_str(&format!("\nhint: {}", untrusted(&e.hint)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InfoData;
    use crate::error::ErrorCode;

    #[test]
    fn an_answer_of_the_wrong_shape_is_an_internal_error_naming_the_command() {
        let e = decode::<InfoData>("info", serde_json::json!({"address": 7})).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("`info`"), "{}", e.message);
        assert!(e.hint.contains("restart"), "{}", e.hint);
    }

    #[test]
    fn errors_show_code_and_hint_with_quoted_text_escaped() {
        let e = PilotError::new(
            ErrorCode::Unauthorized,
            "rejected: \u{1b}[2Jgo away\nerror: fake",
            "ask again",
        );
        assert_eq!(
            error_text(&e),
            format!(
                "error: rejected: \\u{{1b}}[2Jgo away\\nerror: fake [{}]\nhint: ask again",
                e.code
            )
        );
        let bare = PilotError::new(ErrorCode::Timeout, "slow", "");
        assert_eq!(error_text(&bare), format!("error: slow [{}]", bare.code));
    }

    #[test]
    fn the_envelope_keeps_the_raw_answer() {
        let raw = serde_json::json!({"hostname": "worker-node", "extra": 1});
        let a = Answer {
            typed: decode::<crate::node::views::HostnameClaim>("set-hostname", raw.clone())
                .unwrap(),
            raw: raw.clone(),
        };
        let out = a.render(|h| format!("hostname set to {}", h.hostname));
        assert_eq!(out.data, raw);
        assert_eq!(out.text, "hostname set to worker-node");
    }
}
