//! Text from strangers (hostnames, justifications, reasons, message data, error messages that
//! quote them) is escaped before it reaches the terminal: no raw escape sequences, no fake
//! newlines, no bidirectional overrides that reorder what the reader sees.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1), line or paragraph separator and
/// bidirectional override written as a visible escape (`\n`, `\t`, `\r`, `\u{1b}`); other
/// text, including backslashes, is unchanged.
pub fn untrusted(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A whole rendering on its way to the terminal: like [`untrusted`] but keeping the line
/// breaks the renderer put there. The last line of defence: each renderer escapes the
/// stranger's text it places (so a stranger cannot add lines), and this makes sure no escape
/// sequence reaches the terminal even from a field a renderer forgot.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let lines: Vec<Cow<'_, str>> = s.split('\n').map(untrusted).collect();
    Cow::Owned(lines.join("\n"))
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged_and_unallocated() {
        for s in [
            "worker-node",
            "need vector search",
            "C:\\path",
            "héllo ✓",
            "",
        ] {
            assert!(matches!(untrusted(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            untrusted("ok\n    justification: approved by admin"),
            "ok\\n    justification: approved by admin"
        );
        assert_eq!(
            untrusted("\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(untrusted("a\rb\tc\0d\u{7f}e"), "a\\rb\\tc\\u{0}d\\u{7f}e");
        // C1 controls (8-bit CSI), line separators and bidi overrides.
        assert_eq!(untrusted("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(untrusted("a\u{2028}b"), "a\\u{2028}b");
        assert_eq!(untrusted("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
    }

    #[test]
    fn a_rendering_keeps_its_lines_and_loses_its_escape_sequences() {
        assert!(matches!(terminal("a\nb  c"), Cow::Borrowed("a\nb  c")));
        assert_eq!(
            terminal("peer \u{1b}[2Jx\nnext\ttab\r"),
            "peer \\u{1b}[2Jx\nnext\\ttab\\r"
        );
    }

    #[test]
    fn no_escaped_output_holds_a_control_character() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!untrusted(&all).chars().any(needs_escape));
    }
}
