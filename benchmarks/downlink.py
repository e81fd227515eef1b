"""Downlink at the broker: what mosquitto sends the devices per round, against the service's own
accounting (bytes_down, MQTT framing included) and against cohort × model.

A simulated fleet of N devices (real agents, paho transport, numpy rounds) connects to mosquitto
through a byte-counting TCP proxy (broker_service.testing.brokers.CountingProxy), so every byte
the broker sends a device is counted; the service connects to mosquitto directly. Devices fetch
the model only when invited (docs/protocol.md), so per round the devices should receive about
cohort × (model + command + a few MQTT acknowledgements), not N × model. The broker's own
`$SYS/broker/bytes/sent` (all its clients: devices, service and this script's monitor) is read
at the start and the end. The proxy also counts what the devices send, against what the bench
counts as a round's uplink (`server.mqtt.round_uplink`: the update, the command's and model's
PUBACKs, the fetch's SUBSCRIBE and UNSUBSCRIBE); the rest is the devices' telemetry (measured
here as the PUBLISH packets the broker relays to this script's monitor) and keep-alive pings.
Run once per `model_values` encoding.

    .venv/bin/python -m benchmarks.downlink [--devices 21] [--cohort 5] [--rounds 20]
        [--values f32,f16,int8] [--json benchmarks/results/downlink.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from broker_service.observe.provenance import write_results
from broker_service.server.mqtt import publish_size, round_uplink
from broker_service.testing.brokers import CountingProxy
from broker_service.testing.session import Session
from broker_service.testing.waiting import wait_until
from broker_service.usecases.sine import SineUseCase
from device_agent.topics import Topics

ROOT = Path(__file__).resolve().parents[1]

TOLERANCE = 0.05
"""The service's downlink accounting must be within 5 % of what the broker sent the devices."""


