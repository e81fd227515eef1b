"""A device's projected battery life from what the service measured about it (docs/metrics.md,
"Battery life"): the pure part, no I/O.

A device that runs on a battery says so once, in its birth (`energy_profile` and `battery`:
mah, volts, usable); a sleeping one's "asleep" status states its schedule (`wake_s` between
training wakes, `sense_s` between sensor wakes). `DeviceEnergy` gathers, per device, those and
what its telemetry measured; `projection` turns them into days with device_agent/battery.py:

- A sleeping device (its telemetry carries the wake counter `wake`): a day of T training wakes,
  S sensor wakes and sleep the rest of the time,
  E_day = T · E_train + S · E_sensor + sleep_mj(board, 86400 − T · t_train − S · t_sensor).
  T is measured from the wake counter over time, 86400 · (wake_n − wake_1) / (t_n − t_1) once
  MIN_WAKES wakes lie between the first and the latest telemetry, else 86400 / wake_s; S is T
  times the sensor wakes per training wake its telemetry counted (`sensor_wakes` / `wakes`, each
  since the last telemetry) once T is measured, else 86400 / sense_s (0 when not stated).
  E_train is `training_wake_mj` of its mean measured wake, E_sensor `sensor_wake_mj`.
- A device that stays connected: its idle listening day (`listen_energy_mj`: the board's idle
  current and the keepalive pings) plus its rounds, R · mean(energy_mj), R measured from the
  times of its round telemetry, 86400 · (n − 1) / (t_n − t_1) once there are two (else 0).

Days = battery_days(E_day, mah, volts, usable): the battery's usable energy over a day's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from device_agent import battery
from device_agent.energy import PROFILES, listen_energy_mj, radio_mj

DAY_S = battery.DAY_S

MIN_WAKES = 2
"""Training wakes the wake counter must have advanced by before its rate replaces the schedule."""

WAKE_DOCUMENT_BYTES = 800
"""What a training wake sends besides its update, assumption: its birth (about 450 B), its
telemetry (about 250 B) and its "asleep" status (under 100 B), as three more messages."""
WAKE_DOCUMENTS = 3

RING_APPEND_BYTES = 32 + 20
"""A sensor wake's append to the ring file (device_agent/ring.py), assumption: a record of up
to 32 B of float32 and the 20 B header; any size up to 256 B programs the same two pages."""

MEASURED, SCHEDULE, LISTENING = "measured", "schedule", "listening"
"""What a projection's rates come from (`Projection.basis`): measured wakes or rounds, a
sleeping device's stated schedule, or a connected device's listening alone (no rounds yet)."""


@dataclass(frozen=True)
class Projection:
    """A device's projected battery life: days, the energy of its day (mJ) and what it is made
    of (training wakes, sensor wakes and rounds a day; a training wake's mJ), and `basis`."""

    days: float
    day_mj: float
    basis: str
    training_wakes_per_day: float = 0.0
    sensor_wakes_per_day: float = 0.0
    rounds_per_day: float = 0.0
    wake_mj: float = 0.0

    def fields(self) -> dict:
        """The `battery` metric point's fields (docs/metrics.md)."""
        return {
            "battery_days": float(self.days),
            "day_mj": float(self.day_mj),
            "training_wakes_per_day": float(self.training_wakes_per_day),
            "sensor_wakes_per_day": float(self.sensor_wakes_per_day),
            "rounds_per_day": float(self.rounds_per_day),
            "wake_mj": float(self.wake_mj),
            "basis": self.basis,
        }


def _before_clock(board: dict) -> tuple[float, float]:
    """(mJ, s) of a training wake before the agent's clock starts: boot (and imports after a
    reset), the radio brought up and the network joined (training_wake_parts' wake and
    associate parts)."""
    parts = battery.training_wake_parts(board, battery.round_work(0, 0, 0, 0))
    mj = parts["wake"][0] + parts["associate"][0]
    return mj, parts["wake"][1] + parts["associate"][1]


def training_wake_mj(
    board: dict, bytes_sent: float, bytes_received: float, compute_ms: float, wake_ms: float
) -> tuple[float, float]:
    """(mJ, seconds awake) of one measured training wake of a sleeping device on `board`:

    - before its clock starts (boot, imports, radio up, network joined), as
      battery.training_wake_parts prices them;
    - its compute, `compute_ms` at the board's CPU current;
    - the rest of its measured `wake_ms` (connect, TLS, the work order, waiting for the
      receipt, the flash write) at the board's current while it waits on the network;
    - its bytes on the radio with their MQTT, TCP/IP and link framing (energy.radio_mj): the
      update (`bytes_sent`) and WAKE_DOCUMENT_BYTES in WAKE_DOCUMENTS more messages up, the
      work order, the model when fetched and the receipt (`bytes_received`) down.
    """
    v = board["supply_v"]
    compute_s = max(0.0, compute_ms) / 1000.0
    wake_s = max(compute_s, wake_ms / 1000.0)
    pre_mj, pre_s = _before_clock(board)
    mj = pre_mj + v * board["cpu_ma"] * compute_s
    mj += v * board["wait_ma"] * (wake_s - compute_s)
    mj += radio_mj(
        bytes_sent + WAKE_DOCUMENT_BYTES,
        bytes_received,
        board,
        messages_up=1 + WAKE_DOCUMENTS,
        messages_down=2 if bytes_received else 0,
    )
    return mj, pre_s + wake_s


def sensor_wake_mj(board: dict) -> tuple[float, float]:
    """(mJ, seconds awake) of one sensor wake: battery.sensor_wake_parts' boot and reading,
    and one RING_APPEND_BYTES append to the ring's file (battery.flash_write, an append)."""
    parts = battery.sensor_wake_parts(board, battery.round_work(0, 0, 0, 0))
    mj = parts["wake"][0] + parts["read"][0]
    s = parts["wake"][1] + parts["read"][1]
    flash_mj, flash_s, _ = battery.flash_write(RING_APPEND_BYTES, board, append=True)
    return mj + flash_mj, s + flash_s


def sleeping_day(
    board: dict,
    training_per_day: float,
    sensor_per_day: float,
    wake: tuple[float, float],
    sensor: tuple[float, float],
) -> float:
    """mJ of a sleeping device's day: its wakes (each (mJ, s)) and asleep the rest of it."""
    awake = training_per_day * wake[1] + sensor_per_day * sensor[1]
    mj = training_per_day * wake[0] + sensor_per_day * sensor[0]
    return mj + battery.sleep_mj(board, max(0.0, DAY_S - awake))


def connected_day(board: dict, rounds_per_day: float, round_mj: float) -> float:
    """mJ of a connected device's day: listening (energy.listen_energy_mj: idle current and
    keepalive pings) and its rounds at `round_mj` each."""
    return listen_energy_mj(0, DAY_S, board) + rounds_per_day * round_mj


def per_day(count: float, seconds: float) -> float | None:
    """`count` events in `seconds` as a daily rate; None for an empty span."""
    return DAY_S * count / seconds if seconds > 0 else None


def read_battery(value) -> tuple[float, float, float] | None:
    """(mah, volts, usable) of a birth's `battery` when it is one (numbers above 0, usable at
    most 1), else None."""
    if isinstance(value, (tuple, list)) and len(value) == 3:
        mah, volts, usable = value
    elif isinstance(value, dict):
        mah, volts, usable = value.get("mah"), value.get("volts"), value.get("usable")
    else:
        return None
    numbers = (mah, volts, usable)
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in numbers):
        return None
    if not all(math.isfinite(x) and x > 0 for x in numbers) or usable > 1:
        return None
    return float(mah), float(volts), float(usable)


