#!/usr/bin/env bash
# Lists every production function in src/ whose body is longer than MAX lines (default 80),
# longest first, and exits 1 if there is any. Body lines are the lines between the line of the
# opening brace and the line of the closing one. Items marked #[cfg(test)] or #[test] (test
# modules and their helpers) are skipped; comments and string literals are blanked out first,
# so braces inside them do not count.
#
# Usage: scripts/long-functions.sh [MAX]   (scripts/test.sh runs it, so CI does)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "${1:-80}" <<'PY'
import pathlib
import re
import sys

MAX = int(sys.argv[1])


RAW = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'")


def blank(text):
    """The text with comments and the insides of string and char literals replaced by spaces
    (newlines kept, so line numbers stay right)."""
    out = []
    i, n = 0, len(text)

    def spaces(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        after_ident = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(spaces(text[i:j]))
            i = j
        elif c in "br" and not after_ident and (m := RAW.match(text, i)):
            close = '"' + m.group(1)
            j = text.find(close, m.end())
            j = n if j < 0 else j
            out.append(m.group(0) + spaces(text[m.end():j]) + close)
            i = j + len(close)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + spaces(text[i + 1:j]) + '"')
            i = j + 1
        elif c == "'" and (m := CHAR.match(text, i)):
            out.append("'" + " " * (m.end() - i - 2) + "'")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(text, open_at):
    """Index of the brace closing the one at `open_at`."""
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def body_start(text, at):
    """Index of the `{` opening the item that starts at `at`, or None for `;` first (a
    declaration without a body). Semicolons inside () and [] (array types) do not end it."""
    depth = 0
    for j in range(at, len(text)):
        c = text[j]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and c == "{":
            return j
        elif depth == 0 and c == ";":
            return None
    return None


TEST_ATTR = re.compile(r"#\[(cfg\((all\()?test\b[^\]]*\)|test)\]")
FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")

found = []
for path in sorted(pathlib.Path("src").rglob("*.rs")):
    text = blank(path.read_text())
    skipped = []
    for m in TEST_ATTR.finditer(text):
        start = body_start(text, m.end())
        if start is not None:
            skipped.append((m.start(), matching(text, start)))
    for m in FN.finditer(text):
        if any(a <= m.start() <= b for a, b in skipped):
            continue
        start = body_start(text, m.end())
        if start is None:
            continue
        end = matching(text, start)
        first = text.count("\n", 0, start)
        last = text.count("\n", 0, end)
        lines = last - first - 1
        if lines > MAX:
            found.append((lines, f"{path}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1)))

for lines, where, name in sorted(found, key=lambda f: (-f[0], f[1])):
    print(f"{lines:5} lines  {where}  fn {name}")
if found:
    print(f"{len(found)} production function(s) in src/ over {MAX} lines: split them", file=sys.stderr)
    sys.exit(1)
print(f"no production function in src/ is over {MAX} lines")
PY
