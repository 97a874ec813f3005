#!/usr/bin/env bash
# The Python SDK (sdk/python, package pilot-agent) and `pilotctl mcp` tested with pytest
# against real daemons: a loopback registry and userspace-mode daemons in temporary state
# directories (no root). The tests run in a virtual environment, target/sdk-venv, made here
# when missing (.ci/run makes it first and installs pytest, httpx and the MCP SDK into it);
# the SDK is pip-installed into it from sdk/python on every run.
#
# The daemons are PILOT_BIN if set, else target/release/pilotctl when it is at least as new
# as target/debug/pilotctl (scripts/test.sh builds it), else the debug one.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check pytest httpx mcp
"$venv/bin/pip" install -q --disable-pip-version-check ./sdk/python
if [ -z "${PILOT_BIN:-}" ]; then
  if [ -x target/release/pilotctl ] && { [ ! -x target/debug/pilotctl ] || [ target/release/pilotctl -nt target/debug/pilotctl ]; }; then
    export PILOT_BIN="$PWD/target/release/pilotctl"
  else
    cargo build --quiet --bin pilotctl
    export PILOT_BIN="$PWD/target/debug/pilotctl"
  fi
fi
echo "sdk tests: daemons from $PILOT_BIN"
cd sdk/python
exec "../../$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests "$@"
