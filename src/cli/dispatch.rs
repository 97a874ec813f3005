//! From a parsed command to its output: each daemon command asks the daemon, decodes the
//! answer into its type and hands it to its renderer; the rest run here.

use super::args::{Command, DaemonCmd, ExposeArgs, RegistryCmd};
use super::output::{ask, Output};
use super::{daemon_process, mcp, registry_run, registry_status, render, stream};
use crate::api::{
    ExposeList, InfoData, OutboxData, ReceivedData, RegistryKeyView, Request, TransfersData,
    WebhookStatus,
};
use crate::error::{ErrorCode, PilotError};
use crate::node::views::{HostnameClaim, Lookup, PendingList, PingReport, TrustView};
use crate::userspace::expose::{ExposeProtocol, Exposed};

/// Runs one command.
pub fn run(cmd: Command) -> Result<Output, PilotError> {
    match cmd {
        Command::Daemon(DaemonCmd::Run(args)) => daemon_process::run(&args),
        Command::Daemon(DaemonCmd::Start(args)) => daemon_process::start(&args),
        Command::Daemon(DaemonCmd::Stop { timeout }) => daemon_process::stop(timeout),
        Command::Daemon(DaemonCmd::Status { .. }) => daemon_process::status(),
        Command::Config(args) => super::bootstrap::config(args),
        Command::Registry(RegistryCmd::Run(args)) => registry_run::run(&args),
        Command::Registry(RegistryCmd::Status(args)) => registry_status::run(&args),
        Command::Registry(RegistryCmd::ForgetKey { registry }) => {
            let req = Request::ForgetRegistryKey { registry };
            Ok(ask::<RegistryKeyView>("registry forget-key", &req)?
                .render(render::registry_key_forgotten))
        }
        Command::Connect {
            peer,
            port,
            message: Some(m),
            timeout,
        } => super::exchange::send(peer, port, &m, timeout_or_default(timeout)),
        Command::Connect {
            peer,
            port,
            timeout,
            ..
        } => stream::connect(peer, port, timeout),
        Command::Listen { port } => stream::run(&Request::Listen { port }),
        Command::Info => Ok(ask::<InfoData>("info", &Request::Info {})?.render(render::info)),
        Command::Peers { search } => super::parity::peers(search),
        Command::SetHostname { name } => set_hostname(&name),
        Command::Find { name } => find(name),
        Command::Ping { peer, count } => ping(peer, count),
        Command::Handshake {
            peer,
            justification,
        } => trust_op(
            "handshake",
            Request::Handshake {
                peer,
                justification,
            },
            render::handshake,
        ),
        Command::Approve { peer } => {
            trust_op("approve", Request::Approve { peer }, render::approved)
        }
        Command::Reject { peer, reason } => {
            trust_op("reject", Request::Reject { peer, reason }, render::rejected)
        }
        Command::Untrust { peer } => {
            trust_op("untrust", Request::Untrust { peer }, render::untrusted_peer)
        }
        Command::Pending => {
            Ok(ask::<PendingList>("pending", &Request::Pending {})?.render(render::pending))
        }
        Command::Trust { search } => super::parity::trust(search),
        Command::Outbox => {
            Ok(ask::<OutboxData>("outbox", &Request::Outbox {})?.render(render::outbox))
        }
        Command::Expose(args) => expose(args),
        Command::Mcp(args) => mcp::run(&args),
        Command::Parity(cmd) => super::parity::run(cmd),
        other => run_services(other),
    }
}

/// The agent services' commands (messages, webhook, files, names, pub/sub, tasks).
fn run_services(cmd: Command) -> Result<Output, PilotError> {
    match cmd {
        Command::SendMessage(args) => super::messages::send_message(args),
        Command::Reply(args) => super::messages::reply(args),
        Command::Inbox(args) => super::messages::inbox(args),
        Command::Events { count, timeout } => super::messages::events(count, timeout, false),
        Command::SetWebhook { url } => webhook("set-webhook", Request::SetWebhook { url }),
        Command::ClearWebhook => webhook("clear-webhook", Request::ClearWebhook {}),
        Command::Webhook => webhook("webhook", Request::Webhook {}),
        Command::SendFile {
            peer,
            path,
            name,
            wait,
        } => super::files::send_file(peer, &path, name, wait),
        Command::Received { clear } => Ok(ask::<ReceivedData>(
            "received",
            &Request::Received { clear },
        )?
        .render(|d| render::received(d, crate::clock::unix_ms_now()))),
        Command::Transfers => {
            use std::io::IsTerminal;
            let bar = std::io::stdout().is_terminal();
            Ok(ask::<TransfersData>("transfers", &Request::Transfers {})?
                .render(|d| render::transfers(d, bar)))
        }
        Command::Dns(cmd) => super::dns::run(cmd),
        Command::Subscribe(args) => {
            super::pubsub_tasks::subscribe(&args, false).map(|()| Output::nothing())
        }
        Command::Publish(args) => super::pubsub_tasks::publish(args),
        Command::Pubsub => super::pubsub_tasks::status(),
        Command::Task(cmd) => super::pubsub_tasks::task(cmd),
        other => Err(PilotError::internal(format!(
            "no dispatch for {other:?} (a bug: please report it)"
        ))),
    }
}

