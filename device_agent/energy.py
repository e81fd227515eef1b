"""Energy of the agent's work on a board: compute from MACs, radio from the MQTT messages as
they go over the air, and the cost of staying online. In millijoules:
energy = supply_V · (I_cpu · t_cpu + I_tx · t_tx + I_rx · t_rx + I_idle · t_idle).

t_cpu = MACs · cycles_per_mac / f_cpu. Kernel "micropython" (the default, the agent that ships):
MICROPYTHON_REF_CYCLES_PER_MAC (fitted by benchmarks/device_bench.py) times the board's
interp_ratio; kernel "compiled": a C kernel's compiled_cycles_per_mac. Radio: wire_bytes and
mqtt_wire count MQTT, TCP/IP and TLS framing; each IP packet is cut into link frames with the
board's per-frame bytes and radio-on time. listen_energy_mj prices a device that is online but
not training. What is left out: docs/device.md.

Sources (each figure and its derivation in the comments below):
- nRF52840: Nordic Semiconductor, "nRF52840 Product Specification" v1.7.
- ESP32: Espressif, "ESP32 Series Datasheet" v4.x; the README of ESP-IDF's wifi/power_save
  example (idle current).
- RP2040 (Pico W): Raspberry Pi, "RP2040 Datasheet"; mjoldfield.com, "Pico power" (2021).
- MicroPython speed: micropython/micropython pull request 4858 (perf_bench on PYBv1.0);
  S. Russell, scruss.com, "Parallel MicroPython Benchmarking" (MicroPython 1.24 on many boards).
- Framing: MQTT 3.1.1 (OASIS), RFC 791 and 9293 (IPv4, TCP), RFC 5246 and 5288 (TLS 1.2 with
  AES-GCM), Bluetooth Core 5.x Vol 6 Part B (BLE link layer), IEEE 802.11-2016 (Wi-Fi).
Figures marked "assumption" are ours, not from a source.
"""

