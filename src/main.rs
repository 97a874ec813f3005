//! `pilotctl`: the one binary. The CLI, `daemon run` and (later) `registry run` are subcommands.

fn main() -> std::process::ExitCode {
    pilot::cli::main()
}
