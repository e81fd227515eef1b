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
when told). A device that sleeps between wakes: training_wake_parts, sensor_wake_parts,
sleep_mj, day_mj, against the always-connected day_connected_mj; battery_days turns a day's
energy into a battery's life, and flash_wear_years the flash writes into the flash's life. What
is left out: docs/device.md.

Sources (each figure and its derivation in the comments below):
- nRF52840: Nordic Semiconductor, "nRF52840 Product Specification" v1.7.
- ESP32: Espressif, "ESP32 Series Datasheet" v4.x; the README of ESP-IDF's wifi/power_save
  example (idle current).
- RP2040 (Pico W): Raspberry Pi, "RP2040 Datasheet"; mjoldfield.com, "Pico power" (2021).
- Instruction timings: Arm, "Cortex-M4 Technical Reference Manual" r0p1 (DDI 0439), sections
  3.3 (instruction set summary) and 7.2 (FPU); Arm, "Cortex-M0+ Technical Reference Manual"
  r0p1 (DDI 0484), section 3.3.
- The ESP32's cycles against a Cortex-M4F's: S. Russell, scruss.com, "Parallel MicroPython
  Benchmarking" (MicroPython 1.24 on many boards).
- Framing: MQTT 3.1.1 (OASIS), RFC 791 and 9293 (IPv4, TCP), RFC 5246 and 5288 (TLS 1.2 with
  AES-GCM), Bluetooth Core 5.x Vol 6 Part B (BLE link layer), IEEE 802.11-2016 (Wi-Fi).