class SysMonitor:
    """A client on the broker itself that keeps the latest `$SYS/broker/bytes/sent`, counts
    the devices' births and the bytes of their telemetry PUBLISH packets (QoS 0)."""

    def __init__(self, port: int, fleet: str):
        self.sent: int | None = None
        self.online: set[str] = set()
        self.telemetry_bytes = 0
        self.telemetry_messages = 0
        self.topics = Topics(fleet=fleet)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="downlink-monitor")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(
            [
                ("$SYS/broker/bytes/sent", 0),
                (self.topics.devices + "+/status", 1),
                (self.topics.devices + "+/telemetry", 0),
            ]
        )
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.startswith("$SYS"):
            self.sent = int(msg.payload)
        elif msg.topic.endswith("/telemetry"):
            self.telemetry_bytes += publish_size(msg.topic, len(msg.payload), qos=0)
            self.telemetry_messages += 1
        elif b'"online"' in msg.payload:
            self.online.add(msg.topic)

    def fresh_sent(self, timeout: float = 5.0) -> int:
        """The next `$SYS/broker/bytes/sent` the broker publishes (every second)."""
        self.sent = None
        wait_until(lambda: self.sent is not None, timeout, "$SYS/broker/bytes/sent")
        assert self.sent is not None
        return self.sent

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def measure(devices: int, cohort: int, rounds: int, values: str, folder: Path) -> dict:
    """One session of `rounds` rounds with `model_values` = `values`; per round the bytes the
    broker sent the devices (proxy) and the service's bytes_down."""
    per_round: list[dict] = []
    fleet_name = "down-" + values
    with Session.with_mosquitto(folder, extra="sys_interval 1\n") as session:
        proxy = CountingProxy(session.port)
        session.on_close(proxy.close)
        monitor = SysMonitor(session.port, fleet_name)
        session.on_close(monitor.close)
        use_case = SineUseCase(fleet_size=devices)
        session.fleet(use_case, devices, ports=[proxy.port], fleet=fleet_name)
        wait_until(lambda: len(monitor.online) == devices, 60, "every device's birth")
        time.sleep(1.0)  # the births' acknowledgements are through
        cfg = session.config(
            fleet=fleet_name,
            use_case="sine",
            rounds=rounds,
            cohort=cohort,
            quorum=1.0,
            round_timeout=60.0,
            eval_every=10_000,
            eval_devices=1,
            state_dir=str(folder / ("state-" + values)),
            wait_for_devices=30.0,
            settings={"model_values": values},
        )
        topics = Topics(fleet=fleet_name)

        def progress(report) -> None:
            now = proxy.counts()
            size = report.bytes_up // max(1, len(report.participants))  # one update's
            per_round.append(
                {
                    "round": report.round,
                    "participants": len(report.participants),
                    "broker_to_devices": now[0] - last[0][0],
                    "devices_to_broker": now[1] - last[0][1],
                    "service_bytes_down": report.bytes_down,
                    "round_uplink": sum(
                        round_uplink(topics, d, size, True) for d in report.participants
                    ),
                }
            )
            last[0] = now

        service = session.service(cfg, progress=progress)
        sys_start = monitor.fresh_sent()
        last = [proxy.counts()]
        thread, summary = session.background(service)
        wait_until(lambda: not thread.is_alive(), 60 + rounds * 30, "the session's end")
        time.sleep(1.5)  # a $SYS period after the last message
        sys_end = monitor.fresh_sent()
        model_bytes = len(service.model_payload)
        telemetry, telemetry_messages = monitor.telemetry_bytes, monitor.telemetry_messages
    measured = sum(r["broker_to_devices"] for r in per_round)
    counted = sum(r["service_bytes_down"] for r in per_round)
    updates = max(1, sum(r["participants"] for r in per_round))
    uplink = sum(r["devices_to_broker"] for r in per_round)
    return {
        "values": values,
        "devices": devices,
        "cohort": cohort,
        "rounds": len(per_round),
        "updates": summary.get("updates"),
        "model_payload_bytes": model_bytes,
        "broker_to_devices_bytes": measured,
        "service_bytes_down": counted,
        "service_vs_broker": counted / measured if measured else None,
        "within_tolerance": bool(measured and abs(counted / measured - 1) <= TOLERANCE),
        "broker_to_devices_per_round": measured / max(1, len(per_round)),
        "cohort_times_model_per_round": cohort * model_bytes,
        "every_device_times_model_per_round": devices * model_bytes,
        "sys_bytes_sent_all_clients": sys_end - sys_start,
        "devices_to_broker_per_update": uplink / updates,
        "round_uplink_per_update": sum(r["round_uplink"] for r in per_round) / updates,
        "telemetry_per_update": telemetry / updates,
        "telemetry_messages": telemetry_messages,
        "per_round": per_round,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each encoding, print a table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=21)
    p.add_argument("--cohort", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--values", default="f32,f16,int8")
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/downlink.json"))
    args = p.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for values in args.values.split(","):
            folder = Path(tmp) / values
            folder.mkdir()
            runs.append(measure(args.devices, args.cohort, args.rounds, values, folder))
            r = runs[-1]
            print(
                "%-4s model %5d B | broker→devices %7.0f B/round (cohort×model %6d, every "
                "device×model %6d) | service counts %.3f of it | $SYS all clients %d B | "
                "devices→broker %.0f B/update (round uplink %.0f, telemetry %.0f)"
                % (
                    values,
                    r["model_payload_bytes"],
                    r["broker_to_devices_per_round"],
                    r["cohort_times_model_per_round"],
                    r["every_device_times_model_per_round"],
                    r["service_vs_broker"],
                    r["sys_bytes_sent_all_clients"],
                    r["devices_to_broker_per_update"],
                    r["round_uplink_per_update"],
                    r["telemetry_per_update"],
                ),
                flush=True,
            )
    doc = {"tolerance": TOLERANCE, "runs": runs}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.json, doc)
    print("wrote", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