/// `connect --message`'s timeout: `--timeout S`, else 10 s.
fn timeout_or_default(secs: Option<u64>) -> std::time::Duration {
    std::time::Duration::from_secs(secs.unwrap_or(10))
}

/// `set-hostname NAME`, checked here before it reaches the daemon.
fn set_hostname(name: &str) -> Result<Output, PilotError> {
    let hostname = daemon_process::parse_hostname(name)?.to_string();
    let req = Request::SetHostname { hostname };
    Ok(ask::<HostnameClaim>("set-hostname", &req)?.render(render::hostname_claim))
}

/// `find NAME`.
fn find(name: String) -> Result<Output, PilotError> {
    let req = Request::Find {
        hostname: name.clone(),
    };
    Ok(ask::<Option<Lookup>>("find", &req)?.render(|l| render::find(&name, l.as_ref())))
}

/// `handshake`, `approve`, `reject`, `untrust`: the peer's trust after the change.
fn trust_op(
    command: &str,
    req: Request,
    render: fn(Option<&TrustView>) -> String,
) -> Result<Output, PilotError> {
    Ok(ask::<Option<TrustView>>(command, &req)?.render(|v| render(v.as_ref())))
}

/// `set-webhook URL`, `clear-webhook`, `webhook`: the webhook's state after the change.
fn webhook(command: &str, req: Request) -> Result<Output, PilotError> {
    Ok(ask::<WebhookStatus>(command, &req)?.render(render::webhook_status))
}

/// `ping`: a report with no reply at all is a `timeout` error.
fn ping(peer: String, count: u32) -> Result<Output, PilotError> {
    let req = Request::Ping {
        peer,
        count: Some(count),
    };
    let answer = ask::<PingReport>("ping", &req)?;
    if answer.typed.received == 0 {
        return Err(PilotError::new(
            ErrorCode::Timeout,
            format!("no probe reply from {}", answer.typed.address),
            "check `pilotctl peers` (path) and that the peer's daemon runs",
        ));
    }
    Ok(answer.render(render::ping))
}

/// `expose PORT --to HOST:PORT`, `expose --list`, `expose --remove PORT`.
fn expose(args: ExposeArgs) -> Result<Output, PilotError> {
    if args.list {
        return Ok(
            ask::<ExposeList>("expose", &Request::ExposeList {})?.render(render::expose_list)
        );
    }
    if let Some((port, protocol)) = args.remove {
        let req = match protocol {
            ExposeProtocol::Tcp => Request::ExposeRemove { port },
            ExposeProtocol::Udp => Request::ExposeRemoveUdp { port },
        };
        return Ok(ask::<Exposed>("expose", &req)?.render(render::expose_removed));
    }
    let (Some((port, protocol)), Some(to)) = (args.port, args.to) else {
        return Err(PilotError::invalid(
            "expose needs a port and --to HOST:PORT",
            "e.g. pilotctl expose 8080 --to 127.0.0.1:3000",
        ));
    };
    crate::userspace::expose::validate_target(&to)?;
    let allow_link_local = args.allow_link_local;
    crate::userspace::expose::check_target_scope(&to, allow_link_local)?;
    let req = match protocol {
        ExposeProtocol::Tcp => Request::Expose {
            port,
            to,
            allow_link_local,
        },
        ExposeProtocol::Udp => Request::ExposeUdp {
            port,
            to,
            allow_link_local,
        },
    };
    Ok(ask::<Exposed>("expose", &req)?.render(render::expose_added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expose_target_that_is_not_host_port_is_refused_before_the_daemon_is_asked() {
        let args = ExposeArgs {
            port: Some((8080, ExposeProtocol::Tcp)),
            to: Some("localhost".into()),
            list: false,
            remove: None,
            allow_link_local: false,
        };
        let e = expose(args).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
        assert!(e.message.contains("`localhost`"), "{}", e.message);
        assert!(e.hint.contains("--to 127.0.0.1:3000"), "{}", e.hint);
    }
}