# MicroPython kernel. device_bench.py fits seconds per MAC on the reconstruction and adaptation
# step times of the four default models under the unix port, and ties the bench host to the
# pyboard (STM32F405, Cortex-M4F, 168 MHz) with perf_bench (bm_float, misc_mandel, N=100 M=100:
# 53,790 and 138,049 µs on PYBv1.0). A second term per parameter updated was fitted too and
# rejected (its coefficient came out negative); device-bench.json holds both fits.
# interp_ratio (cycles of the same interpreted work relative to that Cortex-M4F):
# - esp32 1.13, rp2040 1.13: scruss.com timed one float-heavy program on pyboard v1.1 (STM32F405
#   at 168 MHz) 13.0 s, ESP32 at 160 MHz 15.4 s, RP2040 at 125 MHz 19.8 s: (15.4 · 160) /
#   (13.0 · 168) and (19.8 · 125) / (13.0 · 168).
# - nrf52840 1.0, assumption: the same Cortex-M4F core, with CoreMark per MHz alike (Nordic gives
#   212 CoreMark at 64 MHz from flash with cache, 3.3 per MHz).
# Compiled kernel, assumptions: 4 cycles per float32 MAC on an FPU core (two loads, a fused
# multiply-add, loop overhead); 100 on the RP2040's FPU-less Cortex-M0+ (two soft-float calls of
# about 50 cycles each to the bootrom's fast floating-point library, RP2040 datasheet section 2.8).
#
# Radio. An MQTT 3.1.1 PUBLISH (fixed header with its remaining-length varint, topic, packet id
# at QoS 1, payload; one TLS 1.2 AES-GCM record of +29 B when `tls`) is cut into TCP segments of
# at most the board's `mss`, each with 40 B of IPv4 and TCP headers and acknowledged by a 40 B
# TCP ACK; at QoS 1 the receiver answers with a 4 B PUBACK in a segment of its own, acknowledged
# in turn. Each IP packet is cut into link frames of at most `link_mtu` bytes; a frame adds
# `link_frame_bytes` of link headers at the PHY bit rate and `link_frame_s` of radio-on time
# without payload (inter-frame spaces, contention, the link ACK), counted at the receive current.
# - BLE 1M PHY with LE Data Length Extension: a data PDU has 1 B preamble, 4 B access address,
#   2 B header, 4 B MIC, 3 B CRC (14 B) around up to 251 B, of which 4 B L2CAP header (247 B of
#   IP); 2 · T_IFS (150 µs) and an empty PDU back (80 µs) per frame.
# - Wi-Fi 802.11g OFDM at 54 Mbit/s: QoS data header 26 B, LLC/SNAP 8 B, CCMP 16 B, FCS 4 B
#   (54 B) around up to 1500 B; 20 µs PHY preamble, DIFS 28 µs, mean backoff 67.5 µs (CWmin 15
#   slots of 9 µs, halved), SIFS 10 µs, ACK 28 µs: 154 µs per frame.
# Idle listening: the messages received, a PINGREQ/PINGRESP every keepalive/2 seconds (as
# device_agent.transport pings) and the board's idle current `idle_ma` the whole time.
#
# Boards:
# - nrf52840 (default; the class of board TinyMetaFed was evaluated on): 64 MHz Cortex-M4F; CPU
#   running CoreMark from flash with cache and DC/DC at 3 V: 52 µA/MHz, i.e. 3.3 mA at 64 MHz;
#   radio TX at 0 dBm with DC/DC 4.8 mA; RX at 1 Mbit/s BLE with DC/DC 4.6 mA; BLE 1 Mbit/s PHY.
#   Assumptions: IP over BLE (IPSP) with compressed IPv6 and TCP headers taken as 40 B; an MSS of
#   1220 B (the IPv6 minimum MTU of 1280 B less uncompressed headers); idle 0.3 mA (the CPU
#   waiting with the 64 MHz crystal running, plus the BLE connection events).
# - esp32: modem-sleep at 160 MHz (MicroPython's default clock on the esp32 port), dual core,
#   27-44 mA (midpoint 35.5 mA used); Wi-Fi TX 802.11g 54 Mbit/s at +16 dBm 190 mA; RX
#   802.11b/g/n 95-100 mA (100 mA used); 3.3 V supply; idle 45 mA (ESP-IDF power_save example:
#   a station in minimum modem sleep, waking every DTIM); TCP MSS 1440 B (ESP-IDF lwIP default).
# - rp2040 (Raspberry Pi Pico W): 125 MHz Cortex-M0+, CYW43439 802.11n radio. Assumptions, not
#   datasheet figures: CPU 25 mA at 3.3 V (a Pico running Python draws about 18 mA at 5 V on
#   VBUS, mjoldfield.com); radio TX 200 mA and RX 45 mA (typical of a 1x1 2.4 GHz Wi-Fi chip) plus
#   the CPU's 25 mA serving it; idle 35 mA; link as 802.11g at 54 Mbit/s; TCP MSS 1460 B.

KERNELS = ("micropython", "compiled")
DEFAULT_KERNEL = "micropython"

MICROPYTHON_REF_CYCLES_PER_MAC = 4300.0
"""Cycles per MAC of the MicroPython agent on the Cortex-M4F reference core (see above;
benchmarks/results/device-bench.json `fit.reference_cycles_per_mac`)."""

TCPIP_HEADER_BYTES = 40
"""IPv4 (20 B) and TCP (20 B) headers without options, per segment; a pure ACK is just these."""

MQTT_PUBACK_BYTES = 4
"""A PUBACK: fixed header (2 B) and packet id (2 B)."""

MQTT_PING_BYTES = 2
"""A PINGREQ or a PINGRESP: the fixed header alone."""

TLS_RECORD_BYTES = 29
"""TLS 1.2 record with AES-GCM: 5 B header, 8 B explicit nonce, 16 B tag."""

DEFAULT_TOPIC_LEN = 44
"""Topic length of the agent's device topics with the default prefix and fleet and a
12-character device id, e.g. tinymetafed/default/devices/nrf52-desk-1/cmd."""

DEFAULT_KEEPALIVE_S = 30
"""The agent's default MQTT keepalive (device_agent.config); it pings every keepalive/2."""

