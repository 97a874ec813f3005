//! The examples every `--help` ends with, and the one clap [`Command`] the parser, the
//! completions, the man pages and the `context` catalogue are all built from (so none of them
//! can drift from the grammar in [`super::args`]).
//!
//! A command whose definition already carries an `after_help` keeps it; the others get theirs
//! from [`EXAMPLES`]. A test walks the tree and fails for a command with no example.

use clap::{Command, CommandFactory, FromArgMatches};

use super::args::Cli;

/// `(command path, examples)`: the path is the words after `pilotctl`.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("", "pilotctl daemon start --hostname worker-node\npilotctl --json info"),
    ("daemon", "pilotctl daemon start --registry 198.51.100.1:7000\npilotctl daemon status --check && echo up"),
    ("daemon start", "pilotctl daemon start --hostname worker-node --registry 198.51.100.1:7000"),
    ("daemon run", "pilotctl daemon run --mode userspace   # in a systemd unit or a container"),
    ("daemon stop", "pilotctl daemon stop\npilotctl daemon stop --timeout 30"),
    ("daemon status", "pilotctl daemon status\npilotctl daemon status --check || pilotctl daemon start"),
    ("info", "pilotctl info\npilotctl --json info | jq -r .data.address"),
    ("peers", "pilotctl peers\npilotctl peers --search worker"),
    ("set-hostname", "pilotctl set-hostname worker-node"),
    ("handshake", "pilotctl handshake worker-node \"orchestrator for batch jobs\""),
    ("pending", "pilotctl pending\npilotctl --json pending"),
    ("approve", "pilotctl approve orchestrator-node"),
    ("reject", "pilotctl reject stranger-node \"not expected\""),
    ("untrust", "pilotctl untrust worker-node"),
    ("trust", "pilotctl trust\npilotctl trust --search worker"),
    ("find", "pilotctl find worker-node"),
    ("ping", "pilotctl ping worker-node\npilotctl ping worker-node --count 10"),
    ("expose", "pilotctl expose 8080 --to 127.0.0.1:3000\npilotctl expose --list"),
    ("connect", "echo '{\"task\":\"x\"}' | pilotctl connect worker-node\npilotctl connect worker-node 1000 --message hello --timeout 5"),
    ("listen", "echo pong | pilotctl listen 1000"),
    ("send-message", "pilotctl send-message worker-node --data hello\npilotctl send-message worker-node --data '{\"status\":\"ok\"}' --type json --wait 10"),
    ("inbox", "pilotctl inbox\npilotctl inbox --from worker-node --since 10m --limit 5"),
    ("outbox", "pilotctl outbox"),
    ("config", "pilotctl config\npilotctl config --set tun.mtu=1400 --set hostname=worker-node"),
    ("config check", "pilotctl config check ~/.pilot/config.toml"),
    ("registry", "pilotctl registry run --listen 0.0.0.0:7000"),
    ("registry run", "pilotctl registry run --listen 0.0.0.0:7000 --state /var/lib/pilot-registry"),
    ("registry forget-key", "pilotctl registry forget-key 198.51.100.1:7000"),
    ("init", "pilotctl init --registry 198.51.100.1:7000 --hostname worker-node\npilotctl init --force"),
    ("version", "pilotctl version\npilotctl --json version"),
    ("health", "pilotctl health\npilotctl --json health | jq .data.last_errors"),
    ("context", "pilotctl context\npilotctl context connect"),
    ("completions", "source <(pilotctl completions bash)\npilotctl completions fish > ~/.config/fish/completions/pilotctl.fish"),
    ("man", "pilotctl man /usr/local/share/man/man1"),
    ("send", "pilotctl send worker-node 1000 --data '{\"task\":\"x\"}' --timeout 5"),
    ("recv", "pilotctl recv 1000\npilotctl recv 1000 --count 3 --timeout 60"),
    ("dgram", "pilotctl dgram listen 5000 --count 2\npilotctl dgram send worker-node 5000 --data hello"),
    ("dgram send", "pilotctl dgram send worker-node 5000 --data hello\npilotctl dgram send worker-node 5000 --data AAEC --base64"),
    ("dgram listen", "pilotctl dgram listen 5000\npilotctl --json dgram listen 5000 --count 10 --timeout 30"),
    ("bench", "pilotctl bench worker-node\npilotctl bench worker-node 50"),
    ("lookup", "pilotctl lookup worker-node\npilotctl lookup 0a1b.2c3d.4e5f"),
    ("clear-hostname", "pilotctl clear-hostname"),
    ("deregister", "pilotctl deregister"),
    ("set-tags", "pilotctl set-tags gpu vector-search"),
    ("clear-tags", "pilotctl clear-tags"),
    ("netcheck", "pilotctl netcheck\npilotctl --json netcheck | jq .data.nat"),
    ("traceroute", "pilotctl traceroute worker-node"),
    ("connections", "pilotctl connections\npilotctl --json connections"),
    ("disconnect", "pilotctl disconnect 3"),
    ("reply", "pilotctl reply 0f3a...e1 --data done\npilotctl reply 0f3a...e1 --data '{\"ok\":true}' --type json"),
    ("inbox read", "pilotctl inbox read 0f3a...e1\npilotctl --json inbox read 0f3a...e1"),
    ("events", "pilotctl events\npilotctl events --json --count 1 --timeout 30"),
    ("set-webhook", "pilotctl set-webhook http://127.0.0.1:8080/events"),
    ("clear-webhook", "pilotctl clear-webhook"),
    ("webhook", "pilotctl webhook\npilotctl --json webhook"),
    ("subscribe", "pilotctl subscribe worker-node 'sensors.>' --count 10\npilotctl --json subscribe worker-node 'jobs.*.done' --timeout 60"),
    ("publish", "pilotctl publish worker-node jobs.42.done --data ok\npilotctl publish --local sensors.temp --data 21.5"),
    ("pubsub", "pilotctl pubsub\npilotctl --json pubsub"),
    ("task", "pilotctl task submit worker-node --task '{\"op\":\"resize\"}' --deadline 600\npilotctl task list"),
    ("task submit", "pilotctl task submit worker-node --task '{\"op\":\"resize\"}' --deadline 600\npilotctl task submit worker-node --task '{\"op\":\"index\"}' --file ./docs.tar"),
    ("task list", "pilotctl task list\npilotctl task list --submitted"),
    ("task accept", "pilotctl task accept 0123456789abcdef0123456789abcdef"),
    ("task decline", "pilotctl task decline 0123456789abcdef0123456789abcdef --reason busy"),
    ("task result", "pilotctl task result 0123...cdef --data '{\"rows\":42}'\npilotctl task result 0123...cdef --file ./out.json"),
    ("task status", "pilotctl task status 0123456789abcdef0123456789abcdef"),
    ("task wait", "pilotctl task wait 0123456789abcdef0123456789abcdef --timeout 120"),
    ("registry status", "pilotctl registry status\npilotctl --json registry status --store postgres://pilot@db.example/pilot"),
    ("dns", "pilotctl dns status\nsudo pilotctl dns setup --apply"),
    ("dns status", "pilotctl dns status\npilotctl --json dns status"),
    ("dns setup", "pilotctl dns setup\nsudo pilotctl dns setup --apply"),
];

