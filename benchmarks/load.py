"""Load: N concurrent lightweight devices (benchmarks.loadfleet) against a real mosquitto
for R rounds with the whole fleet in every cohort; updates per second, round latency p50/p99,
and the service's memory (RSS) after every round. For each fleet size, in the same run and
against the same broker with the fleet connected, the raw mosquitto QoS 1 rate for the same
payload size (one paho publisher to one paho subscriber) is sampled before the first round and
again every RAW_EVERY rounds (between rounds); the end-to-end rate is stated as a fraction of
the samples' mean. Every lightweight device has its own MQTT connection (no multiplexing of
device ids), so 10,000 devices need 10,000 descriptors in the fleet and in mosquitto. Prints a
table and writes JSON.

    .venv/bin/python -m benchmarks.load [--devices 1000 10000] [--rounds 100 20] [--trust-off]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from broker_service.observe.provenance import write_results
from broker_service.testing.session import Session

ROOT = Path(__file__).resolve().parents[1]

RAW_MESSAGES = 5000
"""Messages of one raw QoS 1 sample."""
RAW_EVERY = 10
"""Rounds between two raw samples: the machine's load varies, so the raw rate is sampled
through the run (before the first round and between rounds) and its mean is the comparison."""


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


def raw_qos1_throughput(port: int, size: int, count: int = 5000) -> float:
    """Messages per second from one paho publisher to one subscriber through the broker at
    QoS 1 with `size`-byte payloads (the broker's ceiling for this message size here)."""
    import threading

    import paho.mqtt.client as mqtt

    done = threading.Event()
    got = [0]

    last = [0.0]

    def on_message(client, userdata, msg):
        got[0] += 1
        last[0] = time.perf_counter()
        if got[0] >= count:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-sub")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("raw/updates", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-pub")
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)
    payload = bytes(size)
    start = time.perf_counter()
    for _ in range(count):
        pub.publish("raw/updates", payload, qos=1)
    done.wait(120)
    seconds = last[0] - start
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return got[0] / seconds


def run_fleet(devices: int, rounds_wanted: int, settings: dict | None = None) -> dict:
    """One fleet size: a fresh mosquitto, the fleet, the raw QoS 1 rate, then the service
    (with `settings` over the defaults)."""
    folder = Path(tempfile.mkdtemp(prefix="tmf-load-"))
    rounds, memory, raw = [], [], []
    # a queue deep enough that no QoS 1 message is dropped for a slow subscriber
    with Session.with_mosquitto(folder, extra="max_queued_messages 1000000\n") as session:
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.loadfleet",
                "--port",
                str(session.port),
                "--devices",
                str(devices),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        session.on_close(fleet.kill)
        assert fleet.stdout is not None
        ready = fleet.stdout.readline().split()  # "ready <devices> <update payload bytes>"
        assert ready[:1] == ["ready"], ready
        payload_size = int(ready[2])
        load_before = os.getloadavg()[0]

        def sample_raw() -> None:
            raw.append(raw_qos1_throughput(session.port, payload_size, count=RAW_MESSAGES))
            print(
                "%d devices: raw mosquitto QoS 1, %d-byte payloads: %.0f messages/s"
                % (devices, payload_size, raw[-1]),
                flush=True,
            )

        sample_raw()
        cfg = session.config(
            fleet="load",
            use_case="sine",
            rounds=rounds_wanted,
            cohort=devices,
            quorum=0.99,
            min_updates=int(0.99 * devices),  # also: start once 99 % of the fleet is known
            round_timeout=120.0,
            eval_every=10_000,
            eval_devices=1,
            wait_for_devices=120.0,
            max_update_norm=1e9,
            settings=dict(settings or {}),
        )

        def progress(report):
            rounds.append(
                {
                    "round": report.round,
                    "seconds": report.seconds,
                    "participants": len(report.participants),
                }
            )
            memory.append(rss_bytes())
            if (report.round + 1) % RAW_EVERY == 0:  # between rounds: not in any round's time
                sample_raw()
            print(
                "round %3d: %5d updates in %.2f s, service RSS %.1f MB"
                % (report.round, len(report.participants), report.seconds, memory[-1] / 1e6),
                flush=True,
            )

        service = session.service(cfg, progress=progress)
        start = time.perf_counter()
        summary = service.run()
        total = time.perf_counter() - start
        known = len(service.fleet.devices)
    seconds = np.array([r["seconds"] for r in rounds])
    doc = {
        "devices": devices,
        "settings": dict(settings or {}),
        "connections": devices,
        "known_devices": known,
        "rounds": len(rounds),
        "updates": summary["updates"],
        "payload_bytes": payload_size,
        "updates_per_second": summary["updates"] / float(seconds.sum()),
        "round_latency_p50_s": float(np.percentile(seconds, 50)),
        "round_latency_p99_s": float(np.percentile(seconds, 99)),
        "service_rss_bytes": memory,
        "rss_growth_after_round_2_bytes": (memory[-1] - memory[1]) if len(memory) > 2 else None,
        "wall_seconds_including_start": total,
        "raw_qos1_messages_per_second_samples": raw,
        "raw_qos1_messages_per_second": float(np.mean(raw)),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }
    doc["end_to_end_vs_raw"] = doc["updates_per_second"] / doc["raw_qos1_messages_per_second"]
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, nargs="+", default=[100, 20])
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/load.json"))
    parser.add_argument(
        "--trust-off", action="store_true", help="run the service with device trust off"
    )
    args = parser.parse_args()
    settings = {"trust_rate": 0.0} if args.trust_off else {}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    rounds = args.rounds + [args.rounds[-1]] * (len(args.devices) - len(args.rounds))
    rows = []
    for devices, wanted in zip(args.devices, rounds, strict=False):
        need = devices + 1000
        if need > hard:
            print("%d devices need %d file descriptors, the limit is %d" % (devices, need, hard))
            return 2
        rows.append(run_fleet(devices, wanted, settings))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "service_rss_bytes"}))
    doc = {"file_descriptor_limit": hard, "rows": rows}
    write_results(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
