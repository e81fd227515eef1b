"""`tinymetafed device bundle`: the board files, as .mpy, run a round under `micropython`."""

import json
import os
import shutil
import subprocess
import sys

from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.testing.session import micropython_exe
from broker_service.tools.bundle import strip_native, write_bundle
from device_agent import codec
from device_agent.model import Plan
from device_agent.specs import spec_for
from tests.mqtt_helpers import Driver


def test_strip_native_removes_only_decorator_lines():
    src = "@micropython.native\ndef f():\n    return 1  # @micropython.native\n"
    assert strip_native(src) == "def f():\n    return 1  # @micropython.native\n"


def test_mpy_bundle_runs_a_round_under_micropython(mosquitto, tmp_path):
    out = tmp_path / "board"
    config = {
        "device_id": "bundle-1",
        "fleet": "test",
        "use_case": "occupancy",
        "broker": {"host": "127.0.0.1", "port": mosquitto.port},
        "max_rounds": 1,
        "wifi": {"ssid": "unused on the unix port", "password": "x"},
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "device",
            "bundle",
            "--out",
            str(out),
            "--mpy",
            "--arch",
            "unix",
        ],
        check=True,
        capture_output=True,
    )
    write_bundle(out, config, mpy=True, arch="unix")
    assert (out / "device_agent" / "layers.mpy").exists()
    assert not list((out / "device_agent").glob("*.py"))
    plan = Plan(spec_for("occupancy"))
    driver = Driver(mosquitto.port)
    driver.publish_model(initial_theta(NumpyNet(plan), 2)[: plan.n_global], version=3)
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    kernels = subprocess.run(
        [micropython_exe(), "-c", "from device_agent import network; print(network.KERNELS)"],
        cwd=out,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert kernels.stdout.split() == ["native"]  # tmf_kernels.mpy at the bundle's root
    proc = subprocess.Popen(
        [micropython_exe(), "-X", "heapsize=256K", "main.py"],
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        driver.wait_status("bundle-1", "online")
        # a removed setting at its old default, as an older service sends it: ignored
        command = {"round": 0, "version": 3, "recon_samples": 5, "adapt_samples": 10}
        driver.command("bundle-1", dict(command, head_init="sgd"))
        header, _, _ = codec.decode(driver.get("bundle-1", "update"))
        assert json.loads(driver.get("bundle-1", "telemetry"))["samples"] == 15
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        driver.close()
    assert header.n == plan.n_global and header.model_version == 3


def test_bundle_without_arch_for_native_code_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "device",
            "bundle",
            "--out",
            str(tmp_path),
            "--mpy",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--arch" in proc.stderr


def _mpy_arch(module) -> int:
    """The native architecture in a .mpy header (py/persistentcode.h: 4 armv6m, 7 armv7emsp)."""
    return (module.read_bytes()[2] >> 2) & 0x2F


def test_bundle_carries_the_compiled_kernels_of_the_board(tmp_path):
    for board, arch in (("nrf52840", 7), ("rp2", 4)):
        files = write_bundle(tmp_path / board, arch=board)
        module = tmp_path / board / "tmf_kernels.mpy"
        assert module in files and _mpy_arch(module) == arch
    write_bundle(tmp_path / "plain", arch="nrf52840", native=False)
    assert not (tmp_path / "plain" / "tmf_kernels.mpy").exists()


def test_esp32_bundle_says_it_runs_the_python_kernels(tmp_path, monkeypatch, capsys):
    tools = tmp_path / "bin"  # make, but no Xtensa compiler
    tools.mkdir()
    (tools / "make").symlink_to(shutil.which("make") or "/usr/bin/make")
    monkeypatch.setenv("PATH", str(tools))
    write_bundle(tmp_path / "board", arch="esp32")
    assert not (tmp_path / "board" / "tmf_kernels.mpy").exists()
    note = [line for line in capsys.readouterr().out.splitlines() if "kernels" in line]
    assert note == [
        "note: no compiled kernels for esp32 (xtensawin: xtensa-esp32-elf-gcc not found on PATH: "
        "Espressif's ESP-IDF tools (install.sh, then . ./export.sh puts it on PATH)); the board "
        "runs the pure-Python kernels"
    ]