/// The `pilotctl` command tree with every example attached.
pub fn command() -> Command {
    attach(Cli::command(), "")
}

/// [`command`], built: global flags (`--json`) propagated to every subcommand.
pub fn built() -> Command {
    let mut cmd = command();
    cmd.build();
    cmd
}

fn attach(cmd: Command, path: &str) -> Command {
    let cmd = if cmd.get_after_help().is_none() {
        match EXAMPLES.iter().find(|(p, _)| *p == path) {
            Some((_, ex)) => cmd.after_help(format!("Examples:\n{}", indent(ex))),
            None => cmd,
        }
    } else {
        cmd
    };
    let path = path.to_string();
    cmd.mut_subcommands(move |sub| {
        let name = sub.get_name().to_string();
        let sub_path = if path.is_empty() {
            name
        } else {
            format!("{path} {name}")
        };
        attach(sub, &sub_path)
    })
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses `argv` with the examples attached (so `--help` shows them).
pub fn parse(argv: &[String]) -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

/// Every command of `cmd`'s tree (but `help`), as `(path, command)`, depth first.
pub fn walk(cmd: &Command) -> Vec<(String, &Command)> {
    fn go<'a>(cmd: &'a Command, path: String, out: &mut Vec<(String, &'a Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            out.push((p.clone(), sub));
            go(sub, p, out);
        }
    }
    let mut out = Vec::new();
    go(cmd, String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_ends_its_help_with_an_example() {
        let root = command();
        assert!(root.get_after_help().is_some());
        let missing: Vec<String> = walk(&root)
            .into_iter()
            .filter(|(_, c)| {
                c.get_after_help()
                    .is_none_or(|h| !h.to_string().contains("pilotctl"))
            })
            .map(|(p, _)| p)
            .collect();
        assert!(missing.is_empty(), "no example for: {missing:?}");
    }

    #[test]
    fn every_example_names_a_command_that_exists() {
        let root = command();
        let paths: Vec<String> = walk(&root).into_iter().map(|(p, _)| p).collect();
        for (p, _) in EXAMPLES.iter().filter(|(p, _)| !p.is_empty()) {
            assert!(paths.iter().any(|x| x == p), "`{p}` is not a command");
        }
    }

    #[test]
    fn the_grammar_is_consistent() {
        command().debug_assert();
    }
}
