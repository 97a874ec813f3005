//! Shell integration: `completions bash|zsh|fish` (clap_complete) and `man DIR` (clap_mangen,
//! one roff page per command: `pilotctl.1`, `pilotctl-daemon-start.1`, …). Both come from the
//! same clap tree as the parser, so they cannot drift from it.

use serde::Serialize;
use std::path::Path;

use super::examples::{built, walk};
use super::output::Output;
use super::parity_args::CompletionShell;
use crate::error::{ErrorCode, PilotError};

/// `man`'s data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ManPages {
    /// The directory written to.
    pub dir: String,
    /// The pages written, by file name.
    pub pages: Vec<String>,
}

/// The completion script for `shell`.
pub fn completion_script(shell: CompletionShell) -> Vec<u8> {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut cmd = built();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pilotctl", &mut out);
    out
}

/// `completions`' data (`--json`); without it the script alone is printed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompletionScript {
    /// `bash`, `zsh` or `fish`.
    pub shell: String,
    /// The script.
    pub script: String,
}

/// `completions SHELL`.
pub fn completions(shell: CompletionShell) -> Result<Output, PilotError> {
    let script = String::from_utf8(completion_script(shell))
        .map_err(|e| PilotError::internal(format!("the script is not UTF-8: {e}")))?;
    let name = format!("{shell:?}").to_lowercase();
    Output::local(
        &CompletionScript {
            shell: name,
            script: script.clone(),
        },
        script,
    )
}

/// Every man page as `(file name, roff text)`: the root, then each command depth first.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>, PilotError> {
    let root = built().version(env!("CARGO_PKG_VERSION"));
    let mut out = vec![("pilotctl.1".to_string(), render(root.clone())?)];
    for (path, cmd) in walk(&root) {
        let name = format!("pilotctl-{}", path.replace(' ', "-"));
        let page = cmd
            .clone()
            .name(name.clone())
            .bin_name(format!("pilotctl {path}"))
            .version(env!("CARGO_PKG_VERSION"));
        out.push((format!("{name}.1"), render(page)?));
    }
    Ok(out)
}

fn render(cmd: clap::Command) -> Result<Vec<u8>, PilotError> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("pilot {}", env!("CARGO_PKG_VERSION")))
        .manual("pilot manual")
        .render(&mut buf)
        .map_err(|e| PilotError::internal(format!("cannot render a man page: {e}")))?;
    Ok(buf)
}

/// `man DIR`: writes every page into DIR (made if missing).
pub fn man(dir: &Path) -> Result<Output, PilotError> {
    let cannot = |e: std::io::Error| {
        PilotError::new(
            ErrorCode::InvalidArgument,
            format!("cannot write to {}: {e}", dir.display()),
            "give a directory you can write, e.g. pilotctl man ./man",
        )
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    let mut names = Vec::new();
    for (name, text) in pages()? {
        std::fs::write(dir.join(&name), text).map_err(cannot)?;
        names.push(name);
    }
    let text = format!("wrote {} man pages to {}", names.len(), dir.display());
    Output::local(
        &ManPages {
            dir: dir.display().to_string(),
            pages: names,
        },
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed man pages (docs/man/) are what this grammar renders;
    /// `UPDATE_MAN=1 cargo test --lib cli::shell` rewrites them.
    #[test]
    fn the_committed_man_pages_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
        let pages = pages().unwrap();
        if std::env::var_os("UPDATE_MAN").is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &pages {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let mut committed: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let mut names: Vec<String> = pages.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(
            committed, names,
            "run UPDATE_MAN=1 cargo test --lib cli::shell"
        );
        for (name, text) in &pages {
            let on_disk = std::fs::read(dir.join(name)).unwrap();
            assert!(
                on_disk == *text,
                "docs/man/{name} is stale: run UPDATE_MAN=1 cargo test --lib cli::shell"
            );
        }
        let root = String::from_utf8_lossy(&pages[0].1).into_owned();
        assert!(root.contains("Examples"), "pages end with the examples");
    }
}
