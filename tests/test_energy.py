"""device_agent/energy.py: MQTT framing on the wire, energy monotone in what it counts, compute
priced from instructions and cycles per instruction for the pure-Python and compiled kernels,
idle listening, and its figures held to the counts of benchmarks/results/device-cortexm.json."""

import json
import subprocess

import pytest

from benchmarks import device_bench
from benchmarks.docgen import pages
from broker_service.testing.session import micropython_exe
from device_agent import energy
from tests.mqtt_helpers import ROOT

BOARDS = sorted(energy.PROFILES)
RESULTS = ROOT / "benchmarks" / "results" / "device-cortexm.json"
AGREE = 0.02
"""How far (relative) energy.py's rounded figures may sit from the committed measurement."""


def _publish_packet(topic: bytes, payload: bytes, packet_id=None) -> bytes:
    """An MQTT 3.1.1 PUBLISH written out by hand (section 3.3), remaining length < 16384."""
    variable = len(topic).to_bytes(2, "big") + topic
    if packet_id is not None:
        variable += packet_id.to_bytes(2, "big")
    remaining = len(variable) + len(payload)
    length = (
        bytes([remaining]) if remaining < 128 else bytes([remaining % 128 | 128, remaining >> 7])
    )
    first = 0x30 | (2 if packet_id is not None else 0)
    return bytes([first]) + length + variable + payload


def test_publish_size_matches_a_packet_written_by_hand():
    small = _publish_packet(b"a/b", b"hello", packet_id=1)
    assert small == b"\x32\x0c\x00\x03a/b\x00\x01hello"
    assert energy.mqtt_publish_bytes(5, 3, qos=1) == len(small) == 14
    assert energy.mqtt_publish_bytes(5, 3, qos=0) == len(_publish_packet(b"a/b", b"hello")) == 12
    # remaining length 127 fits one varint byte, 128 needs two
    assert energy.mqtt_publish_bytes(120, 3) == len(_publish_packet(b"a/b", bytes(120), 1)) == 129
    assert energy.mqtt_publish_bytes(121, 3) == len(_publish_packet(b"a/b", bytes(121), 1)) == 131
    topic = b"tinymetafed/default/devices/esp32-kitch-1/update"
    packet = _publish_packet(topic, bytes(371), packet_id=7)
    assert energy.mqtt_publish_bytes(371, len(topic)) == len(packet)


def test_wire_bytes_count_tcp_ip_puback_and_tls_by_hand():
    # PUBLISH 14 B + 40 B TCP/IP; the ACK of the PUBACK 40 B. Back: an ACK (40 B), PUBACK 4 + 40.
    assert energy.wire_bytes(5, 3, qos=1) == (14 + 40 + 40, 40 + 4 + 40)
    assert energy.wire_bytes(5, 3, qos=0) == (12 + 40, 40)
    # TLS 1.2 AES-GCM: 29 B around the PUBLISH and around the PUBACK
    assert energy.wire_bytes(5, 3, qos=1, tls=True) == (14 + 29 + 40 + 40, 40 + 4 + 29 + 40)
    # 3,010 B of PUBLISH in segments of 1460, 1460 and 90 B: three headers and three ACKs
    assert energy.mqtt_publish_bytes(3000, 3) == 3010
    assert energy.wire_bytes(3000, 3, mss=1460) == (3010 + 3 * 40 + 40, 3 * 40 + 44)


def test_link_frames_cut_each_packet_to_the_link_mtu():
    # one full BLE segment: 1220 + 40 B of IP in frames of 247 B -> 6 frames; a 90 B tail -> 1
    assert energy.tcp_stream(1220, 1220, 247) == (1260, 1, 6)
    assert energy.tcp_stream(1310, 1220, 247) == (1310 + 80, 2, 7)
    assert energy.tcp_stream(1310, 1220) == (1390, 2, 2)
    assert energy.tcp_stream(0, 1220, 247) == (0, 0, 0)
    sent, sent_frames, received, received_frames = energy.mqtt_wire(2000, 44, link_mtu=247)
    assert (sent, received) == energy.wire_bytes(2000, 44)
    assert sent_frames > received_frames >= 2