- Sleeping and flash: the nRF52840 product specification (as above), section 5.2 ("Sleep") and
  "NVMC"; the ESP32 Series Datasheet, "RTC and Low-Power Management"; Raspberry Pi, "Raspberry
  Pi Pico Datasheet", "Power consumption"; Winbond, "W25Q32JV" datasheet (SPI NOR flash);
  RFC 5246, RFC 8422 and RFC 5480 (the ECDHE-ECDSA handshake's messages).
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
# Sleeping (devices that sleep: docs/protocol.md, "Asynchronous sessions"). A sleepy device
# wakes on a timer for a training wake (wake, bring the radio up and associate, TCP connect, TLS
# handshake when `tls`, MQTT CONNECT and SUBSCRIBE to its cmd topic, the retained work order,
# the model only if its version changed, the round, one flash write of its state, the update,
# the receipt, its retained "asleep" status, DISCONNECT) or for a sensor wake (one sample into
# a ring; no radio). Each board's figures, module or chip only (a development board's USB
# bridge, LEDs and linear regulator are left out: an AMS1117 alone draws milliamperes):
# - sleep_ua, the current asleep with a timer running:
#   - nrf52840 3.16 µA: System ON idle, full 256 KB RAM retention, wake on RTC (product
#     specification v1.7, section 5.2 "Current consumption", table "Sleep", I_ON_RAMON_RTC).
#     System OFF (0.4 µA, I_OFF_RAMOFF_RESET) cannot wake on a timer (GPIO, NFC, LPCOMP or
#     reset only), so a device that wakes on its own schedule stays in System ON; RAM is kept
#     (`sleep_keeps_ram`) and MicroPython resumes where it slept.
#   - esp32 10 µA: deep sleep with the RTC timer and RTC memory on (ESP32 Series Datasheet
#     v4.x, section "RTC and Low-Power Management", table "Power Consumption by Power Modes",
#     "RTC timer + RTC memory"). Assumption: the ESP32-WROOM-32 module's flash is unpowered in
#     deep sleep (ESP-IDF powers the VDD_SDIO domain down by default), so the module's figure is
#     the chip's. Waking from deep sleep is a reset: only RTC memory survives, of which
#     MicroPython's machine.RTC().memory() offers 2048 B (`retained_bytes`).
#   - rp2040 1970 µA, assumption: Raspberry Pi, "Raspberry Pi Pico Datasheet", section "Power
#     consumption", gives 1.3 mA for a Pico in SLEEP (0.8 mA DORMANT, which needs an external
#     clock or a GPIO to wake) at 5 V on VBUS; at the same power from 3.3 V that is 1.97 mA. It
#     is taken for a Pico W in MicroPython's machine.lightsleep (RAM kept) with its CYW43439
#     powered off (WL_REG_ON low, wlan.deinit()): the regulator's quiescent current is in it.
# - boot_s (at cpu_ma), assumptions: from the timer to the agent's code. nrf52840 1 ms (the
#   64 MHz crystal starts in a fraction of a millisecond; the interpreter resumes); rp2040 2 ms
#   (the same from lightsleep); esp32 0.5 s: a deep-sleep wake runs the ROM and the second
#   stage bootloader (which checks the app image), starts ESP-IDF and MicroPython (heap, the
#   littlefs mount, boot.py and main.py). import_s, on a training wake only, the agent's modules
#   imported again after a reset: esp32 0.3 s, assumption (as .mpy); 0 where RAM is kept.
# - radio_up_s (at cpu_ma), assumptions: esp32 0.1 s (Wi-Fi driver start, RF calibration from
#   the data kept in flash); rp2040 0.4 s (the CYW43439's firmware, about 230 KB with its CLM
#   data, downloaded over SPI at every power-up); nrf52840 0 (the BLE stack stays enabled).
# - assoc_s at assoc_ma, assumptions: Wi-Fi (esp32, rp2040) 1.5 s at the receive current: a
#   connection to a known network with its channel (scan of one channel, authentication,
#   association, the WPA2 4-way handshake, 0.2-0.5 s) and a DHCP lease (about 1 s with a home
#   router); a full scan or a slow DHCP server takes seconds more, a static IP less. BLE
#   (nrf52840) 0.3 s at 2 mA: advertising until the gateway (scanning continuously) connects,
#   the link-layer procedures, the IPSP L2CAP channel and IPv6 neighbour discovery, a few dozen
#   connection events with the CPU mostly asleep.
# - wait_ma, the current while the device waits for a reply (RTT_S a round trip, RECEIPT_WAIT_S
#   for the receipt): the receive current on Wi-Fi (the station stays awake during a wake),
#   idle_ma on BLE (connection events). Assumptions.
# - tls_cycles, the client's side of a TLS 1.2 ECDHE-ECDSA handshake on P-256 in software
#   (an mbedTLS-class library; the nRF52840's CryptoCell is unused): about 4.5 scalar
#   multiplications (the ephemeral key, the shared secret, two signature verifications: the
#   server certificate's and the ServerKeyExchange's), each taken as 15 M Cortex-M4 cycles:
#   68 M. esp32: times its cpi_factor, 77 M; rp2040: three times the Cortex-M4's, 204 M (the
#   Cortex-M0+ has no 32 x 32 -> 64-bit multiply, the bignum's inner loop). Assumptions. Bytes:
#   TLS_HANDSHAKE below.
# - ps_idle_ma, connected with the radio's power save (listen_energy_mj's `power_save`),
#   assumptions: nrf52840 0.010 mA, System ON idle (3.16 µA) plus a connection event every
#   second (1 s connection interval) of about 5 µC (a few hundred microseconds of the radio
#   and the CPU with the crystal's start-up, the order of Nordic's Online Power Profiler for an
#   empty-packet event at 0 dBm with DC/DC). esp32 30 mA: MicroPython's WLAN.PM_POWERSAVE
#   (maximum modem sleep, waking for every third DTIM beacon) without automatic light sleep
#   (MicroPython's esp32 builds do not enable power management), so the CPU idles at 160 MHz:
#   the datasheet's modem-sleep 27 mA at 160 MHz (its low end) plus about 3 mA for the beacons.
#   rp2040 22 mA: the RP2040 at 125 MHz waiting in MicroPython (about 20 mA) and the CYW43439 in
#   PM1 power save (about 2 mA).
# - retained_bytes: memory that keeps a sample ring through sleep (RAM where it is kept, 64 KB
#   taken for the ring's budget; the esp32's 2048 B of RTC user memory). A larger ring goes to
#   flash, one append per sensor wake.
# - Flash, one 4 KB block erased in flash_block_s, one 256 B page programmed in flash_page_s,
#   at flash_ma: esp32 and rp2040 carry an external SPI NOR flash, priced as Winbond's W25Q32JV
#   (datasheet, "AC Electrical Characteristics": sector erase 45 ms, page program 0.4 ms,
#   typical; "DC Electrical Characteristics": 20 mA while erasing or programming; "more than
#   100,000 erase/program cycles"), plus the CPU's active current while it waits (assumption:
#   the modules' flash parts vary). nrf52840, its internal flash (product specification,
#   section "NVMC" electrical specification: t_ERASEPAGE 85 ms per 4 KB page, t_WRITE 41 µs
#   per 32-bit word, 64 words a 256 B page; endurance 10 000 write/erase cycles) at 5 mA
#   (assumption: the CPU halted, the flash's charge pump working).
# - fs_free_blocks, assumptions: the free 4 KB blocks of MicroPython's littlefs filesystem, over
#   which its dynamic wear levelling spreads erases (blocks of files that never change are not
#   cycled): half the filesystem free, of 2 MB on a 4 MB esp32 (512 blocks), 848 KB on a Pico W
#   (212 blocks), 256 KB taken on the nrf52840 (64 blocks).

KERNELS = ("micropython", "compiled")
DEFAULT_KERNEL = "micropython"

INSTRUCTIONS_PER_MAC = {
    "armv7em": {"micropython": 1660.0, "compiled": 14.9},
    "armv6m": {"micropython": 2950.0, "compiled": 181.0},
}
"""Instructions a multiply-accumulate of a device round costs, by instruction set and kernel:
fitted on the instructions and MACs of the four default rounds (see above;
benchmarks/results/device-cortexm.json "fit")."""

CORE_CPI = {
    "cortex-m4": {"micropython": 1.82, "compiled": 1.42},
    "cortex-m0+": {"micropython": 1.55, "compiled": 1.33},
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
    charge += pings * _charge(board, w[0], w[1], w[2], w[3])
    charge += board["ps_idle_ma" if power_save else "idle_ma"] * seconds
    return board["supply_v"] * charge


# -- devices that sleep --

DAY_S = 86400
"""Seconds in a day."""

RTT_S = 0.03
"""A round trip to the broker, assumption (a broker on the site's network or nearby)."""

RECEIPT_WAIT_S = 0.2
"""How long a device waits for its receipt after its update, assumption: the service journals
the update (fsync) and republishes the work order (docs/protocol.md)."""

SENSOR_READ_S = 0.01
"""CPU time of a sensor wake's reading and its append to the ring, assumption (the sensor's own
current is left out)."""

TCP_SYN_BYTES = 44
"""A SYN or SYN-ACK: IPv4 and TCP headers with the MSS option (4 B), as lwIP sends them."""

TLS_HANDSHAKE = ((180, 1300), (126, 51))
"""A TLS 1.2 ECDHE-ECDSA-AES128-GCM full handshake as (client flight, server flight) pairs of
bytes, records included, assumption by RFC 5246, 8422 and 5480: ClientHello with SNI,
supported groups and signature algorithms (180 B); ServerHello (90 B), Certificate with a P-256
leaf and one intermediate (about 500 B each), ServerKeyExchange (the 65 B point and a 72 B
signature) and ServerHelloDone (1300 B); ClientKeyExchange, ChangeCipherSpec and the encrypted
Finished (126 B); the server's ChangeCipherSpec and Finished (51 B)."""

TLS_ALERT_BYTES = 2
"""A TLS close_notify alert's content (in a record of TLS_RECORD_BYTES more)."""

MQTT_CONNACK_BYTES = 4
MQTT_SUBACK_BYTES = 5
"""A SUBACK for one topic: fixed header, packet id, one return code."""
MQTT_UNSUBACK_BYTES = 4
MQTT_DISCONNECT_BYTES = 2

DEVICE_ID_LEN = 12
"""The device id's length (as DEFAULT_TOPIC_LEN's), the client id and the broker user name."""
PASSWORD_LEN = 32
"""The broker password's length, assumption."""
WILL_TOPIC_LEN = DEFAULT_TOPIC_LEN + 3
"""The status topic (.../devices/<id>/status), the last will's topic."""
WILL_LEN = 46
"""The last will, device_agent.reports.offline of a 12-character id."""
MODEL_TOPIC_LEN = 25
"""The model topic with the default prefix and fleet (tinymetafed/default/model)."""
RECEIPT_FIELD_BYTES = 16
"""What the work order that is the receipt adds to the one the device read: `"receipt": N`."""
STATUS_BYTES = 48
"""The retained "asleep" status JSON, assumption ({"state": "asleep", "wake_s": ...})."""

FLASH_BLOCK_BYTES = 4096
"""An erase block of the flash and of littlefs."""
FLASH_PAGE_BYTES = 256
"""A program page of the flash."""
LFS_COMMIT_BYTES = 64
"""A littlefs metadata commit, assumption: each write appends one to its directory's metadata
pair, whose block is erased again once full."""
FLASH_ENDURANCE = 100000
"""Erase cycles of a typical NOR flash sector (the W25Q32JV's "more than 100,000")."""

BATTERY_MAH = 2000
BATTERY_V = 3.7
BATTERY_USABLE = 0.8
"""The default battery: a 2,000 mAh lithium cell at 3.7 V nominal, 80 % of it usable."""


def _varint_len(remaining):
    n = 1
    while remaining >= 128**n and n < 4:
        n += 1
    return n


def mqtt_connect_bytes(client_id_len, will_topic_len=0, will_len=0, user_len=None, password_len=0):
    """Size of an MQTT 3.1.1 CONNECT (device_agent.transport.connect_packet): 10 B of variable
    header, the client id, the last will's topic and message when `will_topic_len`, user name and
    password when `user_len` is not None."""
    body = 10 + 2 + client_id_len
    if will_topic_len:
        body += 2 + will_topic_len + 2 + will_len
    if user_len is not None:
        body += 2 + user_len + 2 + password_len
    return 1 + _varint_len(body) + body


def mqtt_subscribe_bytes(topic_len):
    """Size of an MQTT 3.1.1 SUBSCRIBE of one topic: packet id, topic, requested QoS."""
    body = 2 + 2 + topic_len + 1
    return 1 + _varint_len(body) + body


def mqtt_unsubscribe_bytes(topic_len):
    """Size of an MQTT 3.1.1 UNSUBSCRIBE of one topic (device_agent.transport)."""
    body = 2 + 2 + topic_len
    return 1 + _varint_len(body) + body


def _exchange_mj(board, request, reply, tls=False):
    """Radio energy (mJ) of sending `request` bytes of TCP payload and receiving `reply` (none
    when 0), in a TLS record each when `tls`, with their segments' ACKs."""
    record = TLS_RECORD_BYTES if tls else 0
    w = tcp_exchange(
        request + record, reply + record if reply else 0, board["mss"], board["link_mtu"]
    )
    return board["supply_v"] * _charge(board, w[0], w[1], w[2], w[3])


def _raw_mj(board, tx_bytes, tx_frames, rx_bytes, rx_frames):
    return board["supply_v"] * _charge(board, tx_bytes, tx_frames, rx_bytes, rx_frames)


def tcp_open_mj(board):
    """Radio energy (mJ) of a TCP connect: SYN sent, SYN-ACK received, ACK sent."""
    return _raw_mj(board, TCP_SYN_BYTES + TCPIP_HEADER_BYTES, 2, TCP_SYN_BYTES, 1)


def tcp_close_mj(board):
    """Radio energy (mJ) of closing a TCP connection: FIN sent and acknowledged, the broker's FIN
    received and acknowledged."""
    return _raw_mj(board, 2 * TCPIP_HEADER_BYTES, 2, 2 * TCPIP_HEADER_BYTES, 2)


def tls_handshake_mj(board):
    """(energy in mJ, seconds) of a TLS 1.2 ECDHE-ECDSA full handshake as the client: its
    TLS_HANDSHAKE flights over TCP and `tls_cycles` of the CPU."""
    mj = 0.0
    for request, reply in TLS_HANDSHAKE:
        mj += _exchange_mj(board, request, reply)
    seconds = board["tls_cycles"] / board["cpu_hz"]
    return mj + board["supply_v"] * board["cpu_ma"] * seconds, seconds


def _received_mj(board, payload_len, topic_len, tls):
    """Radio energy (mJ) of one QoS 1 PUBLISH received, its PUBACK sent."""
    return board["supply_v"] * messages_charge(payload_len, 1, board, False, topic_len, 1, tls)


def _sent_mj(board, payload_len, topic_len, tls):
    """Radio energy (mJ) of one QoS 1 PUBLISH sent, its PUBACK received."""
    return board["supply_v"] * messages_charge(payload_len, 1, board, True, topic_len, 1, tls)


def flash_write(nbytes, board, append=False):
    """(energy in mJ, seconds, blocks erased) of writing `nbytes` to a file of littlefs on the
    board's flash: the pages programmed (the data and one metadata commit of LFS_COMMIT_BYTES)
    and the blocks erased. A whole file written anew (the state, atomically) takes fresh blocks,
    each erased; an append fills the file's last block, its erase shared by the appends that fill
    it (fractional), as is the metadata block's."""
    if nbytes <= 0:
        return 0.0, 0.0, 0.0
    pages = _ceil_div(nbytes, FLASH_PAGE_BYTES) + 1
    if append:
        erases = (nbytes + LFS_COMMIT_BYTES) / FLASH_BLOCK_BYTES
    else:
        erases = _ceil_div(nbytes, FLASH_BLOCK_BYTES) + LFS_COMMIT_BYTES / FLASH_BLOCK_BYTES
    seconds = pages * board["flash_page_s"] + erases * board["flash_block_s"]
    return board["supply_v"] * board["flash_ma"] * seconds, seconds, erases


def round_work(
    macs, bytes_up, model_bytes, command_bytes, state_bytes=0, sample_bytes=0, samples=0
):
    """The figures of one training wake's round that the functions below price: its MACs, the
    update's payload bytes, the model's and the work order's bytes, the state written to flash
    once a training wake, a sample's bytes in the ring and the samples a round trains on."""
    return {
        "macs": macs,
        "bytes_up": bytes_up,
        "model_bytes": model_bytes,
        "command_bytes": command_bytes,
        "state_bytes": state_bytes,
        "sample_bytes": sample_bytes,
        "samples": samples,
    }


def training_wake_parts(
    board, work, fetch=1.0, kernel=DEFAULT_KERNEL, tls=False, topic_len=DEFAULT_TOPIC_LEN
):
    """One training wake of a sleepy device, part by part: {name: (energy in mJ, seconds awake)}.

    wake: boot (and the agent's imports after a reset); associate: the radio brought up and the
    network joined; connect: TCP, the TLS handshake when `tls`, MQTT CONNECT (clean, with its
    last will and credentials) and CONNACK, SUBSCRIBE to the cmd topic and SUBACK, the retained
    work order; fetch: SUBSCRIBE to the model topic, the model, UNSUBSCRIBE, times `fetch` (the
    share of training wakes whose order names a model the device does not hold); compute: the
    round's MACs with `kernel`; flash: the state written once; uplink: the update (QoS 1);
    receipt: the wait for it and the work order republished, then the retained "asleep" status;
    disconnect: DISCONNECT (and TLS close_notify) and the TCP close. Every round trip (RTT_S) and
    the receipt's wait are at the board's wait_ma; the radio's bytes are priced by their framing
    and take no time of their own here (microseconds to milliseconds)."""
    v = board["supply_v"]
    wait = v * board["wait_ma"]
    cpu = v * board["cpu_ma"]
    parts = {}
    s = board["boot_s"] + board["import_s"]
    parts["wake"] = (cpu * s, s)
    s = board["radio_up_s"] + board["assoc_s"]
    mj = cpu * board["radio_up_s"] + v * board["assoc_ma"] * board["assoc_s"]
    parts["associate"] = (mj, s)
    rtts = 3
    mj = tcp_open_mj(board)
    s = 0.0
    if tls:
        hs_mj, s = tls_handshake_mj(board)
        mj += hs_mj
        rtts += 2
    connect = mqtt_connect_bytes(
        DEVICE_ID_LEN, WILL_TOPIC_LEN, WILL_LEN, DEVICE_ID_LEN, PASSWORD_LEN
    )
    mj += _exchange_mj(board, connect, MQTT_CONNACK_BYTES, tls)
    mj += _exchange_mj(board, mqtt_subscribe_bytes(topic_len), MQTT_SUBACK_BYTES, tls)
    mj += _received_mj(board, work["command_bytes"], topic_len, tls)
    parts["connect"] = (mj + wait * rtts * RTT_S, s + rtts * RTT_S)
    mj = _exchange_mj(board, mqtt_subscribe_bytes(MODEL_TOPIC_LEN), MQTT_SUBACK_BYTES, tls)
    mj += _received_mj(board, work["model_bytes"], MODEL_TOPIC_LEN, tls)
    mj += _exchange_mj(board, mqtt_unsubscribe_bytes(MODEL_TOPIC_LEN), MQTT_UNSUBACK_BYTES, tls)
    parts["fetch"] = (fetch * (mj + wait * 2 * RTT_S), fetch * 2 * RTT_S)
    parts["compute"] = (
        compute_mj(work["macs"], board, kernel),
        compute_seconds(work["macs"], board, kernel),
    )
    mj, s, _ = flash_write(work["state_bytes"], board)
    parts["flash"] = (mj, s)
    parts["uplink"] = (_sent_mj(board, work["bytes_up"], topic_len, tls) + wait * RTT_S, RTT_S)
    mj = _received_mj(board, work["command_bytes"] + RECEIPT_FIELD_BYTES, topic_len, tls)
    mj += _sent_mj(board, STATUS_BYTES, WILL_TOPIC_LEN, tls)
    s = RECEIPT_WAIT_S + RTT_S
    parts["receipt"] = (mj + wait * s, s)
    mj = _exchange_mj(board, MQTT_DISCONNECT_BYTES, 0, tls)
    if tls:
        mj += _exchange_mj(board, TLS_ALERT_BYTES, 0, True)
    mj += tcp_close_mj(board)
    parts["disconnect"] = (mj + wait * RTT_S, RTT_S)
    return parts


def _total(parts):
    mj = 0.0
    s = 0.0
    for name in parts:
        mj += parts[name][0]
        s += parts[name][1]
    return mj, s


def training_wake_mj(board, work, fetch=1.0, kernel=DEFAULT_KERNEL, tls=False):
    """Energy in millijoules of one training wake (training_wake_parts added up)."""
    return _total(training_wake_parts(board, work, fetch, kernel, tls))[0]


def ring_in_flash(board, work):
    """Whether the sample ring (a round's samples) outgrows the memory that keeps it through
    sleep, and so is kept in flash."""
    return work["samples"] * work["sample_bytes"] > board["retained_bytes"]


def sensor_wake_parts(board, work):
    """One sensor wake, part by part as training_wake_parts: wake (boot, without the agent's
    imports), read (SENSOR_READ_S of the CPU), ring (one sample appended to the ring in flash
    when it is there; in retained memory it costs nothing more)."""
    cpu = board["supply_v"] * board["cpu_ma"]
    parts = {
        "wake": (cpu * board["boot_s"], board["boot_s"]),
        "read": (cpu * SENSOR_READ_S, SENSOR_READ_S),
    }
    if ring_in_flash(board, work):
        mj, s, _ = flash_write(work["sample_bytes"], board, append=True)
        parts["ring"] = (mj, s)
    else:
        parts["ring"] = (0.0, 0.0)
    return parts


def sensor_wake_mj(board, work):
    """Energy in millijoules of one sensor wake (sensor_wake_parts added up)."""
    return _total(sensor_wake_parts(board, work))[0]


def sleep_mj(board, seconds=DAY_S):
    """Energy in millijoules of `seconds` asleep (a day's by default) at the board's sleep_ua."""
    return board["supply_v"] * board["sleep_ua"] / 1000.0 * seconds


def day_parts(
    board, work, training_wakes, sensor_wakes, fetch=1.0, kernel=DEFAULT_KERNEL, tls=False
):
    """A sleepy device's day of `training_wakes` training wakes and `sensor_wakes` sensor wakes,
    asleep the rest of the time: {name: (energy in mJ, seconds)} with every training wake's
    part (summed over the day), "sensor" and "sleep"."""
    train = training_wake_parts(board, work, fetch, kernel, tls)
    out = {}
    for name in train:
        out[name] = (training_wakes * train[name][0], training_wakes * train[name][1])
    mj, s = _total(sensor_wake_parts(board, work))
    out["sensor"] = (sensor_wakes * mj, sensor_wakes * s)
    awake = _total(out)[1]
    if awake > DAY_S:
        raise ValueError("the wakes take %.0f s, more than a day" % awake)
    out["sleep"] = (sleep_mj(board, DAY_S - awake), DAY_S - awake)
    return out


def day_mj(board, work, training_wakes, sensor_wakes, fetch=1.0, kernel=DEFAULT_KERNEL, tls=False):
    """Energy in millijoules of a sleepy device's day (day_parts added up)."""
    return _total(day_parts(board, work, training_wakes, sensor_wakes, fetch, kernel, tls))[0]


def day_connected_mj(
    board, work, rounds, kernel=DEFAULT_KERNEL, tls=False, power_save=False, fetch=1.0
):
    """Energy in millijoules of a day always connected (listen_energy_mj: idle current and
    keepalive pings, with the radio's power save when `power_save`) with `rounds` rounds, each
    its compute, the update up and the command (and, `fetch` of the time, the model) down."""
    mj = listen_energy_mj(0, DAY_S, board, tls=tls, power_save=power_save)
    down = work["command_bytes"] + fetch * work["model_bytes"]
    per = energy_mj(work["macs"], work["bytes_up"], down, board, kernel, tls=tls)
    return mj + rounds * per


def battery_mj(capacity_mah=BATTERY_MAH, volts=BATTERY_V, usable=BATTERY_USABLE):
    """Usable energy of a battery in millijoules: capacity · nominal voltage · usable share (its
    conversion to the board's supply taken as lossless)."""
    return capacity_mah * 3.6 * volts * usable * 1000.0


def battery_days(
    mj_per_day,
    capacity_mah=BATTERY_MAH,
    volts=BATTERY_V,
    usable=BATTERY_USABLE,
    self_discharge=0.0,
):
    """Days a battery lasts at `mj_per_day`; `self_discharge` is the share of its full capacity
    it loses by itself in 30 days (0 by default)."""
    full = capacity_mah * 3.6 * volts * 1000.0
    per_day = mj_per_day + self_discharge * full / 30.0
    return battery_mj(capacity_mah, volts, usable) / per_day


def flash_writes_per_day(training_wakes, sensor_wakes, in_flash):
    """Flash writes of a sleepy device's day: its state at most once a training wake, and one
    append a sensor wake when the ring is in flash."""
    return training_wakes + (sensor_wakes if in_flash else 0)


def flash_erases_per_day(board, work, training_wakes, sensor_wakes):
    """4 KB blocks erased in a day by those writes (flash_write's erases)."""
    erases = training_wakes * flash_write(work["state_bytes"], board)[2]
    if ring_in_flash(board, work):
        erases += sensor_wakes * flash_write(work["sample_bytes"], board, append=True)[2]
    return erases


def flash_wear_years(erases_per_day, free_blocks, endurance=FLASH_ENDURANCE):
    """Years until the flash's blocks reach `endurance` erase cycles, littlefs's wear levelling
    spreading `erases_per_day` evenly over `free_blocks` blocks; None when nothing is erased."""
    if erases_per_day <= 0:
        return None
    return endurance * free_blocks / erases_per_day / 365.0
