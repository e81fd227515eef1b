"""device_agent/energy.py: MQTT framing on the wire, energy monotone in what it counts, the
MicroPython and compiled kernels, idle listening, and the fit behind the MicroPython figure."""

import json
import subprocess

import pytest

from benchmarks import device_bench, make_docs
from broker_service.testing.session import micropython_exe
from device_agent import energy
from tests.mqtt_helpers import ROOT

BOARDS = sorted(energy.PROFILES)
RESULTS = ROOT / "benchmarks" / "results" / "device-bench.json"


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
def test_micropython_kernel_costs_what_its_cycles_say_against_the_compiled_one(name):
    board = energy.profile(name)
    mp = energy.compute_mj(1_000_000, board, "micropython")
    cc = energy.compute_mj(1_000_000, board, "compiled")
    expected = energy.MICROPYTHON_REF_CYCLES_PER_MAC * board["interp_ratio"]
    assert mp / cc == pytest.approx(expected / board["compiled_cycles_per_mac"])
    assert mp / cc > 40  # an interpreter costs tens to thousands of times a C kernel per MAC
    assert energy.cycles_per_mac(board) == pytest.approx(expected)
    with pytest.raises(ValueError):
        energy.cycles_per_mac(board, "viper")


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


def test_the_fit_recovers_known_costs():
    a, b = 2e-7, 5e-8
    points = [
        (m, p, a * m + b * p) for m, p in ((1000, 400), (3000, 1100), (150000, 2000), (55000, 700))
    ]
    got_a, got_b = device_bench.fit_per_mac_and_param(points)
    assert (got_a, got_b) == (pytest.approx(a), pytest.approx(b))
    assert device_bench.rms_relative_error(points, got_a, got_b) == pytest.approx(0, abs=1e-9)
    only = [(m, p, a * m) for m, p, _ in points]
    assert device_bench.fit_per_mac(only) == pytest.approx(a)
    assert device_bench.rms_relative_error(only, a) == pytest.approx(0, abs=1e-12)
    assert device_bench.rms_relative_error(only, 2 * a) == pytest.approx(1.0)
    host = {name: us / 100 for name, us in device_bench.REFERENCE["perf_bench_us"].items()}
    assert device_bench.reference_slowdown(host) == pytest.approx(100)


def test_committed_figures_agree_with_the_model():
    doc = json.loads(RESULTS.read_text())
    fit = doc["fit"]
    ratio = energy.MICROPYTHON_REF_CYCLES_PER_MAC / fit["reference_cycles_per_mac"]
    assert 0.8 < ratio < 1.25, "device_agent/energy.py's constant no longer matches the fit"
    for name, kernels in fit["boards"].items():
        for kernel, cycles in kernels.items():
            assert cycles == pytest.approx(energy.cycles_per_mac(energy.profile(name), kernel))
    r = doc["results"][0]
    board = energy.profile(energy.DEFAULT_PROFILE)
    down = r["model_bytes"] + r["command_bytes"]
    assert r["energy"][energy.DEFAULT_PROFILE]["micropython"]["energy_mj"] == pytest.approx(
        energy.energy_mj(r["round_macs"], r["payload_bytes"], down, board)
    )


def test_device_doc_holds_the_table_of_the_committed_figures():
    table = make_docs.device_energy_table(json.loads(RESULTS.read_text()))
    text = (ROOT / "docs" / "device.md").read_text()
    block = text.split(device_bench.DOC_BEGIN, 1)[1].split(device_bench.DOC_END, 1)[0]
    assert block.strip() == table.strip()


def test_micropython_computes_the_same_figures():
    code = (
        "from device_agent import energy as e\n"
        "b = e.profile('esp32')\n"
        "print(e.wire_bytes(3000, 44, 1, True), e.mqtt_wire(2000, 44, 1, False, 1220, 247))\n"
        "print('%.6f' % e.energy_mj(150912, 409, 5130, b))\n"
        "print('%.6f' % e.listen_energy_mj(5000, 90, b))\n"
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