@pytest.mark.parametrize("name", BOARDS)
@pytest.mark.parametrize("kernel", energy.KERNELS)
def test_energy_grows_with_each_input(name, kernel):
    board = energy.profile(name)
    base = dict(macs=50_000, bytes_up=400, bytes_down=5_000)
    e0 = energy.energy_mj(base["macs"], base["bytes_up"], base["bytes_down"], board, kernel)
    assert e0 > 0
    for key, more in (("macs", 60_000), ("bytes_up", 500), ("bytes_down", 6_000)):
        args = dict(base, **{key: more})
        assert (
            energy.energy_mj(args["macs"], args["bytes_up"], args["bytes_down"], board, kernel) > e0
        ), key
    args = (base["macs"], base["bytes_up"], base["bytes_down"], board, kernel)
    assert energy.energy_mj(*args, tls=True) > e0
    assert energy.energy_mj(*args, topic_len=80) > e0
    assert energy.energy_mj(*args, messages_down=3) > e0
    assert energy.energy_mj(*args, qos=0) < e0
    assert energy.energy_mj(0, 0, 0, board, kernel) == 0.0


def test_energy_keeps_its_call_signature_and_describes_the_agent_by_default():
    board = energy.profile()
    default = energy.energy_mj(75_840, 371, 4_600, board)
    explicit = energy.energy_mj(
        75_840, 371, 4_600, board, "micropython", energy.DEFAULT_TOPIC_LEN, 1, 2, 1, False
    )
    assert default == explicit
    # a device outside the cohort receives the model alone: one message, no compute
    listen = energy.energy_mj(0, 0, 4_600, board)
    assert listen == energy.radio_mj(0, 4_600, board, messages_up=0, messages_down=1) > 0
    assert energy.compute_mj(75_840, board) == pytest.approx(
        default - energy.radio_mj(371, 4_600, board)
    )


@pytest.mark.parametrize("name", BOARDS)
def test_compute_is_instructions_times_cycles_per_instruction_over_the_clock(name):
    board = energy.profile(name)
    for kernel in energy.KERNELS:
        per_mac = energy.instructions_per_mac(board, kernel)
        cpi = energy.cycles_per_instruction(board, kernel)
        assert per_mac == energy.INSTRUCTIONS_PER_MAC[board["isa"]][kernel] * board["isa_ratio"]
        assert cpi == energy.CORE_CPI[board["core"]][kernel] * board["cpi_factor"]
        assert energy.cycles_per_mac(board, kernel) == pytest.approx(per_mac * cpi)
        assert energy.compute_seconds(1_000_000, board, kernel) == pytest.approx(
            1e6 * per_mac * cpi / board["cpu_hz"]
        )
        assert energy.compute_seconds(1_000_000, board, kernel) == pytest.approx(
            energy.instruction_seconds(1e6 * per_mac, board, kernel)
        )
        assert energy.instruction_mj(2_000_000, board, kernel) == pytest.approx(
            board["supply_v"] * board["cpu_ma"] * energy.instruction_seconds(2e6, board, kernel)
        )
        assert 1.0 <= cpi < 3.0  # a scalar in-order core: at least one cycle an instruction
    # an interpreter costs tens to hundreds of times a compiled kernel per MAC
    mp = energy.compute_mj(1_000_000, board, "micropython")
    assert mp / energy.compute_mj(1_000_000, board, "compiled") > 10
    assert energy.compute_mj(1_000_000, board) == mp
    with pytest.raises(ValueError):
        energy.cycles_per_mac(board, "viper")
    with pytest.raises(ValueError):
        energy.instruction_seconds(1, board, "viper")


@pytest.mark.parametrize("name", BOARDS)
def test_listening_counts_the_model_the_pings_and_the_idle_current(name):
    board = energy.profile(name)
    assert energy.listen_energy_mj(0, 0, board) == 0.0
    idle = energy.listen_energy_mj(0, 60, board)
    assert idle == pytest.approx(
        board["supply_v"] * board["idle_ma"] * 60 + 4 * _ping_mj(board), rel=1e-9
    )
    assert energy.listen_energy_mj(5_000, 60, board) > idle
    assert energy.listen_energy_mj(5_000, 120, board) > energy.listen_energy_mj(5_000, 60, board)
    assert energy.listen_energy_mj(0, 60, board, keepalive=10) > idle
    model = energy.listen_energy_mj(5_000, 0, board)
    assert model == pytest.approx(energy.energy_mj(0, 0, 5_000, board))