PROFILES = {
    "nrf52840": {
        "supply_v": 3.0,
        "cpu_hz": 64.0e6,
        "cpu_ma": 3.3,
        "tx_ma": 4.8,
        "rx_ma": 4.6,
        "idle_ma": 0.3,
        "radio_bps": 1.0e6,
        "mss": 1220,
        "link_mtu": 247,
        "link_frame_bytes": 14,
        "link_frame_s": 380.0e-6,
        "interp_ratio": 1.0,
        "compiled_cycles_per_mac": 4.0,
    },
    "esp32": {
        "supply_v": 3.3,
        "cpu_hz": 160.0e6,
        "cpu_ma": 35.5,
        "tx_ma": 190.0,
        "rx_ma": 100.0,
        "idle_ma": 45.0,
        "radio_bps": 54.0e6,
        "mss": 1440,
        "link_mtu": 1500,
        "link_frame_bytes": 54,
        "link_frame_s": 154.0e-6,
        "interp_ratio": 1.13,
        "compiled_cycles_per_mac": 4.0,
    },
    "rp2040": {
        "supply_v": 3.3,
        "cpu_hz": 125.0e6,
        "cpu_ma": 25.0,
        "tx_ma": 225.0,
        "rx_ma": 70.0,
        "idle_ma": 35.0,
        "radio_bps": 54.0e6,
        "mss": 1460,
        "link_mtu": 1500,
        "link_frame_bytes": 54,
        "link_frame_s": 154.0e-6,
        "interp_ratio": 1.13,
        "compiled_cycles_per_mac": 100.0,
    },
}
DEFAULT_PROFILE = "nrf52840"


def profile(name=DEFAULT_PROFILE):
    """The named board profile (KeyError lists nothing; callers check names with PROFILES)."""
    return PROFILES[name]


def cycles_per_mac(board, kernel=DEFAULT_KERNEL):
    """CPU cycles one multiply-accumulate of a training step costs on the board with `kernel`."""
    if kernel == "compiled":
        return board["compiled_cycles_per_mac"]
    if kernel != "micropython":
        raise ValueError("kernel %r is not one of %s" % (kernel, ", ".join(KERNELS)))
    return MICROPYTHON_REF_CYCLES_PER_MAC * board["interp_ratio"]


def compute_seconds(macs, board, kernel=DEFAULT_KERNEL):
    """Estimated time to execute `macs` multiply-accumulates on the board."""
    return macs * cycles_per_mac(board, kernel) / board["cpu_hz"]


