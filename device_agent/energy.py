"""Energy of the agent's work on a board: compute from the instructions its training executes,
radio from the MQTT messages as they go over the air, and the cost of staying online. In
millijoules: energy = supply_V · (I_cpu · t_cpu + I_tx · t_tx + I_rx · t_rx + I_idle · t_idle).

t_cpu = instructions · CPI / f_cpu, a round's instructions being its MACs · instructions per MAC.
The instructions per MAC are counted: benchmarks/device_bench.py runs the agent's rounds on
MicroPython firmware for Cortex-M cores under QEMU with `-icount shift=0` (its clock advances one
virtual nanosecond per executed instruction) and fits instructions per MAC on the four default
rounds, for each kernel: "micropython" (the default: the pure-Python kernels) and "compiled"
(the native module tmf_kernels). CPI (cycles per instruction) is the instruction mix of the
traced training steps priced by the core's published instruction timings, times the board's
`cpi_factor` for what those leave out (memory wait states; for the ESP32, its cycles against a
Cortex-M4's). Radio: wire_bytes and mqtt_wire count MQTT, TCP/IP and TLS framing; each IP
packet is cut into link frames with the board's per-frame bytes and radio-on time.
listen_energy_mj prices a device that is online but not training (with the radio's power save
when told). A device that sleeps between wakes, and its battery: device_agent/battery.py (kept
apart so the agent, which imports this module, does not carry it). What is left out:
docs/device.md.

Sources (each figure and its derivation in the comments below):
- nRF52840: Nordic Semiconductor, "nRF52840 Product Specification" v1.7.
- ESP32: Espressif, "ESP32 Series Datasheet" v4.x; the README of ESP-IDF's wifi/power_save
  example (idle current).
- RP2040 (Pico W): Raspberry Pi, "RP2040 Datasheet"; mjoldfield.com, "Pico power" (2021).
- The boards' sleep, wake, flash and power-save figures (PROFILES): device_agent/battery.py.
- Instruction timings: Arm, "Cortex-M4 Technical Reference Manual" r0p1 (DDI 0439), sections
  3.3 (instruction set summary) and 7.2 (FPU); Arm, "Cortex-M0+ Technical Reference Manual"
  r0p1 (DDI 0484), section 3.3.
- The ESP32's cycles against a Cortex-M4F's: S. Russell, scruss.com, "Parallel MicroPython
  Benchmarking" (MicroPython 1.24 on many boards).
- Framing: MQTT 3.1.1 (OASIS), RFC 791 and 9293 (IPv4, TCP), RFC 5246 and 5288 (TLS 1.2 with
  AES-GCM), Bluetooth Core 5.x Vol 6 Part B (BLE link layer), IEEE 802.11-2016 (Wi-Fi).
Figures marked "assumption" are ours, not from a source; the measured ones and how they were
measured are in benchmarks/results/device-cortexm.json ("fit", "cpi").
"""