def _number(doc: dict, key: str) -> float | None:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


@dataclass(slots=True)
class DeviceEnergy:
    """What the service knows about one device's energy: its birth's profile and battery, its
    stated schedule, and running sums of its telemetry (a few numbers, whatever its age)."""

    profile: str | None = None
    battery: tuple[float, float, float] | None = None
    wake_s: float | None = None
    sense_s: float | None = None
    first_wake: tuple[float, float] | None = None  # (time, wake counter)
    last_wake: tuple[float, float] | None = None
    wakes: float = 0.0  # training wakes the telemetry counted (its `wakes`)
    sensor_wakes: float = 0.0
    priced: int = 0  # wake telemetry documents summed below
    bytes_sent: float = 0.0
    bytes_received: float = 0.0
    compute_ms: float = 0.0
    wake_ms: float = 0.0
    rounds: int = 0  # a connected device's round telemetry
    first_round_t: float = 0.0
    last_round_t: float = 0.0
    round_mj: float = 0.0

    def status(self, info: dict) -> bool:
        """Take a status document (read by server.inbound): the birth's profile and battery,
        the "asleep" status's schedule. True when something changed."""
        before = (self.profile, self.battery, self.wake_s, self.sense_s)
        if isinstance(info.get("energy_profile"), str):
            self.profile = info["energy_profile"]
        if "battery" in info:
            self.battery = read_battery(info["battery"])
        for key in ("wake_s", "sense_s"):
            value = _number(info, key)
            if value is not None and value > 0:
                setattr(self, key, value)
        return before != (self.profile, self.battery, self.wake_s, self.sense_s)

    def telemetry(self, doc: dict, now: float) -> None:
        """Take a telemetry document (read by server.inbound) that arrived at `now` (s)."""
        wake = _number(doc, "wake")
        if wake is not None:
            self._wake(doc, wake, now)
            return
        energy = _number(doc, "energy_mj")  # a connected device's round
        if energy is None:
            return
        if not self.rounds:
            self.first_round_t = now
        self.rounds += 1
        self.last_round_t = now
        self.round_mj += energy

    def _wake(self, doc: dict, wake: float, now: float) -> None:
        if self.last_wake is not None and wake < self.last_wake[1]:
            self.first_wake = None  # a fresh state: the counter starts again
        if self.first_wake is None:
            self.first_wake = (now, wake)
        self.last_wake = (now, wake)
        self.wakes += _number(doc, "wakes") or 0.0  # both since its previous telemetry
        self.sensor_wakes += _number(doc, "sensor_wakes") or 0.0
        self.priced += 1
        self.bytes_sent += _number(doc, "bytes_sent") or 0.0
        self.bytes_received += _number(doc, "bytes_received") or 0.0
        self.compute_ms += _number(doc, "compute_ms") or 0.0
        self.wake_ms += _number(doc, "wake_ms") or 0.0

    @property
    def sleeps(self) -> bool:
        """True for a device that sleeps between wakes (it stated a schedule or counted a
        wake)."""
        return self.wake_s is not None or self.priced > 0

    def measured_wakes_per_day(self) -> float | None:
        """Training wakes a day from the wake counter, once it advanced by MIN_WAKES."""
        if self.first_wake is None or self.last_wake is None:
            return None
        count = self.last_wake[1] - self.first_wake[1]
        if count < MIN_WAKES:
            return None
        return per_day(count, self.last_wake[0] - self.first_wake[0])


