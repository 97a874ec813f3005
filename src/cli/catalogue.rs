//! `context [COMMAND]`: a JSON catalogue of every command for agents that discover their tools
//! at run time. Arguments, flags, descriptions and examples come from the clap tree
//! ([`super::examples::command`]); what a command returns and which error codes it may give
//! come from the API's OpenAPI document (for the commands the daemon answers, through
//! [`Request::route`]) or from the output types' schemas (for the commands that run here). A
//! test walks the clap tree and fails for a command the catalogue does not describe.

use clap::{Arg, Command};
use serde_json::{json, Value};
use utoipa::PartialSchema;

use super::examples::{built, walk};
use super::output::Output;
use crate::api::Request;
use crate::error::PilotError;

/// What a command prints under `--json`.
enum Returns {
    /// The daemon's answer to this request (its schema and errors are in the OpenAPI document).
    Api(Request),
    /// A type of this process.
    Local(fn() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>),
    /// A byte stream on stdin/stdout (errors only use the envelope).
    Stream,
    /// Text on stdout (a script or a document); nothing under `--json` but errors.
    Text,
}

fn schema<T: PartialSchema>() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    T::schema()
}

/// What each command returns, by path.
fn returns(path: &str) -> Option<Returns> {
    node_returns(path)
        .or_else(|| parity_returns(path))
        .or_else(|| service_returns(path))
}

/// What the commands added for parity with Pilot Protocol return.
fn parity_returns(path: &str) -> Option<Returns> {
    use super::bootstrap as b;
    use super::exchange as x;
    use Returns::*;
    let s = String::new;
    Some(match path {
        "init" => Local(schema::<b::Initialized>),
        "version" => Local(schema::<b::VersionData>),
        "health" => Api(Request::Health {}),
        "context" => Text,
        "completions" => Local(schema::<super::shell::CompletionScript>),
        "man" => Local(schema::<super::shell::ManPages>),
        "send" => Local(schema::<x::Exchanged>),
        "recv" => Local(schema::<x::ReceivedAll>),
        "dgram send" => Api(Request::DgramSend(crate::api::DgramSendRequest {
            peer: s(),
            port: 1,
            data: s(),
            base64: false,
        })),
        "dgram listen" => Api(Request::DgramListen(crate::api::DgramListenQuery {
            port: 1,
            count: None,
            timeout_ms: None,
        })),
        "bench" => Local(schema::<x::BenchReport>),
        "netcheck" => Api(Request::Netcheck {}),
        "connections" => Api(Request::Connections {}),
        "disconnect" => Api(Request::Disconnect { id: 1 }),
        "traceroute" => Local(schema::<super::diagnostics::Trace>),
        "lookup" => Api(Request::LookupNode { peer: s() }),
        "clear-hostname" => Api(Request::ClearHostname {}),
        "deregister" => Api(Request::Deregister {}),
        "set-tags" | "clear-tags" => Api(Request::SetTags { tags: vec![] }),
        _ => return None,
    })
}