def _ping_mj(board):
    """One PINGREQ/PINGRESP exchange, priced without idle current and without a model."""
    quiet = dict(board, idle_ma=0.0)
    return energy.listen_energy_mj(0, energy.DEFAULT_KEEPALIVE_S / 2, quiet)


def _close(got, want, what):
    assert abs(got / want - 1) <= AGREE, "%s: energy.py has %g, the measurement %g" % (
        what,
        got,
        want,
    )


def test_energy_figures_are_the_committed_counts():
    """INSTRUCTIONS_PER_MAC is the fit of the committed rounds and CORE_CPI the committed
    traces' CPI (to their rounding): re-run `python -m benchmarks.device_bench --cortexm` and
    copy them after a change to the agent or the kernels."""
    doc = json.loads(RESULTS.read_text())
    for isa, kernels in device_bench.ISA_TARGETS.items():
        for kernel, target in kernels.items():
            fit = doc["fit"][target]["instructions_per_mac"]
            _close(energy.INSTRUCTIONS_PER_MAC[isa][kernel], fit, "%s %s" % (isa, kernel))
    for core, kernels in doc["cpi"].items():
        for kernel, measured in kernels.items():
            _close(energy.CORE_CPI[core][kernel], measured["cpi"], "%s %s CPI" % (core, kernel))
    assert doc["model"] == json.loads(json.dumps(device_bench.model_figures()))


def test_committed_round_energy_is_what_energy_py_makes_of_the_counts():
    doc = json.loads(RESULTS.read_text())
    checked = 0
    for use_case, row in doc["energy"].items():
        for name, board in energy.PROFILES.items():
            radio = energy.radio_mj(row["bytes_up"], row["bytes_down"], board)
            assert row[name]["radio_mj"] == pytest.approx(radio)
            for kernel in energy.KERNELS:
                cell = row[name][kernel]
                model = energy.compute_seconds(row["macs"], board, kernel)
                assert cell["model_compute_s"] == pytest.approx(model)
                target = device_bench.ISA_TARGETS[board["isa"]][kernel]
                run = device_bench.round_of(doc["runs"], target, use_case)
                if run is None:
                    assert "compute_s" not in cell
                    continue
                instructions = run["instructions"] * board["isa_ratio"]
                assert cell["compute_s"] == pytest.approx(
                    energy.instruction_seconds(instructions, board, kernel)
                )
                assert cell["energy_mj"] == pytest.approx(
                    energy.instruction_mj(instructions, board, kernel) + radio
                )
                checked += 1
    assert checked == len(doc["energy"]) * len(energy.PROFILES) * len(energy.KERNELS)


def test_device_doc_shows_the_round_energy_block():
    assert "device.md" in pages.placed(ROOT)["device_energy"]


def test_micropython_computes_the_same_figures():
    code = (
        "from device_agent import energy as e\n"
        "b = e.profile('esp32')\n"
        "print(e.wire_bytes(3000, 44, 1, True), e.mqtt_wire(2000, 44, 1, False, 1220, 247))\n"
        "print('%.6f' % e.energy_mj(150912, 409, 5130, b))\n"
        "print('%.6f' % e.listen_energy_mj(5000, 90, b))\n"
        "print('%.9f' % e.compute_seconds(3569040, e.profile('nrf52840'), 'compiled'))\n"
    )
    mp = subprocess.run(
        [micropython_exe(), "-X", "heapsize=256K", "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split("\n")
    b = energy.profile("esp32")
    assert mp[0] == "%s %s" % (
        energy.wire_bytes(3000, 44, 1, True),
        energy.mqtt_wire(2000, 44, 1, False, 1220, 247),
    )
    e, listen = float(mp[1]), float(mp[2])
    assert e == pytest.approx(energy.energy_mj(150912, 409, 5130, b), rel=1e-5)
    assert listen == pytest.approx(energy.listen_energy_mj(5000, 90, b), rel=1e-5)
    compiled = energy.compute_seconds(3569040, energy.profile("nrf52840"), "compiled")
    assert float(mp[3]) == pytest.approx(compiled, rel=1e-5)