def projection(energy: DeviceEnergy) -> Projection | None:
    """The device's projected battery life (module docstring), or None when it said no battery,
    a profile the service does not know, or (sleeping) neither a schedule nor a measured rate,
    or no measured wake to price."""
    if energy.battery is None or energy.profile not in PROFILES:
        return None
    board = PROFILES[energy.profile]
    day = _sleeping(board, energy) if energy.sleeps else _connected(board, energy)
    if day is None:
        return None
    mah, volts, usable = energy.battery
    days = battery.battery_days(day.day_mj, mah, volts, usable) if day.day_mj > 0 else math.inf
    if not math.isfinite(days):
        return None
    return Projection(
        days,
        day.day_mj,
        day.basis,
        day.training_wakes_per_day,
        day.sensor_wakes_per_day,
        day.rounds_per_day,
        day.wake_mj,
    )


def _sleeping(board: dict, e: DeviceEnergy) -> Projection | None:
    if not e.priced:
        return None
    n = e.priced
    wake = training_wake_mj(
        board, e.bytes_sent / n, e.bytes_received / n, e.compute_ms / n, e.wake_ms / n
    )
    measured = e.measured_wakes_per_day()
    if measured is not None:
        training, basis = measured, MEASURED
        ratio = e.sensor_wakes / e.wakes if e.wakes > 0 else 0.0
        sensor = training * ratio
    elif e.wake_s:
        training, basis = DAY_S / e.wake_s, SCHEDULE
        sensor = DAY_S / e.sense_s if e.sense_s else 0.0
    else:
        return None
    day = sleeping_day(board, training, sensor, wake, sensor_wake_mj(board))
    return Projection(0.0, day, basis, training, sensor, 0.0, wake[0])


def _connected(board: dict, e: DeviceEnergy) -> Projection:
    rate = per_day(e.rounds - 1, e.last_round_t - e.first_round_t) if e.rounds > 1 else None
    if rate is None:
        return Projection(0.0, connected_day(board, 0.0, 0.0), LISTENING)
    each = e.round_mj / e.rounds
    return Projection(0.0, connected_day(board, rate, each), MEASURED, rounds_per_day=rate)