/// What the node's own commands return.
fn node_returns(path: &str) -> Option<Returns> {
    use super::bootstrap as b;
    use Returns::*;
    let s = String::new;
    Some(match path {
        "daemon start" | "info" => Api(Request::Info {}),
        "daemon run" | "registry run" => Local(schema::<super::daemon_process::Stopped>),
        "daemon stop" => Local(schema::<super::daemon_process::StopData>),
        "daemon status" => Local(schema::<super::daemon_process::StatusData>),
        "peers" => Api(Request::Peers {}),
        "set-hostname" => Api(Request::SetHostname { hostname: s() }),
        "handshake" => Api(Request::Handshake {
            peer: s(),
            justification: None,
        }),
        "pending" => Api(Request::Pending {}),
        "approve" => Api(Request::Approve { peer: s() }),
        "reject" => Api(Request::Reject {
            peer: s(),
            reason: None,
        }),
        "untrust" => Api(Request::Untrust { peer: s() }),
        "trust" => Api(Request::Trust {}),
        "find" => Api(Request::Find {
            hostname: "x".into(),
        }),
        "ping" => Api(Request::Ping {
            peer: s(),
            count: None,
        }),
        "expose" => Api(Request::Expose {
            port: 1,
            to: s(),
            allow_link_local: false,
        }),
        "connect" | "listen" => Stream,
        "send-message" => Api(Request::SendMessage {
            peer: s(),
            data: s(),
            kind: None,
            wait_ms: None,
        }),
        "inbox" => Api(Request::Inbox {
            clear: false,
            from: None,
            since: None,
            limit: None,
        }),
        "outbox" => Api(Request::Outbox {}),
        "config" => Local(schema::<b::ConfigView>),
        "config check" => Local(schema::<super::config_check::Checked<'static>>),
        "registry forget-key" => Api(Request::ForgetRegistryKey { registry: s() }),
        _ => return None,
    })
}

/// What the agent services' commands return (messages, webhook, files, pub/sub, tasks,
/// registry status, names, datagrams).
fn service_returns(path: &str) -> Option<Returns> {
    use Returns::*;
    let s = String::new;
    Some(match path {
        "reply" => Api(Request::Reply {
            id: s(),
            data: s(),
            kind: None,
        }),
        "inbox read" => Api(Request::InboxRead { id: s() }),
        "events" | "subscribe" | "mcp" => Stream,
        "set-webhook" => Api(Request::SetWebhook { url: s() }),
        "clear-webhook" => Api(Request::ClearWebhook {}),
        "webhook" => Api(Request::Webhook {}),
        "send-file" => Api(Request::SendFile {
            peer: s(),
            path: s(),
            name: None,
            wait_ms: None,
        }),
        "received" => Api(Request::Received { clear: false }),
        "transfers" => Api(Request::Transfers {}),
        "publish" => Api(Request::Publish {
            peer: None,
            topic: s(),
            data: s(),
        }),
        "pubsub" => Api(Request::PubsubStatus {}),
        "task submit" => Api(Request::TaskSubmit(crate::api::types::SubmitTaskRequest {
            peer: s(),
            task: serde_json::Value::Null,
            file: None,
            deadline_s: None,
        })),
        "task list" => Api(Request::TaskList { submitted: None }),
        "task accept" => Api(Request::TaskAccept { id: s() }),
        "task decline" => Api(Request::TaskDecline {
            id: s(),
            reason: s(),
        }),
        "task result" => Api(Request::TaskResult {
            id: s(),
            result: Default::default(),
        }),
        "task status" => Api(Request::TaskStatus { id: s() }),
        "task wait" => Api(Request::TaskWait {
            id: s(),
            timeout_ms: None,
        }),
        "registry status" => Local(schema::<super::registry_status::RegistryStatus>),
        "dns status" => Api(Request::DnsStatus {}),
        "dns setup" => Local(schema::<super::dns::DnsSetup>),
        _ => return None,
    })
}

/// Error codes every command may give.
const COMMON_ERRORS: &[&str] = &["invalid_argument", "internal"];
/// Error codes every command that asks the daemon may give, too.
const DAEMON_ERRORS: &[&str] = &["not_running", "connection_failed", "timeout"];

/// The error code of an HTTP status, as the API maps them.
fn code_of_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "400" => "invalid_argument",
        "403" => "unauthorized",
        "404" => "not_found",
        "409" => "already_exists",
        "500" => "internal",
        "502" => "connection_failed",
        "503" => "not_running",
        "504" => "timeout",
        _ => return None,
    })
}

/// Follows `#/components/schemas/NAME` in the OpenAPI document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &doc["components"]["schemas"][name],
        None => v,
    }
}

