"""A round's telemetry prices its energy with the kernels that ran and names them; the service
reads the energy as before, and the demo says which kernels its agents used."""

import json

import pytest

from broker_service.server.inbound import kept_telemetry, read_telemetry
from broker_service.sim import demo
from device_agent import energy, network, reports
from device_agent.round import RoundResult


def _result():
    result = RoundResult()
    result.payload = bytes(100)
    result.samples, result.macs, result.nnz = 30, 75840, 12
    result.adapt_loss_first, result.adapt_loss_last, result.adapt_loss = 0.9, 0.4, 0.6
    return result


CMD = {"round": 3, "version": 4}


@pytest.mark.parametrize(("kernels", "kernel"), [("native", "compiled"), ("python", "micropython")])
def test_a_round_is_priced_with_the_kernels_that_ran(kernels, kernel):
    doc = reports.round_done(CMD, _result(), 12, None, 500, "nrf52840", {}, kernels)
    board = energy.profile("nrf52840")
    assert doc["kernels"] == kernel
    assert doc["energy_mj"] == energy.energy_mj(75840, 100, 500, board, kernel)


def test_without_kernels_a_round_takes_the_process_kernels():
    doc = reports.round_done(CMD, _result(), 12, None, 500, "esp32", {})
    assert doc["kernels"] == reports.ENERGY_KERNELS[network.KERNELS]
    assert set(reports.ENERGY_KERNELS.values()) == set(energy.KERNELS)


def test_compiled_kernels_cost_less_energy_and_the_service_reads_it():
    native = reports.round_done(CMD, _result(), 12, None, 500, "nrf52840", {}, "native")
    python = reports.round_done(CMD, _result(), 12, None, 500, "nrf52840", {}, "python")
    assert 0 < native["energy_mj"] < python["energy_mj"]
    read = read_telemetry(reports.telemetry("d-1", native).encode())
    assert read["energy_mj"] == native["energy_mj"] and "kernels" not in read
    assert kept_telemetry(read)["energy_mj"] == native["energy_mj"]
    assert json.loads(reports.telemetry("d-1", native))["kernels"] == "compiled"


class _Agent:
    def __init__(self, kernels):
        self.net = type("Net", (), {"kernels": kernels})()


def test_the_demo_counts_its_agents_kernels():
    agents = [_Agent("python"), _Agent("python"), _Agent("native")]
    counts = demo.fleet_kernels(agents, "compiled")
    assert counts == {"micropython": 2, "compiled": 2}
    assert demo.fleet_kernels(agents[:1]) == {"micropython": 1}
    assert (
        demo.kernels_text(counts) == "2 compiled (tmf_kernels), 2 micropython (pure-Python kernels)"
    )


def test_the_demo_summary_names_the_kernels(tmp_path, capsys):
    summary = {
        "use_case": "sine",
        "algorithm": "tinymetafed",
        "rounds": 2,
        "metric": "mse",
        "metric_initial": 2.0,
        "metric_final": 1.0,
        "updates": 10,
        "bytes_up": 1000,
        "dense_bytes_up": 10000,
        "upload_saving": 10.0,
        "bytes_down": 2000,
        "energy_mj": 12.5,
        "rejected": {},
        "checkpoint": "c",
        "metrics": "m",
        "kernels": {"micropython": 5, "compiled": 1},
    }
    demo.print_summary(summary, tmp_path)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("agents' kernels"))
    assert line.endswith(
        " 1 compiled (tmf_kernels), 5 micropython (pure-Python kernels); each prices its energy"
        " with its own"
    )
    del summary["kernels"]
    demo.print_summary(summary, tmp_path)
    assert "kernels" not in capsys.readouterr().out


def test_the_micropython_agent_kernels_follow_its_path():
    exe, about = demo.micropython_agent()
    if exe is None:  # setup installs it: a missing one is a broken install, not a skip
        pytest.fail(about)
    assert demo.micropython_kernels(exe, native=False) == "micropython"
    assert demo.micropython_kernels(exe) in ("compiled", "micropython")
