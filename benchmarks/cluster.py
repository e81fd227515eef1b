"""Cluster: the same measurements on one mosquitto and on a three-node nats-server cluster
speaking MQTT (broker_service.testing.brokers starts both on 127.0.0.1): raw QoS 1 throughput of
368-byte messages (one publisher, one subscriber; on NATS on the same node and across nodes),
and a sine session (10 simulated devices, cohort 10) with the service on node 2 and the devices
on nodes 1 and 3. Prints a table and writes JSON.

    .venv/bin/python -m benchmarks.cluster [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from broker_service.observe.provenance import write_results
from broker_service.testing.brokers import NatsCluster
from broker_service.testing.session import Session
from broker_service.usecases.sine import SineUseCase

ROOT = Path(__file__).resolve().parents[1]

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
    with Session(folder, service_port) as on_broker:
        on_broker.fleet(SineUseCase(fleet_size=10), 10, ports=device_ports, fleet="bench")
        cfg = on_broker.config(
            fleet="bench",
            use_case="sine",
            rounds=rounds,
            cohort=10,
            min_updates=10,
            eval_every=1000,
            eval_devices=2,
            wait_for_devices=30.0,
            seed=0,
        )
        started = time.perf_counter()
        summary = on_broker.service(cfg).run()
        took = time.perf_counter() - started
    return {"rounds": summary["rounds"], "updates": summary["updates"], "seconds": took}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/cluster.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tmf-cluster-"))
    (folder / "m").mkdir()
    (folder / "n").mkdir()
    with Session.with_mosquitto(folder / "m", extra="max_queued_messages 1000000\n") as broker:
        nodes = NatsCluster(folder / "n").start()
        broker.on_close(nodes.stop)
        p = nodes.mqtt_ports
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