/// The API route, the returned schema and the error codes of a daemon request.
fn api_entry(doc: &Value, req: &Request) -> (Value, Value, Vec<String>) {
    let route = req.route();
    let path = route
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let (doc_path, op) = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(p, _)| {
            let (a, b): (Vec<_>, Vec<_>) = (p.split('/').collect(), path.split('/').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
        })
        .map(|(p, ops)| (p.clone(), ops[route.method.to_ascii_lowercase()].clone()))
        .unwrap_or_default();
    let ok = &op["responses"]["200"]["content"]["application/json"]["schema"];
    let data = resolve(doc, &resolve(doc, ok)["properties"]["data"]).clone();
    let mut errors: Vec<String> = op["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(status, _)| code_of_status(status))
        .map(String::from)
        .collect();
    errors.extend(DAEMON_ERRORS.iter().map(|c| c.to_string()));
    (json!(format!("{} {doc_path}", route.method)), data, errors)
}

/// One flag or positional argument.
fn describe_arg(a: &Arg) -> Value {
    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let many = matches!(a.get_action(), clap::ArgAction::Append)
        || a.get_num_args().is_some_and(|n| n.max_values() > 1);
    let takes_value = a.get_action().takes_values();
    json!({
        "name": a.get_id().as_str(),
        "long": a.get_long().map(|l| format!("--{l}")),
        "short": a.get_short().map(|c| format!("-{c}")),
        "description": help,
        "required": a.is_required_set(),
        "takes_value": takes_value,
        "repeatable": many,
        "default": defaults.first(),
        "possible_values": values,
    })
}

/// One command's catalogue entry.
fn describe(path: &str, cmd: &Command, doc: &Value) -> Value {
    let (args, flags): (Vec<&Arg>, Vec<&Arg>) = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .partition(|a| a.is_positional());
    let mut errors: Vec<String> = COMMON_ERRORS.iter().map(|c| c.to_string()).collect();
    let (route, fields, kind) = match returns(path) {
        Some(Returns::Api(req)) => {
            let (route, data, e) = api_entry(doc, &req);
            errors.extend(e);
            (route, data, "json")
        }
        Some(Returns::Local(f)) => (
            Value::Null,
            serde_json::to_value(f()).unwrap_or_default(),
            "json",
        ),
        Some(Returns::Stream) => {
            errors.extend(
                DAEMON_ERRORS
                    .iter()
                    .chain(&["not_found", "unauthorized"])
                    .map(|c| c.to_string()),
            );
            (Value::Null, Value::Null, "stream")
        }
        Some(Returns::Text) => (Value::Null, Value::Null, "text"),
        None => (Value::Null, Value::Null, "commands"),
    };
    errors.sort();
    errors.dedup();
    let subcommands: Vec<&str> = cmd
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    json!({
        "command": path,
        "usage": format!("pilotctl {path}"),
        "description": cmd.get_about().map(|a| a.to_string()).unwrap_or_default(),
        "arguments": args.iter().map(|a| describe_arg(a)).collect::<Vec<_>>(),
        "flags": flags.iter().map(|a| describe_arg(a)).collect::<Vec<_>>(),
        "subcommands": subcommands,
        "output": kind,
        "api": route,
        "returns": fields,
        "errors": errors,
        "examples": cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default(),
    })
}

/// The catalogue of every command, or of those under `only` (words of a command path).
pub fn catalogue(only: &[String]) -> Result<Value, PilotError> {
    let root = built();
    let doc = serde_json::to_value(crate::api::openapi::document()).unwrap_or_default();
    let prefix = only.join(" ");
    let entries: Vec<Value> = walk(&root)
        .into_iter()
        .filter(|(p, _)| prefix.is_empty() || *p == prefix || p.starts_with(&format!("{prefix} ")))
        .map(|(p, c)| describe(&p, c, &doc))
        .collect();
    if entries.is_empty() {
        return Err(PilotError::new(
            crate::error::ErrorCode::NotFound,
            format!("no command `{prefix}`"),
            "run `pilotctl context` for the whole catalogue",
        ));
    }
    Ok(json!({
        "program": "pilotctl",
        "version": env!("CARGO_PKG_VERSION"),
        "global_flags": [{"long": "--json", "description": "print the JSON envelope: {\"status\":\"ok\",\"data\":…} on stdout, or {\"status\":\"error\",\"code\",\"message\",\"hint\"} on stderr"}],
        "exit_codes": {"0": "ok", "1": "error (see the envelope's code)", "2": "usage error"},
        "commands": entries,
    }))
}

/// `context [COMMAND]`: the catalogue as JSON (it is JSON with or without `--json`).
pub fn context(only: &[String]) -> Result<Output, PilotError> {
    let cat = catalogue(only)?;
    let text = serde_json::to_string_pretty(&cat).unwrap_or_default();
    Output::local(&cat, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_the_catalogue_with_its_output_described() {
        let cat = catalogue(&[]).unwrap();
        let listed: Vec<&str> = cat["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["command"].as_str().unwrap())
            .collect();
        for (path, cmd) in walk(&built()) {
            assert!(listed.contains(&path.as_str()), "`{path}` missing");
            let has_children = cmd.get_subcommands().any(|c| c.get_name() != "help");
            assert!(
                has_children || returns(&path).is_some(),
                "`{path}`: the catalogue does not say what it returns (add it to `returns`)"
            );
        }
    }

    #[test]
    fn api_commands_carry_their_route_fields_and_error_codes() {
        let cat = catalogue(&["set-hostname".into()]).unwrap();
        let c = &cat["commands"][0];
        assert_eq!(c["api"], "PUT /v1/hostname");
        assert!(c["returns"]["properties"]["hostname"].is_object(), "{c}");
        let errors: Vec<&str> = c["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            errors.contains(&"already_exists") && errors.contains(&"not_running"),
            "{errors:?}"
        );
        assert_eq!(c["arguments"][0]["name"], "name");
        let health = &catalogue(&["health".into()]).unwrap()["commands"][0];
        assert!(
            health["returns"]["properties"]["peers_up"].is_object(),
            "{health}"
        );
        let send = &catalogue(&["send".into()]).unwrap()["commands"][0];
        assert!(send["returns"]["properties"]["reply"].is_object(), "{send}");
        assert!(send["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["long"] == "--timeout"));
        assert!(catalogue(&["no-such".into()]).is_err());
    }
}
