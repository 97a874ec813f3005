#!/usr/bin/env python3
"""A small swarm on pilot: an orchestrator dispatches tasks to two workers over the task
service (overlay port 1003) and gathers their results.

Each role is one process talking to its own daemon through the pilot-agent SDK; the peers
already trust each other (handshake + approve). Run, each with its own PILOT_HOME:

    python3 swarm.py worker                    # on worker-a and on worker-b
    python3 swarm.py orchestrator worker-a worker-b

The orchestrator splits a list of numbers into one chunk per worker, submits each chunk as a
task ``{"op": "sum_of_squares", "numbers": [...]}``, waits for every result and prints the
total as JSON. A worker accepts each task it receives, computes it, and sends the result.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from pilot_agent import Client

def compute(task: Any) -> Dict[str, Any]:
    """The work: the sum of the squares of ``numbers``."""
    if not isinstance(task, dict) or task.get("op") != "sum_of_squares":
        raise ValueError(f"unknown task: {task!r}")
    return {"sum": sum(n * n for n in task["numbers"])}


def work_once(pilot: Client, handled: set) -> int:
    """Handles every new task in our queue once; returns how many it handled."""
    n = 0
    for t in pilot.tasks(submitted=False):
        if t.id in handled or t.state != "NEW":
            continue
        handled.add(t.id)
        pilot.accept_task(t.id)
        try:
            pilot.task_result(t.id, compute(t.task))
        except ValueError as e:
            pilot.task_result(t.id, {"error": str(e)}, failed=True)
        n += 1
    return n


def worker(pilot: Client, stop_after: Optional[float] = None,
           stop: Optional[threading.Event] = None) -> None:
    """Serves tasks until interrupted (or for ``stop_after`` seconds, or until ``stop``)."""
    handled: set = set()
    deadline = None if stop_after is None else time.monotonic() + stop_after
    while deadline is None or time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return
        if not work_once(pilot, handled):
            time.sleep(0.1)


def orchestrate(pilot: Client, workers: List[str], numbers: List[int],
                timeout: float = 30.0) -> Dict[str, Any]:
    """Dispatches one chunk per worker and gathers the results."""
    chunks = [numbers[i::len(workers)] for i in range(len(workers))]
    submitted = [(w, pilot.submit_task(w, {"op": "sum_of_squares", "numbers": c}, deadline=60))
                 for w, c in zip(workers, chunks)]
    parts = {}
    for w, t in submitted:
        done = pilot.wait_task(t.id, timeout)
        data = done.result_data()
        if done.state != "DONE" or not isinstance(data, dict) or "sum" not in data:
            raise RuntimeError(f"{w} did not finish task {t.id}: {done.raw}")
        parts[w] = data["sum"]
    return {"parts": parts, "total": sum(parts.values())}


def main(argv: List[str]) -> int:
    if len(argv) >= 2 and argv[1] == "worker":
        worker(Client())
        return 0
    if len(argv) >= 3 and argv[1] == "orchestrator":
        print(json.dumps(orchestrate(Client(), argv[2:], list(range(1, 101)))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
