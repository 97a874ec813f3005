#!/usr/bin/env bash
# The Python SDK's speed, in one run (no root): messages per second through the SDK (sync and
# async clients) and through `pilotctl send-message` (one process per message), their ratio,
# and the request/reply round trip through the SDK (with the messages service's `wait=` once it
# is there, else a message and a message back). Two userspace daemons and a registry on
# loopback, started and stopped by the script (bench/sdk_bench.py).
#
# Env: PILOT_BIN (default target/release/pilotctl, else target/debug/pilotctl), N_SDK, N_CLI,
# N_ASYNC, CONCURRENCY, N_RTT (see bench/sdk_bench.py). The venv is scripts/sdk-test.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pytest httpx
fi
"$venv/bin/pip" install -q --disable-pip-version-check ./sdk/python
if [ -z "${PILOT_BIN:-}" ]; then
  if [ -x target/release/pilotctl ]; then
    PILOT_BIN=$PWD/target/release/pilotctl
  else
    PILOT_BIN=$PWD/target/debug/pilotctl
  fi
fi
export PILOT_BIN
exec "$venv/bin/python" bench/sdk_bench.py
