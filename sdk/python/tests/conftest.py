"""Real daemons for the SDK's tests: a loopback registry and pilot daemons in userspace mode
(no root, no TUN), each in its own temporary state directory, started with the project's
``pilotctl`` and stopped by PID.

The binary is ``$PILOT_BIN``, else the newer of ``target/debug/pilotctl`` and
``target/release/pilotctl`` of this repository."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from pilot_agent import Client

REPO = Path(__file__).resolve().parents[3]


def pilot_bin() -> str:
    env = os.environ.get("PILOT_BIN")
    if env:
        return env
    found = [p for p in (REPO / "target/debug/pilotctl", REPO / "target/release/pilotctl")
             if p.exists()]
    if not found:
        pytest.fail("no pilotctl: run `cargo build` first, or set PILOT_BIN")
    return str(max(found, key=lambda p: p.stat().st_mtime))


def wait_until(timeout: float, f: Callable[[], Any], every: float = 0.05) -> Any:
    """Polls ``f`` until it returns something true or ``timeout`` s pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = f()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(every)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def lock_holder(lock: Path) -> Optional[int]:
    """The PID of the daemon holding ``daemon.lock`` (a held lock proves it alive)."""
    try:
        with open(lock) as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except OSError:
                return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


class Registry:
    """``pilotctl registry run`` on 127.0.0.1 with a port the kernel picks."""

    def __init__(self, bin: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="pilot-sdk-reg-")
        self.log = Path(self.dir, "registry.out")
        env = dict(os.environ, PILOT_HOME=self.dir, PILOT_LOG="info")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [bin, "registry", "run", "--listen", "127.0.0.1:0", "--state",
                 os.path.join(self.dir, "state")],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

        def addr() -> Optional[str]:
            for line in self.log.read_text(errors="replace").splitlines():
                if "registry running" in line and "listen=" in line:
                    return line.split("listen=", 1)[1].split()[0]
            return None

        self.addr = wait_until(20, addr)
        if not self.addr:
            self.stop()
            pytest.fail(f"registry did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One daemon in userspace mode in a temporary ``PILOT_HOME``."""

    def __init__(self, bin: str, name: str, registry: Optional[Registry]) -> None:
        self.bin, self.name = bin, name
        self.home = tempfile.mkdtemp(prefix=f"pilot-sdk-{name}-")
        Path(self.home, "config.toml").write_text('[socks5]\nlisten = "127.0.0.1:0"\n')
        args = ["daemon", "start", "--mode", "userspace", "--hostname", name]
        if registry is not None:
            args += ["--registry", registry.addr]
        code, out = self.cli(args)
        if code != 0:
            self.stop()
            pytest.fail(f"daemon {name} did not start: {out}\n{self.log()}")
        self.client = Client(home=self.home)
        self.key = self.client.info().public_key

    @property
    def socket(self) -> str:
        return os.path.join(self.home, "pilot.sock")

    def env(self) -> Dict[str, str]:
        env = dict(os.environ, PILOT_HOME=self.home)
        env.pop("PILOT_SOCKET", None)
        env.pop("PILOT_REGISTRY", None)
        return env

    def cli(self, args: List[str]) -> "tuple[int, Any]":
        """``pilotctl --json ARGS``: the exit code and the envelope."""
        p = subprocess.run([self.bin, "--json", *args], env=self.env(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        text = p.stdout if p.returncode == 0 else p.stderr
        try:
            return p.returncode, json.loads(text)
        except ValueError:
            return p.returncode, {"stdout": p.stdout.decode(), "stderr": p.stderr.decode()}

    def log(self) -> str:
        try:
            return Path(self.home, "daemon.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """``daemon stop``, then SIGKILL by PID to whatever still holds the lock."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        lock = Path(self.home, "daemon.lock")
        pid = lock_holder(lock)
        if pid:
            subprocess.run([self.bin, "daemon", "stop", "--timeout", "5"], env=self.env(),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            if not wait_until(10, lambda: not _alive(pid)):
                os.kill(pid, signal.SIGKILL)
                wait_until(10, lambda: not _alive(pid))
        shutil.rmtree(self.home, ignore_errors=True)


def make_trusted(a: Node, b: Node) -> None:
    """A asks B for trust through the registry and B approves: the SDK's trust calls."""
    from pilot_agent import NotFound

    def ask() -> bool:
        try:
            a.client.handshake(b.name, f"{a.name} wants to work with {b.name}")
            return True
        except NotFound:  # B's name may take a moment to reach the registry
            return False

    assert wait_until(10, ask, 0.2), f"handshake {a.name} -> {b.name} failed"
    assert wait_until(10, lambda: any(p.public_key == a.key for p in b.client.pending()), 0.1)
    view = b.client.approve(a.key)
    assert view is not None and view.state == "trusted", view
    assert wait_until(10, lambda: any(t.public_key == b.key and t.state == "trusted"
                                      for t in a.client.trust()), 0.1)


@pytest.fixture(scope="session")
def pilot_binary() -> str:
    return pilot_bin()


@pytest.fixture(scope="session")
def registry(pilot_binary: str):
    r = Registry(pilot_binary)
    yield r
    r.stop()


@pytest.fixture(scope="session")
def pair(pilot_binary: str, registry: Registry):
    """Two daemons, ``sdk-a`` and ``sdk-b``, that trust each other."""
    a = Node(pilot_binary, "sdk-a", registry)
    b = Node(pilot_binary, "sdk-b", registry)
    try:
        make_trusted(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def node_factory(pilot_binary: str, registry: Registry):
    """Extra daemons for one test, stopped after it."""
    made: List[Node] = []

    def make(name: str) -> Node:
        n = Node(pilot_binary, name, registry)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()