# Compute. A board's `isa` names the counts it takes (INSTRUCTIONS_PER_MAC):
# - "armv7em", Thumb-2 with a single-precision FPU: the pure-Python agent (its
#   @micropython.native kernels compiled to Thumb-2) on the MPS2_AN500 Cortex-M7 firmware with
#   single-precision floats, and the armv7emsp build of tmf_kernels (compiled for the
#   Cortex-M4F) on it;
# - "armv6m", Thumb-1 without an FPU: the pure-Python agent as bytecode on the MICROBIT Cortex-M0
#   firmware (which has no native emitter: an upper bound for a Pico, whose port compiles the
#   @micropython.native kernels), and the armv6m build of tmf_kernels (soft float from libgcc)
#   on the MPS2_AN385 Cortex-M3 firmware, the kernels' instructions being a Cortex-M0+'s.
# `isa_ratio` scales the counts to the board's own instruction set: 1 where they are its own.
# CORE_CPI: every instruction of the traced training steps (device-cortexm.json "traces", with
# whether each branch was taken) priced by the core's manual at zero wait states. Cortex-M4:
# data processing and multiplies 1 cycle; LDR/STR 2, 1 when pipelined after another single load
# or store; LDRD/STRD 3; LDM/STM/PUSH/POP 1+N registers; VLDM/VSTM/VPUSH/VPOP 1+N; VLDR/VSTR 2;
# VADD/VSUB/VMUL/VCMP/VCVT/VMOV 1, VMLA/VFMA 3, VDIV/VSQRT 14; SDIV/UDIV 2-12 (7 used); a taken
# branch, CBZ/CBNZ taken, B, BL, BX, BLX 1+P and POP with PC 1+N+P, P the pipeline refill of 1 to
# 3 cycles taken as 2 (device-cortexm.json gives P = 1 and 3 too); IT 1. Cortex-M0+: data
# processing 1; loads and stores 2; LDM/STM/PUSH/POP 1+N, POP with PC 3+N; a taken branch 2, not
# taken 1; B 2, BL 3, BX/BLX 2; MULS 1 (the RP2040 has the single-cycle multiplier). Left out:
# FPU and load-use stalls, and all the memory adds (the boards' cpi_factor below).
# Boards' cpi_factor:
# - nrf52840 1.05, assumption: the CPU runs code from flash through its instruction cache;
#   Nordic rates it 212 CoreMark at 64 MHz so (3.3 CoreMark/MHz, product specification, "CPU"),
#   a little under the 3.4 Arm gives the Cortex-M4 at zero wait states; the interpreter's hot
#   code is larger than CoreMark's, so more than that difference is taken.
# - esp32 1.13: scruss.com timed one float-heavy MicroPython program 13.0 s on a pyboard v1.1
#   (STM32F405, Cortex-M4F at 168 MHz, flash behind ST's zero-wait-state accelerator) and 15.4 s
#   on an ESP32 at 160 MHz: (15.4 · 160) / (13.0 · 168) = 1.13 ESP32 cycles per Cortex-M4 cycle
#   of the same interpreted work. Assumptions: the Xtensa LX6 runs as many instructions as
#   Thumb-2 (isa_ratio 1), and the compiled kernel has the interpreter's ratio.
# - rp2040 1.10, assumption: code runs from the external QSPI flash through the 16 KB XIP cache
#   (RP2040 datasheet, "XIP cache"), where a miss stalls the core for tens of cycles.
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
#
KERNELS = ("micropython", "compiled")
DEFAULT_KERNEL = "micropython"

INSTRUCTIONS_PER_MAC = {
    "armv7em": {"micropython": 1600.0, "compiled": 6.29},
    "armv6m": {"micropython": 2900.0, "compiled": 162.0},
}
"""Instructions a multiply-accumulate of a device round costs, by instruction set and kernel:
fitted on the instructions and MACs of the four default rounds (see above;
benchmarks/results/device-cortexm.json "fit")."""

CORE_CPI = {
    "cortex-m4": {"micropython": 1.83, "compiled": 1.42},
    "cortex-m0+": {"micropython": 1.55, "compiled": 1.34},
}
"""Cycles per instruction of each kernel's training steps at zero wait states, by core: their
instruction mix priced by the core's manual (see above; device-cortexm.json "cpi")."""

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
        "isa": "armv7em",
        "isa_ratio": 1.0,
        "core": "cortex-m4",
        "cpi_factor": 1.05,
        "sleep_ua": 3.16,
        "sleep_keeps_ram": True,
        "boot_s": 0.001,
        "import_s": 0.0,
        "radio_up_s": 0.0,
        "assoc_s": 0.3,
        "assoc_ma": 2.0,
        "wait_ma": 0.3,
        "tls_cycles": 68.0e6,
        "ps_idle_ma": 0.010,
        "retained_bytes": 65536,
        "flash_block_s": 0.085,
        "flash_page_s": 0.0026,
        "flash_ma": 5.0,
        "flash_endurance": 10000,
        "fs_free_blocks": 32,
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
        "isa": "armv7em",
        "isa_ratio": 1.0,
        "core": "cortex-m4",
        "cpi_factor": 1.13,
        "sleep_ua": 10.0,
        "sleep_keeps_ram": False,
        "boot_s": 0.5,
        "import_s": 0.3,
        "radio_up_s": 0.1,
        "assoc_s": 1.5,
        "assoc_ma": 100.0,
        "wait_ma": 100.0,
        "tls_cycles": 77.0e6,
        "ps_idle_ma": 30.0,
        "retained_bytes": 2048,
        "flash_block_s": 0.045,
        "flash_page_s": 0.0004,
        "flash_ma": 55.5,
        "flash_endurance": 100000,
        "fs_free_blocks": 256,
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
        "isa": "armv6m",
        "isa_ratio": 1.0,
        "core": "cortex-m0+",
        "cpi_factor": 1.10,
        "sleep_ua": 1970.0,
        "sleep_keeps_ram": True,
        "boot_s": 0.002,
        "import_s": 0.0,
        "radio_up_s": 0.4,
        "assoc_s": 1.5,
        "assoc_ma": 70.0,
        "wait_ma": 70.0,
        "tls_cycles": 204.0e6,
        "ps_idle_ma": 22.0,
        "retained_bytes": 65536,
        "flash_block_s": 0.045,
        "flash_page_s": 0.0004,
        "flash_ma": 45.0,
        "flash_endurance": 100000,
        "fs_free_blocks": 106,
    },
}
DEFAULT_PROFILE = "nrf52840"


