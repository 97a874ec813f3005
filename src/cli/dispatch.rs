//! From a parsed command to its output: each daemon command asks the daemon, decodes the
//! answer into its type and hands it to its renderer; the rest run here.

use super::args::{Command, ConfigCmd, DaemonCmd, ExposeArgs, RegistryCmd};
use super::output::{ask, Output};
use super::{config_check, daemon_process, registry_run, render, stream};
use crate::api::{
    ExposeList, InboxData, InfoData, OutboxData, PeersData, RegistryKeyView, Request, SentMessage,
};
use crate::error::{ErrorCode, PilotError};
use crate::node::views::{HostnameClaim, Lookup, PendingList, PingReport, TrustList, TrustView};
use crate::userspace::expose::Exposed;

/// Runs one command.
pub fn run(cmd: Command) -> Result<Output, PilotError> {
    match cmd {
        Command::Daemon(DaemonCmd::Run(args)) => daemon_process::run(&args),
        Command::Daemon(DaemonCmd::Start(args)) => daemon_process::start(&args),
        Command::Daemon(DaemonCmd::Stop { timeout }) => daemon_process::stop(timeout),
        Command::Daemon(DaemonCmd::Status) => daemon_process::status(),
        Command::Config(ConfigCmd::Check { file }) => config_check::check(&file),
        Command::Registry(RegistryCmd::Run(args)) => registry_run::run(&args),
        Command::Registry(RegistryCmd::ForgetKey { registry }) => {
            let req = Request::ForgetRegistryKey { registry };
            Ok(ask::<RegistryKeyView>("registry forget-key", &req)?
                .render(render::registry_key_forgotten))
        }
        Command::Connect { peer, port } => stream::run(&Request::Connect { peer, port }),
        Command::Listen { port } => stream::run(&Request::Listen { port }),
        Command::Info => Ok(ask::<InfoData>("info", &Request::Info {})?.render(render::info)),
        Command::Peers => Ok(ask::<PeersData>("peers", &Request::Peers {})?
            .render(|d| render::peers(d, crate::clock::unix_ms_now() / 1000))),
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
        Command::Trust => {
            Ok(ask::<TrustList>("trust", &Request::Trust {})?.render(render::trust_list))
        }
        Command::SendMessage { peer, data, kind } => send_message(peer, data, kind),
        Command::Inbox { clear } => {
            Ok(ask::<InboxData>("inbox", &Request::Inbox { clear })?.render(render::inbox))
        }
        Command::Outbox => {
            Ok(ask::<OutboxData>("outbox", &Request::Outbox {})?.render(render::outbox))
        }
        Command::Expose(args) => expose(args),
        Command::Subscribe(args) => {
            super::pubsub_tasks::subscribe(&args, false).map(|()| Output::nothing())
        }
        Command::Publish(args) => super::pubsub_tasks::publish(args),
        Command::Pubsub => super::pubsub_tasks::status(),
        Command::Task(cmd) => super::pubsub_tasks::task(cmd),
    }
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

/// `send-message PEER --data D --type T`.
fn send_message(peer: String, data: String, kind: String) -> Result<Output, PilotError> {
    let req = Request::SendMessage {
        peer,
        data,
        kind: Some(kind),
    };
    Ok(ask::<SentMessage>("send-message", &req)?.render(render::sent_message))
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
    if let Some(port) = args.remove {
        return Ok(ask::<Exposed>("expose", &Request::ExposeRemove { port })?
            .render(render::expose_removed));
    }
    let (Some(port), Some(to)) = (args.port, args.to) else {
        return Err(PilotError::invalid(
            "expose needs a port and --to HOST:PORT",
            "e.g. pilotctl expose 8080 --to 127.0.0.1:3000",
        ));
    };
    crate::userspace::expose::validate_target(&to)?;
    let allow_link_local = args.allow_link_local;
    crate::userspace::expose::check_target_scope(&to, allow_link_local)?;
    let req = Request::Expose {
        port,
        to,
        allow_link_local,
    };
    Ok(ask::<Exposed>("expose", &req)?.render(render::expose_added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expose_target_that_is_not_host_port_is_refused_before_the_daemon_is_asked() {
        let args = ExposeArgs {
            port: Some(8080),
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
