"""Cluster: the same measurements on one mosquitto and on a three-node nats-server cluster
speaking MQTT (broker_service.testing.brokers starts both on 127.0.0.1): raw QoS 1 throughput of
368-byte messages (one publisher, one subscriber; on NATS on the same node and across nodes),
and a sine session (10 simulated devices, cohort 10) with the service on node 2 and the devices
on nodes 1 and 3. Prints a table and writes JSON.

    .venv/bin/python benchmarks/cluster.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.observe.logs import EventLog  # noqa: E402
from broker_service.observe.provenance import write_results  # noqa: E402
from broker_service.server.config import ServiceConfig  # noqa: E402
from broker_service.server.service import AggregationService  # noqa: E402
from broker_service.sim.fleet import SimulatedFleet  # noqa: E402
from broker_service.testing.brokers import Mosquitto, NatsCluster  # noqa: E402
from broker_service.usecases.sine import SineUseCase  # noqa: E402

SIZE = 368  # bytes: a sine update (benchmarks/results/load.json uses the same size)


def qos1_rate(pub_port: int, sub_port: int, count: int = 5000) -> float:
    """Messages per second from a paho publisher on one port to a subscriber on another."""
    got, done, last = [0], threading.Event(), [0.0]
    subscribed = threading.Event()

    def on_message(client, userdata, msg):
        got[0] += 1
        last[0] = time.perf_counter()
        if got[0] >= count:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rate-sub-%d" % sub_port)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", sub_port)
    sub.subscribe("rate/updates", qos=1)
    sub.loop_start()
    assert subscribed.wait(10), "no SUBACK"
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rate-pub-%d" % pub_port)
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", pub_port)
    pub.loop_start()
    payload = bytes(SIZE)
    start = time.perf_counter()
    for _ in range(count):
        pub.publish("rate/updates", payload, qos=1)
    done.wait(120)
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return got[0] / (last[0] - start)


def session(service_port: int, device_ports: list[int], rounds: int, folder: Path) -> dict:
    """A sine session: 10 simulated devices spread over `device_ports`, the service on
    `service_port`; its summary and wall time."""
    use_case = SineUseCase(fleet_size=10)
    fleet = SimulatedFleet("127.0.0.1", device_ports[0], use_case, 10, fleet="bench")
    for i, agent in enumerate(fleet.agents):
        agent.cfg["broker"] = {**agent.cfg["broker"], "port": device_ports[i % len(device_ports)]}
    fleet.start()
    cfg = ServiceConfig(
        broker="mqtt://127.0.0.1:%d" % service_port,
        fleet="bench",
        use_case="sine",
        rounds=rounds,
        cohort=10,
        min_updates=10,
        state_dir=str(folder / "state"),
        eval_every=1000,
        eval_devices=2,
        wait_for_devices=30.0,
        seed=0,
    )
    try:
        started = time.perf_counter()
        summary = AggregationService(cfg, EventLog(quiet=True)).run()
        took = time.perf_counter() - started
    finally:
        fleet.stop()
    return {"rounds": summary["rounds"], "updates": summary["updates"], "seconds": took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/cluster.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tmf-cluster-"))
    (folder / "m").mkdir()
    (folder / "n").mkdir()
    broker = Mosquitto(folder / "m", extra="max_queued_messages 1000000\n").start()
    nodes = NatsCluster(folder / "n").start()
    p = nodes.mqtt_ports
    try:
        out = {
            "payload_bytes": SIZE,
            "qos1_per_second": {
                "mosquitto": qos1_rate(broker.port, broker.port),
                "nats_same_node": qos1_rate(p[1], p[1]),
                "nats_node1_to_node2": qos1_rate(p[0], p[1]),
            },
            "session": {
                "mosquitto": session(broker.port, [broker.port], args.rounds, folder / "m"),
                "nats_service_node2_devices_nodes1_3": session(
                    p[1], [p[0], p[2]], args.rounds, folder / "n"
                ),
            },
        }
    finally:
        nodes.stop()
        broker.stop()
    for name, rate in out["qos1_per_second"].items():
        print("QoS 1 %d B  %-22s %8.0f messages/s" % (SIZE, name, rate))
    for name, s in out["session"].items():
        print(
            "session   %-36s %d rounds, %d updates, %.1f s"
            % (name, s["rounds"], s["updates"], s["seconds"])
        )
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