def profile(name=DEFAULT_PROFILE):
    """The named board profile (KeyError lists nothing; callers check names with PROFILES)."""
    return PROFILES[name]


def _kernel(kernel):
    if kernel not in KERNELS:
        raise ValueError("kernel %r is not one of %s" % (kernel, ", ".join(KERNELS)))
    return kernel


def instructions_per_mac(board, kernel=DEFAULT_KERNEL):
    """Instructions a MAC of a device round costs on the board with `kernel`."""
    return INSTRUCTIONS_PER_MAC[board["isa"]][_kernel(kernel)] * board["isa_ratio"]


def cycles_per_instruction(board, kernel=DEFAULT_KERNEL):
    """CPU cycles an instruction of `kernel`'s training costs on the board."""
    return CORE_CPI[board["core"]][_kernel(kernel)] * board["cpi_factor"]


def cycles_per_mac(board, kernel=DEFAULT_KERNEL):
    """CPU cycles a multiply-accumulate of a device round costs on the board with `kernel`."""
    return instructions_per_mac(board, kernel) * cycles_per_instruction(board, kernel)


def instruction_seconds(instructions, board, kernel=DEFAULT_KERNEL):
    """Time the board takes for `instructions` of its own instruction set with `kernel`."""
    return instructions * cycles_per_instruction(board, kernel) / board["cpu_hz"]


def compute_seconds(macs, board, kernel=DEFAULT_KERNEL):
    """Estimated time of a device round's `macs` multiply-accumulates on the board."""
    return instruction_seconds(macs * instructions_per_mac(board, kernel), board, kernel)


def ceil_div(a, b):
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
        frames = full * ceil_div(mss + TCPIP_HEADER_BYTES, link_mtu)
        if last:
            frames += ceil_div(last + TCPIP_HEADER_BYTES, link_mtu)
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


def link_charge(board, tx_bytes, tx_frames, rx_bytes, rx_frames):
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
            charge += count * link_charge(board, own[0], own[1], own[2], own[3])
    return charge


def compute_mj(macs, board, kernel=DEFAULT_KERNEL):
    """Energy in millijoules of computing `macs` multiply-accumulates with `kernel`."""
    return board["supply_v"] * board["cpu_ma"] * compute_seconds(macs, board, kernel)


def instruction_mj(instructions, board, kernel=DEFAULT_KERNEL):
    """Energy in millijoules of executing `instructions` of `kernel`'s training on the board."""
    return board["supply_v"] * board["cpu_ma"] * instruction_seconds(instructions, board, kernel)


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
    power_save=False,
):
    """Energy in millijoules of a device online for `seconds` but not training: receiving
    `bytes_received` of payload (one message unless told), a PINGREQ answered by a PINGRESP every
    keepalive/2 seconds, and the board's idle current throughout (with `power_save`, its idle
    current with the radio's power save: Wi-Fi waking for DTIM beacons, BLE at a long connection
    interval)."""
    if messages is None:
        messages = 1 if bytes_received else 0
    charge = messages_charge(bytes_received, messages, board, False, topic_len, 1, tls)
    record = TLS_RECORD_BYTES if tls else 0
    pings = int(2 * seconds / keepalive) if keepalive else 0
    ping = MQTT_PING_BYTES + record
    w = tcp_exchange(ping, ping, board["mss"], board["link_mtu"])
    charge += pings * link_charge(board, w[0], w[1], w[2], w[3])
    charge += board["ps_idle_ma" if power_save else "idle_ma"] * seconds
    return board["supply_v"] * charge