def _ceil_div(a, b):
    return -(-a // b)


def mqtt_publish_bytes(payload_len, topic_len, qos=1):
    """Size of an MQTT 3.1.1 PUBLISH packet: fixed header, topic, packet id (QoS > 0), payload."""
    remaining = 2 + topic_len + (2 if qos else 0) + payload_len
    varint = 1
    while remaining >= 128**varint and varint < 4:
        varint += 1
    return 1 + varint + remaining


def tcp_stream(stream_len, mss, link_mtu=None):
    """(IP bytes, IP packets, link frames) of `stream_len` bytes of TCP payload sent in segments
    of at most `mss` bytes with TCPIP_HEADER_BYTES each, each packet cut into frames of at most
    `link_mtu` bytes (one frame a packet without it)."""
    full, last = divmod(stream_len, mss)
    packets = full + (1 if last else 0)
    if link_mtu is None:
        frames = packets
    else:
        frames = full * _ceil_div(mss + TCPIP_HEADER_BYTES, link_mtu)
        if last:
            frames += _ceil_div(last + TCPIP_HEADER_BYTES, link_mtu)
    return stream_len + packets * TCPIP_HEADER_BYTES, packets, frames


def tcp_exchange(request_len, reply_len, mss=1460, link_mtu=None):
    """A request and its reply over TCP, seen from the requester: (sent bytes, sent frames,
    received bytes, received frames). Every data segment is acknowledged by a pure ACK (none is
    piggybacked: an upper bound); no reply when `reply_len` is 0."""
    sent, packets, sent_frames = tcp_stream(request_len, mss, link_mtu)
    received, received_frames = packets * TCPIP_HEADER_BYTES, packets
    if reply_len:
        r_bytes, r_packets, r_frames = tcp_stream(reply_len, mss, link_mtu)
        received += r_bytes
        received_frames += r_frames
        sent += r_packets * TCPIP_HEADER_BYTES
        sent_frames += r_packets
    return sent, sent_frames, received, received_frames


def mqtt_wire(payload_len, topic_len, qos=1, tls=False, mss=1460, link_mtu=None):
    """One MQTT PUBLISH over TCP/IP (a TLS record around each MQTT packet when `tls`), seen from
    the publisher: (sent bytes, sent frames, received bytes, received frames); at QoS 1 the PUBACK
    comes back."""
    record = TLS_RECORD_BYTES if tls else 0
    publish = mqtt_publish_bytes(payload_len, topic_len, qos) + record
    puback = MQTT_PUBACK_BYTES + record if qos else 0
    return tcp_exchange(publish, puback, mss, link_mtu)


def wire_bytes(payload_len, topic_len, qos=1, tls=False, mss=1460):
    """(bytes sent, bytes received) at the IP layer by the publisher of one MQTT message."""
    sent, _, received, _ = mqtt_wire(payload_len, topic_len, qos, tls, mss)
    return sent, received


def _charge(board, tx_bytes, tx_frames, rx_bytes, rx_frames):
    """Radio charge in mA·s of sending and receiving that many IP bytes in that many frames."""
    rate = board["radio_bps"] / 8.0
    t_tx = (tx_bytes + tx_frames * board["link_frame_bytes"]) / rate
    t_rx = (rx_bytes + rx_frames * board["link_frame_bytes"]) / rate
    t_rx += (tx_frames + rx_frames) * board["link_frame_s"]
    return board["tx_ma"] * t_tx + board["rx_ma"] * t_rx


def messages_charge(total_bytes, messages, board, sending, topic_len, qos=1, tls=False):
    """Radio charge (mA·s) of `total_bytes` of MQTT payload in `messages` messages that the
    device sends (`sending`) or receives; the bytes are shared out evenly."""
    if messages <= 0:
        return 0.0
    each, extra = divmod(int(total_bytes), messages)
    charge = 0.0
    for size, count in ((each, messages - 1), (each + extra, 1)):
        if count:
            w = mqtt_wire(size, topic_len, qos, tls, board["mss"], board["link_mtu"])
            own = w if sending else (w[2], w[3], w[0], w[1])
            charge += count * _charge(board, own[0], own[1], own[2], own[3])
    return charge


def compute_mj(macs, board, kernel=DEFAULT_KERNEL):
    """Energy in millijoules of computing `macs` multiply-accumulates with `kernel`."""
    return board["supply_v"] * board["cpu_ma"] * compute_seconds(macs, board, kernel)


def radio_mj(
    bytes_up,
    bytes_down,
    board,
    topic_len=DEFAULT_TOPIC_LEN,
    messages_up=None,
    messages_down=None,
    qos=1,
    tls=False,
):
    """Energy in millijoules of publishing `bytes_up` and receiving `bytes_down` of payload.

    Messages default to the agent's round: one update up; the model and the command down when
    it uploads too, the model alone when it only receives."""
    if messages_up is None:
        messages_up = 1 if bytes_up else 0
    if messages_down is None:
        messages_down = (2 if bytes_up else 1) if bytes_down else 0
    charge = messages_charge(bytes_up, messages_up, board, True, topic_len, qos, tls)
    charge += messages_charge(bytes_down, messages_down, board, False, topic_len, qos, tls)
    return board["supply_v"] * charge


def energy_mj(
    macs,
    bytes_up,
    bytes_down,
    board,
    kernel=DEFAULT_KERNEL,
    topic_len=DEFAULT_TOPIC_LEN,
    messages_up=None,
    messages_down=None,
    qos=1,
    tls=False,
):
    """Estimated energy in millijoules of computing `macs` and of sending `bytes_up` and
    receiving `bytes_down` of MQTT payload with their framing (see radio_mj for the defaults)."""
    radio = radio_mj(bytes_up, bytes_down, board, topic_len, messages_up, messages_down, qos, tls)
    return compute_mj(macs, board, kernel) + radio


def listen_energy_mj(
    bytes_received,
    seconds,
    board,
    messages=None,
    keepalive=DEFAULT_KEEPALIVE_S,
    topic_len=DEFAULT_TOPIC_LEN,
    tls=False,
):
    """Energy in millijoules of a device online for `seconds` but not training: receiving
    `bytes_received` of payload (one message unless told), a PINGREQ answered by a PINGRESP every
    keepalive/2 seconds, and the board's idle current throughout."""
    if messages is None:
        messages = 1 if bytes_received else 0
    charge = messages_charge(bytes_received, messages, board, False, topic_len, 1, tls)
    record = TLS_RECORD_BYTES if tls else 0
    pings = int(2 * seconds / keepalive) if keepalive else 0
    ping = MQTT_PING_BYTES + record
    w = tcp_exchange(ping, ping, board["mss"], board["link_mtu"])
    charge += pings * _charge(board, w[0], w[1], w[2], w[3])
    charge += board["idle_ma"] * seconds
    return board["supply_v"] * charge
