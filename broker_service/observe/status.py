"""`tinymetafed status`: the fleet as its retained MQTT topics show it, for an operator's terminal.

What is retained under `<prefix>/<fleet>/`:

    service/status       the service's presence: {"state": "online"} or its last will "offline"
    service/progress     the service's progress document (`progress_doc`, published by the
                         recorder after the first evaluation and after every closed round)
    service/battery      the devices' projected battery life (`battery_doc`, published by the
                         recorder with the progress when it changed): {"devices": {id:
                         {"days": 412.3, "basis": "measured"}}}, only devices on a battery
    devices/<id>/status  each device's birth ("online", board, firmware, free heap), "offline",
                         or "asleep" (with `wake_s`) while it deep-sleeps: a sleeping member
                         of an asynchronous session, counted apart from the offline ones

Device telemetry (not retained) is read too while the view runs, for the newest free heap and
the last round a device answered. `snapshot` turns the latest message of every topic into one
JSON-ready document; `render_text` and `render_rich` lay it out; `watch` connects, waits for the
retained messages and prints once, as JSON, or refreshing until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

PROGRESS_LEAF = "service/progress"
STATUS_LEAF = "service/status"
BATTERY_LEAF = "service/battery"
SETTLE_QUIET_S = 0.4
"""The retained messages have all arrived once the subscription was acknowledged and no retained
message came for this long (MQTT has no end-of-retained marker)."""
SETTLE_MAX_S = 5.0


def progress_topic(base: str) -> str:
    """The service's retained progress document of the fleet at `base` (`<prefix>/<fleet>`)."""
    return base + "/" + PROGRESS_LEAF


def battery_topic(base: str) -> str:
    """The service's retained battery document of the fleet at `base`."""
    return base + "/" + BATTERY_LEAF


def battery_doc(projections: Mapping[str, Any]) -> dict[str, Any]:
    """The devices' projected battery life as `tinymetafed status` reads it, from each device's
    latest projection (observe.battery_life.Projection): days to 0.1, and the basis."""
    return {
        "devices": {
            device: {"days": round(float(p.days), 1), "basis": p.basis}
            for device, p in sorted(projections.items())
        }
    }


def progress_doc(
    tags: Mapping[str, str],
    rounds_done: int,
    rounds_total: int,
    metric_name: str,
    last_metric: Mapping[str, Any],
    totals: Mapping[str, Any],
    report: Any = None,
) -> dict[str, Any]:
    """The service's progress as `tinymetafed status` shows it: the session, rounds done of the
    planned ones, the last evaluated metric with its 95 % CI, the last closed round (a
    service.RoundReport, or None before the first) and the session totals (Totals.to_dict)."""
    doc: dict[str, Any] = {
        "fleet": tags.get("fleet"),
        "use_case": tags.get("use_case"),
        "algorithm": tags.get("algorithm"),
        "round": int(rounds_done),
        "rounds": int(rounds_total),
        "metric": {"name": metric_name, **last_metric},
        "totals": dict(totals),
        "last_round": None,
        "time": round(time.time(), 3),
    }
    if report is not None:
        doc["last_round"] = {
            "round": report.round,
            "participants": len(report.participants),
            "late": len(report.late),
            "rejected": dict(report.rejected),
            "seconds": round(float(report.seconds), 3),
        }
    return doc


