"""The benchmark results of bench/throughput.sh and bench/latency.sh, and their markdown tables.

OUT_STAMP_DIR/run-*/SYSTEM.json, one JSON object per system and pass, each naming its `system`
(pilot-peers.json, and anything unreadable or without a `system`, is skipped).
"""
import json
import os


def load_runs(out):
    """[(run, {system: result})] for every run-* directory of `out`, in name order."""
    runs = []
    for run in sorted(os.listdir(out)):
        d = os.path.join(out, run)
        if not (run.startswith("run-") and os.path.isdir(d)):
            continue
        res = {}
        for f in sorted(os.listdir(d)):
            if not f.endswith(".json") or f == "pilot-peers.json":
                continue
            try:
                with open(os.path.join(d, f)) as fh:
                    r = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(r, dict) and "system" in r:
                res[r["system"]] = r
        runs.append((run, res))
    return runs


def g(r, *path):
    """r[path[0]][path[1]]..., or None where a step is missing."""
    for p in path:
        r = r.get(p) if isinstance(r, dict) else None
    return r


def fmt(v, nd=0):
    """A number with `nd` decimals, "–" for None, anything else as text."""
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, (int, float)) else str(v))


def header(*cols):
    """A markdown table's header and separator lines."""
    print(row(*cols))
    print("|" + "---|" * len(cols))


def row(*cells):
    """One markdown table line."""
    return "| " + " | ".join(str(c) for c in cells) + " |"
