"""Battery life of a device that sleeps between wakes (docs/protocol.md, "Asynchronous
sessions"): the energy of a training wake (waking, association, TCP and TLS, MQTT, the work
order, the model when it changed, the round, one flash write, the update and its receipt), of a
sensor wake (one sample into a ring), of a day asleep, of a day's schedule against a device
that stays connected (with and without the radio's power save), the battery's life in days, and
the flash's writes and wear. The board figures are device_agent/energy.py's PROFILES (their
sleep, wake, flash and power-save keys are derived below), the radio and compute prices its
functions. Kept apart from energy.py, which the agent imports: a board never needs these.

Sources: the nRF52840 product specification v1.7, section 5.2 ("Sleep") and "NVMC"; the ESP32
Series Datasheet, "RTC and Low-Power Management"; Raspberry Pi, "Raspberry Pi Pico Datasheet",
"Power consumption"; Winbond, "W25Q32JV" datasheet (SPI NOR flash); RFC 5246, RFC 8422 and
RFC 5480 (the ECDHE-ECDSA handshake's messages). Figures marked "assumption" are ours.
"""

from device_agent.energy import (
    DEFAULT_KERNEL,
    DEFAULT_TOPIC_LEN,
    TCPIP_HEADER_BYTES,
    TLS_RECORD_BYTES,
    ceil_div,
    compute_mj,
    compute_seconds,
    energy_mj,
    link_charge,
    listen_energy_mj,
    messages_charge,
    tcp_exchange,
)

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
STATUS_BYTES = 77
"""The retained "asleep" status JSON of a 12-character device id with its wake and sensor
periods (device_agent.sleepy.asleep_status)."""

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
    return board["supply_v"] * link_charge(board, w[0], w[1], w[2], w[3])


def _raw_mj(board, tx_bytes, tx_frames, rx_bytes, rx_frames):
    return board["supply_v"] * link_charge(board, tx_bytes, tx_frames, rx_bytes, rx_frames)


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
    pages = ceil_div(nbytes, FLASH_PAGE_BYTES) + 1
    if append:
        erases = (nbytes + LFS_COMMIT_BYTES) / FLASH_BLOCK_BYTES
    else:
        erases = ceil_div(nbytes, FLASH_BLOCK_BYTES) + LFS_COMMIT_BYTES / FLASH_BLOCK_BYTES
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