def _json(payload: bytes) -> dict:
    """A JSON object from a payload; {} for anything else (a cleared or foreign message)."""
    try:
        doc = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _number(value: Any) -> float | int | None:
    """`value` when it is a plain number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def device_row(
    device: str, status: Mapping, telemetry: Mapping, battery: Mapping | None = None
) -> dict[str, Any]:
    """One device of the snapshot: presence and birth details, the newest free heap and the last
    round it reported on (telemetry wins over the birth, being newer), and its projected battery
    life in days with its basis (None for a device without one in `battery`, its entry of the
    service's battery document)."""
    heap = _number(telemetry.get("heap_free"))
    if heap is None:
        heap = _number(status.get("free_heap"))
    battery = battery if isinstance(battery, Mapping) else {}
    days = _number(battery.get("days"))
    basis = battery.get("basis") if days is not None else None
    return {
        "device": device,
        "online": status.get("state") == "online",
        "asleep": status.get("state") == "asleep",
        "wake_s": _number(status.get("wake_s")),
        "board": status.get("board"),
        "firmware": status.get("firmware"),
        "free_heap": heap,
        "last_round": _number(telemetry.get("round")),
        "last_error": telemetry.get("error") or telemetry.get("aborted"),
        "battery_days": days,
        "battery_basis": basis if isinstance(basis, str) else None,
    }


def snapshot(base: str, messages: Mapping[str, bytes], now: float | None = None) -> dict[str, Any]:
    """The fleet at `base` from the latest message of each topic: the service's state and
    progress, and every device (sorted by id) with the online and offline counts."""
    now = time.time() if now is None else now
    devices_prefix = base + "/devices/"
    statuses: dict[str, dict] = {}
    telemetry: dict[str, dict] = {}
    for topic, payload in messages.items():
        if not topic.startswith(devices_prefix):
            continue
        device, _, leaf = topic[len(devices_prefix) :].partition("/")
        if leaf == "status":
            statuses[device] = _json(payload)
        elif leaf == "telemetry":
            telemetry[device] = _json(payload)
    batteries = _json(messages.get(battery_topic(base), b"")).get("devices")
    batteries = batteries if isinstance(batteries, dict) else {}
    rows = [
        device_row(d, statuses.get(d, {}), telemetry.get(d, {}), batteries.get(d))
        for d in sorted(set(statuses) | set(telemetry))
    ]
    state = _json(messages.get(base + "/" + STATUS_LEAF, b"")).get("state", "unknown")
    progress = _json(messages.get(progress_topic(base), b""))
    updated = _number(progress.get("time"))
    return {
        "base": base,
        "time": round(now, 3),
        "service": {
            "state": state,
            **progress,
            "age_s": round(now - updated, 1) if updated is not None else None,
        },
        "online": sum(1 for r in rows if r["online"]),
        "asleep": sum(1 for r in rows if r["asleep"]),
        "offline": sum(1 for r in rows if not (r["online"] or r["asleep"])),
        "devices": rows,
    }


def attention_order(rows: list[dict]) -> list[dict]:
    """Devices in the order an operator should look at them: offline first (a sleeping device
    is not offline), then by lowest free heap (unknown heap last), then by id."""

    def key(r: dict):
        heap = r["free_heap"]
        present = r["online"] or r.get("asleep", False)
        return (present, heap is None, heap if heap is not None else 0, r["device"])

    return sorted(rows, key=key)


def _kb(value: float | int | None) -> str:
    return "-" if value is None else "%.1f kB" % (value / 1e3)


def _metric_text(metric: Mapping) -> str:
    value = _number(metric.get("value"))
    if value is None:
        return "%s: not evaluated yet" % metric.get("name", "metric")
    ci = _number(metric.get("ci95"))
    return "%s %.4f%s (after round %s)" % (
        metric.get("name", "metric"),
        value,
        " ± %.4f" % ci if ci is not None else "",
        metric.get("round"),
    )


def service_lines(snap: Mapping) -> list[str]:
    """The service part of the view, a few short lines."""
    s = snap["service"]
    if "round" not in s:
        return ["service %s; no progress published (yet)" % s["state"]]
    totals = s.get("totals", {})
    rejected = totals.get("rejected") or {}
    lines = [
        "service %s  %s / %s  round %d of %d  (updated %s s ago)"
        % (s["state"], s.get("use_case"), s.get("algorithm"), s["round"], s["rounds"], s["age_s"]),
        _metric_text(s.get("metric", {})),
        "updates %d  up %s  down %s  energy %.1f mJ"
        % (
            totals.get("updates", 0),
            _kb(totals.get("bytes_up")),
            _kb(totals.get("bytes_down")),
            totals.get("energy_mj", 0.0),
        ),
        "rejected %d%s"
        % (
            sum(rejected.values()),
            "".join("  %s %d" % kv for kv in sorted(rejected.items())),
        ),
    ]
    last = s.get("last_round")
    if last:
        lines.append(
            "last round %d: %d answered, %d late, %.2f s"
            % (last["round"], last["participants"], last["late"], last["seconds"])
        )
    return lines


def device_cells(row: Mapping, battery: bool = False) -> list[str]:
    """The table cells of one device: id, online/asleep/offline, board, free heap, last
    round, and with `battery` its projected battery life."""
    cells = [
        row["device"],
        presence_text(row),
        str(row["board"] or "-"),
        _kb(row["free_heap"]),
        "-" if row["last_round"] is None else str(row["last_round"]),
    ]
    if battery:
        cells.append(battery_text(row))
    return cells


def battery_text(row: Mapping) -> str:
    """A device's battery cell: its projected days ("~" while they come from its stated
    schedule rather than its measured wakes), or "-" without a projection."""
    days = row.get("battery_days")
    if days is None:
        return "-"
    text = "%.1f d" % days if days < 10 else "%.0f d" % days
    return "~" + text if row.get("battery_basis") == "schedule" else text


def shows_battery(rows: list[dict]) -> bool:
    """True when a device of `rows` has a projected battery life: the table gets its column
    (a fleet without batteries keeps the table it had)."""
    return any(r.get("battery_days") is not None for r in rows)


def device_header(battery: bool) -> list[str]:
    """The device table's header, with the battery column when `battery`."""
    return DEVICE_HEADER + ["battery"] if battery else list(DEVICE_HEADER)


def presence_text(row: Mapping) -> str:
    """A device's presence cell: online, asleep (with its announced sleep) or OFFLINE."""
    if row["online"]:
        return "online"
    if row.get("asleep"):
        wake = row.get("wake_s")
        return "asleep" if wake is None else "asleep %gs" % wake
    return "OFFLINE"


def devices_line(snap: Mapping) -> str:
    """`N online, M offline`, with the sleeping devices when there are any."""
    asleep = snap.get("asleep", 0)
    middle = ", %d asleep" % asleep if asleep else ""
    return "%d online%s, %d offline" % (snap["online"], middle, snap["offline"])


DEVICE_HEADER = ["device", "presence", "board", "free heap", "last round"]


def shown_devices(snap: Mapping, max_rows: int) -> tuple[list[dict], int]:
    """The devices that fit in `max_rows` lines, most in need of attention first, and how many
    are left out."""
    rows = attention_order(list(snap["devices"]))
    return rows[:max_rows], max(0, len(rows) - max_rows)


def render_text(snap: Mapping, max_rows: int = 40) -> str:
    """The view as plain text (no colours; for pipes and terminals without `rich`)."""
    from broker_service.observe.tables import text_table

    rows, hidden = shown_devices(snap, max_rows)
    lines = ["fleet %s  %s" % (snap["base"], time.strftime("%H:%M:%S"))]
    lines += service_lines(snap)
    lines.append("devices " + devices_line(snap))
    if rows:
        battery = shows_battery(rows)
        cells = [device_cells(r, battery) for r in rows]
        lines += ["", text_table(device_header(battery), cells)]
    if hidden:
        lines.append("... and %d more (--json lists every device)" % hidden)
    return "\n".join(lines)


def render_rich(snap: Mapping, max_rows: int = 40):
    """The view as a `rich` renderable: the service panel and the device table, coloured."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    state = snap["service"]["state"]
    colour = {"online": "green", "offline": "red"}.get(state, "yellow")
    service = Panel(
        "\n".join(service_lines(snap)),
        title="[bold]%s[/] service [%s]%s[/]" % (snap["base"], colour, state),
        border_style=colour,
    )
    rows, hidden = shown_devices(snap, max_rows)
    table = Table(
        title="devices: [green]%d online[/], %s[red]%d offline[/]"
        % (
            snap["online"],
            "[blue]%d asleep[/], " % snap["asleep"] if snap.get("asleep") else "",
            snap["offline"],
        ),
        caption="... and %d more (--json lists every device)" % hidden if hidden else None,
    )
    battery = shows_battery(rows)
    for i, name in enumerate(device_header(battery)):
        table.add_column(name, justify="left" if i < 3 else "right")
    for r in rows:
        present = r["online"] or r.get("asleep")
        table.add_row(*device_cells(r, battery), style=None if present else "red")
    return Group(service, table)


@dataclass
class WatchOptions:
    """Where to watch: the broker URL, the fleet's prefix and id, and the credentials."""

    broker: str
    fleet: str
    prefix: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None


class FleetWatch:
    """A read-only MQTT client keeping the latest message of every watched topic."""

    def __init__(self, options: WatchOptions) -> None:
        import paho.mqtt.client as mqtt

        from broker_service.options import ConfigError, broker_address
        from device_agent.topics import Topics

        self.host, self.port, tls = broker_address(options.broker)
        try:
            self.base = Topics(options.prefix, options.fleet).base
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.messages: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.last_message = 0.0
        self.subscribed = threading.Event()
        self.refused: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if options.username:
            self.client.username_pw_set(options.username, options.password)
        if tls:
            self.client.tls_set(ca_certs=options.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def topics(self) -> list[tuple[str, int]]:
        """The subscriptions: the service's topics and every device's status and telemetry."""
        devices = self.base + "/devices/+/"
        return [(self.base + "/service/+", 1), (devices + "status", 1), (devices + "telemetry", 0)]

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.subscribed.set()
            return
        client.subscribe(self.topics())

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        self.last_message = time.monotonic()
        self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages[msg.topic] = bytes(msg.payload)
            if msg.retain:  # sent for the new subscription; live traffic does not count
                self.last_message = time.monotonic()

    def start(self, timeout: float = 10.0) -> FleetWatch:
        """Connect and wait until the retained messages have arrived (see SETTLE_QUIET_S);
        ConnectionError when the broker cannot be reached or refuses the connection."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(
                "cannot reach broker %s:%d: %s" % (self.host, self.port, exc)
            ) from None
        self.client.loop_start()
        if not self.subscribed.wait(timeout) or self.refused:
            self.stop()
            raise ConnectionError(
                "broker %s:%d %s"
                % (
                    self.host,
                    self.port,
                    "refused: %s" % self.refused if self.refused else "did not answer",
                )
            )
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            with self.lock:
                quiet = time.monotonic() - self.last_message
            if quiet >= SETTLE_QUIET_S:
                break
            time.sleep(0.05)
        return self

    def snapshot(self) -> dict[str, Any]:
        """The fleet now (see `snapshot`)."""
        with self.lock:
            messages = dict(self.messages)
        return snapshot(self.base, messages)

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _rows_for(out: TextIO) -> int:
    """How many device rows fit the terminal (40 when it is not one)."""
    try:
        return max(5, os.get_terminal_size(out.fileno()).lines - 14)
    except (OSError, ValueError, AttributeError):
        return 40


def watch(
    options: WatchOptions,
    as_json: bool = False,
    once: bool = False,
    interval: float = 1.0,
    out: TextIO | None = None,
    plain: bool = False,
) -> int:
    """Show the fleet: one JSON snapshot (`as_json`), one view (`once`, or when `out` is not a
    terminal), or a view refreshed every `interval` s until Ctrl-C; `rich` when installed
    (unless `plain`), else plain text."""
    out = out or sys.stdout
    fleet = FleetWatch(options).start()
    try:
        if as_json:
            out.write(json.dumps(fleet.snapshot(), indent=1) + "\n")
            return 0
        fancy = _has_rich() and not plain
        if once or not out.isatty():
            _print_once(fleet.snapshot(), out, fancy)
            return 0
        _refresh(fleet, out, fancy, interval)
        return 0
    finally:
        fleet.stop()


def _print_once(snap: Mapping, out: TextIO, fancy: bool) -> None:
    if fancy:
        from rich.console import Console

        Console(file=out).print(render_rich(snap, _rows_for(out)))
    else:
        out.write(render_text(snap, _rows_for(out)) + "\n")


def _refresh(fleet: FleetWatch, out: TextIO, fancy: bool, interval: float) -> None:
    """Redraw until Ctrl-C."""
    try:
        if fancy:
            from rich.console import Console
            from rich.live import Live

            def view():
                return render_rich(fleet.snapshot(), _rows_for(out))

            console = Console(file=out)
            with Live(view(), console=console, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(view(), refresh=True)
        while True:
            out.write("\x1b[H\x1b[2J" + render_text(fleet.snapshot(), _rows_for(out)) + "\n")
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return
