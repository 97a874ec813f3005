//! Text renderings of the daemon's typed answers, one function per answer: pure functions of
//! the typed struct (and, where time matters, the current time), unit-tested below each. Text
//! from strangers goes through [`untrusted`] on its way in.

mod expose;
mod messages;
mod node;
mod trust;

pub use expose::{expose_added, expose_list, expose_removed};
pub use messages::{inbox, outbox, sent_message};
pub use node::{daemon_started, daemon_status, find, hostname_claim, info, peers, ping};
pub use trust::{approved, handshake, pending, rejected, trust_list, untrusted_peer};

use super::escape::untrusted;

/// Lays rows out in columns two spaces apart, each as wide as its widest cell.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` bytes in binary units with one decimal (`512 B`, `1.5 KiB`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An optional stranger-given name, escaped, or `-`.
fn name_or_dash(name: Option<&str>) -> String {
    name.map_or_else(|| "-".into(), |n| untrusted(n).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = [
            ["A".to_string(), "BB".into(), "C".into()],
            ["long".into(), "x".into(), "".into()],
        ];
        assert_eq!(table(&rows), "A     BB  C\nlong  x");
    }
}
