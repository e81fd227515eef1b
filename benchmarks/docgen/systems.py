"""The device, the wire and the service: the agent under MicroPython and its energy, payload
size against its bound, the compressed downlink, what the broker sends, aggregation speed,
load, memory per device and the cluster."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, figure, listed

BOARD_NAMES = {"nrf52840": "nRF52840", "esp32": "ESP32", "rp2040": "Pico W"}


def device_bench(doc: dict) -> str:
    """The agent's training step under MicroPython (native and plain kernels) and CPython, its
    peak heap and payload, and the closed-form head beside."""
    header = [
        "use case",
        "params",
        "MACs/sample",
        "step ms (native)",
        "step ms (plain)",
        "native speed-up",
        "step ms (CPython)",
        "peak heap B",
        "payload B",
        "closed-form head: step ms (× SGD head's), peak heap B",
    ]
    rows = []
    for r in doc["results"]:
        closed = r.get("closed_form")
        rows.append(
            [
                r["use_case"],
                "%d" % r["params"],
                "%d" % r["macs_per_sample"],
                "%.2f" % r["step_ms"],
                "%.2f" % r["step_ms_plain"],
                "%.2fx" % r["native_speedup"],
                "%.2f" % r["step_ms_cpython"],
                "%d" % r["peak_heap_bytes"],
                "%d" % r["payload_bytes"],
                "%.2f (×%.2f), %d"
                % (closed["step_ms"], closed["step_ratio"], closed["peak_heap_bytes"])
                if closed
                else NONE,
            ]
        )
    return "%s, best of %d.\n\n%s" % (doc["runtime"], doc["repeat"], markdown_table(header, rows))


def _fit_line(f: dict) -> str:
    host = (
        " (%.0f cycles at the host's %.2f GHz)" % (f["host_cycles_per_mac"], f["host_hz"] / 1e9)
        if f.get("host_hz")
        else ""
    )
    boards = "; ".join(
        "%s %.0f / %.0f"
        % (BOARD_NAMES.get(b, b), f["boards"][b]["micropython"], f["boards"][b]["compiled"])
        for b in f["boards"]
    )
    return (
        "Fitted on %d step kinds: %.0f ns per MAC on the bench host%s, rms error %.0f %% (with a "
        "term per parameter updated: %.0f %%, not used). The pyboard takes %.0fx as long as the "
        "host in perf_bench, so %.0f cycles per MAC on its Cortex-M4F (device_agent/energy.py "
        "uses %.0f). Cycles per MAC, MicroPython / compiled: %s.\n"
        % (
            f["points"],
            1e9 * f["seconds_per_mac"],
            host,
            100 * f["rms_relative_error"],
            100 * f["two_terms"]["rms_relative_error"],
            f["perf_bench"]["slowdown"],
            f["reference_cycles_per_mac"],
            f["model_reference_cycles_per_mac"],
            boards,
        )
    )


def _energy_cells(r: dict, board: str) -> list[str]:
    mp, cc = r["energy"][board]["micropython"], r["energy"][board]["compiled"]
    return [
        "%s / %s" % (figure(mp["compute_s"]), figure(cc["compute_s"])),
        "%s / %s (%s)" % (figure(mp["energy_mj"]), figure(cc["energy_mj"]), figure(mp["radio_mj"])),
    ]


def device_energy(doc: dict) -> str:
    """The fitted compute cost and one device round's time and energy on each board profile,
    MicroPython kernel / compiled kernel (docs/device.md holds the same table)."""
    boards = list(doc["fit"]["boards"])
    names = [BOARD_NAMES.get(b, b) for b in boards]
    header = ["use case", "step ms (unix port)", "MACs/round", "B up / down"]
    header += [c for n in names for c in ("%s s" % n, "%s mJ (radio)" % n)]
    rows = [
        [
            r["use_case"],
            "%.2f" % r["step_ms"],
            f"{r['round_macs']:,}",
            "%d / %d" % (r["payload_bytes"], r["model_bytes"] + r["command_bytes"]),
            *(c for b in boards for c in _energy_cells(r, b)),
        ]
        for r in doc["results"]
    ]
    return "\n".join(
        [
            _fit_line(doc["fit"]),
            markdown_table(header, rows),
            "\nOne device round (10 reconstruction and 20 adaptation samples). Each board's cells: "
            "MicroPython kernel / compiled kernel, compute seconds and energy; radio: the round's "
            "MQTT exchange (model and command down, update up) with its TCP/IP and link framing.",
        ]
    )


def payload_bound(doc: dict) -> str:
    """Encoded update size against the information-theoretic bound."""
    header = ["use case", "n", "k", "values", "payload B", "bound B", "ratio", "ratio (body)"]
    rows = [
        [
            r["use_case"],
            "%d" % r["n"],
            "%d" % r["k"],
            r["values"],
            "%d" % r["payload_bytes"],
            "%.1f" % r["bound_bytes"],
            "%.2f" % r["ratio_with_header"],
            "%.2f" % r["ratio_body"],
        ]
        for r in doc["rows"]
    ]
    return "Top-P = %g %%.\n\n%s" % (doc["top_p"], markdown_table(header, rows))


def aggregation(doc: dict) -> str:
    """In-process sparse aggregation speed against the memory-bandwidth bound."""
    header = [
        "n",
        "k",
        "updates/s",
        "median run",
        "bandwidth lower bound, updates/s",
        "of the bound",
    ]
    rows = [
        [
            "%d" % r["n"],
            "%d" % r["k"],
            "%.0f" % r["updates_per_second"],
            "%.0f" % r.get("updates_per_second_median_run", r["updates_per_second"]),
            "%.0f" % r["lower_bound_updates_per_second"],
            "%.1f %%" % (100 * r["updates_per_second"] / r["lower_bound_updates_per_second"]),
        ]
        for r in doc["rows"]
    ]
    intro = (
        "Batch decode + validate + mean. Memory bandwidth measured in the same run: %.1f GB/s. "
        "Times are CPU time of the measuring thread, best of %d runs."
        % (doc["bandwidth_bytes_per_s"] / 1e9, doc["rows"][0].get("repeats", 1))
    )
    return intro + "\n\n" + markdown_table(header, rows)


def load(doc: dict) -> str:
    """Lightweight devices against mosquitto: throughput, round latency, the raw broker rate and
    the service's memory."""
    header = [
        "devices",
        "device trust",
        "rounds",
        "updates/s",
        "round p50 s",
        "round p99 s",
        "raw QoS 1 msg/s (samples' range)",
        "end-to-end / raw",
        "service RSS round 2 → last MB",
    ]
    rows = []
    for row in doc["rows"]:
        rss, raw = row["service_rss_bytes"], row["raw_qos1_messages_per_second_samples"]
        trust = "off" if row.get("settings", {}).get("trust_rate") == 0 else "on"
        rows.append(
            [
                "%d" % row["devices"],
                trust,
                "%d" % row["rounds"],
                "%.0f" % row["updates_per_second"],
                "%.2f" % row["round_latency_p50_s"],
                "%.2f" % row["round_latency_p99_s"],
                "%.0f (%.0f–%.0f)" % (row["raw_qos1_messages_per_second"], min(raw), max(raw)),
                "%.0f %%" % (100 * row["end_to_end_vs_raw"]),
                "%.1f → %.1f" % (rss[min(1, len(rss) - 1)] / 1e6, rss[-1] / 1e6),
            ]
        )
    intro = (
        "Every device has its own MQTT connection; the raw rate is one paho publisher to one "
        "paho subscriber through the same broker with the fleet connected, sampled before the "
        "first round and between rounds; the ratio is to the samples' mean."
    )
    return intro + "\n\n" + markdown_table(header, rows)


def scale(doc: dict) -> str:
    """The service's memory per known device, over rounds, and device trust's per device."""
    known = markdown_table(
        ["devices", "presence B/device", "telemetry B/device", "total B/device", "birth payload B"],
        [
            [
                "%d" % r["devices"],
                "%.0f" % r["presence_bytes_per_device"],
                "%.0f" % r["telemetry_bytes_per_device"],
                "%.0f" % r["total_bytes_per_device"],
                "%d" % r["birth_payload_bytes"],
            ]
            for r in doc["memory_per_known_device"]
        ],
    )
    rounds = markdown_table(
        ["devices", "rounds", "B/device after round 1 → last", "growth round 2 → last, B/device"],
        [
            [
                "%d" % r["devices"],
                "%d" % r["rounds"],
                "%.0f → %.0f"
                % (
                    r["bytes_per_device_after_each_round"][0],
                    r["bytes_per_device_after_each_round"][-1],
                ),
                "%.1f" % r["growth_bytes_per_device_round_2_to_last"],
            ]
            for r in doc["memory_over_rounds"]
        ],
    )
    trust = markdown_table(
        ["devices", "remembered", "trust B/remembered device", "checkpoint B/remembered device"],
        [
            [
                "%d" % r["devices"],
                "%d" % r["remembered"],
                "%.0f" % r["trust_bytes_per_remembered_device"],
                "%.0f" % r["checkpoint_bytes_per_remembered_device"],
            ]
            for r in doc["trust"]
        ],
    )
    return "\n\n".join([known, rounds, trust])


def cluster(doc: dict) -> str:
    """One mosquitto against a three-node NATS cluster: raw QoS 1 rate and a short session."""
    rates = markdown_table(
        ["broker", "QoS 1 msg/s (%d B)" % doc["payload_bytes"]],
        [[name.replace("_", " "), "%.0f" % rate] for name, rate in doc["qos1_per_second"].items()],
    )
    sessions = markdown_table(
        ["session", "rounds", "updates", "wall s"],
        [
            [name.replace("_", " "), "%d" % s["rounds"], "%d" % s["updates"], "%.2f" % s["seconds"]]
            for name, s in doc["session"].items()
        ],
    )
    return rates + "\n\n" + sessions


def downlink(doc: dict) -> str:
    """What the broker sent the devices per round against the service's own count, cohort ×
    model and every device × model, and what the devices sent."""
    down = markdown_table(
        [
            "θ_g sent as",
            "MODEL payload B",
            "broker → devices per round B",
            "cohort × model B",
            "every device × model B (before)",
            "service's count / broker's",
            "mosquitto $SYS bytes sent (all clients) B",
        ],
        [
            [
                r["values"],
                f"{r['model_payload_bytes']:,}",
                f"{r['broker_to_devices_per_round']:,.0f}",
                f"{r['cohort_times_model_per_round']:,}",
                f"{r['every_device_times_model_per_round']:,}",
                "%.3f" % r["service_vs_broker"],
                f"{r['sys_bytes_sent_all_clients']:,}",
            ]
            for r in doc["runs"]
        ],
    )
    up = markdown_table(
        [
            "θ_g sent as",
            "devices → broker per update B",
            "the bench's round uplink B",
            "telemetry B",
        ],
        [
            [
                r["values"],
                "%.0f" % r["devices_to_broker_per_update"],
                "%.1f" % r["round_uplink_per_update"],
                "%.1f" % r["telemetry_per_update"],
            ]
            for r in doc["runs"]
        ],
    )
    first = doc["runs"][0]
    intro = (
        "%d sine devices (real agents, paho transport) through a byte-counting proxy, cohort %d, "
        "%d rounds per encoding; the service's count must be within %g %% of the broker's."
        % (first["devices"], first["cohort"], first["rounds"], 100 * doc["tolerance"])
    )
    return "\n\n".join([intro, down, up])


def _codec_row(name: str, s: dict, values: str, e: dict, goal: float) -> list[str]:
    diff = (
        NONE
        if values == "f32"
        else "%+.4f ± %.4f%s"
        % (e["difference_vs_f32"], e["difference_ci95"], "" if e["within_f32_ci"] else " (outside)")
    )
    ratio = e["radio_ratio_vs_tinyreptile"]
    return [
        "%s (%s)" % (name, s["metric"]),
        values,
        "%d" % e["model_bytes"],
        "%.4f ± %.4f" % (e["metric_mean"], e["metric_ci95"]),
        diff,
        "%.0f" % e["bytes_up_per_update"],
        "%.0f" % e["bytes_down_per_update"],
        "%.0f" % e["radio_bytes_per_update"],
        "%.0f" % s["tinyreptile"]["radio_bytes_per_update"],
        "%.2f×" % ratio,
        "met" if e["goal_met"] else "%.2f× short" % (goal / ratio),
    ]


def downlink_codec(doc: dict) -> str:
    """TinyMetaFed with θ_g sent as float32, float16 or int8: the validation metric, its paired
    difference with float32, the bytes per update and the radio ratio against TinyReptile's."""
    goal = doc["goal_ratio"]
    header = [
        "use case",
        "θ_g sent as",
        "model B",
        "metric (validation)",
        "vs f32 (paired, CI95)",
        "up B",
        "down B",
        "radio B (MQTT)",
        "TinyReptile radio B",
        "ratio",
        "goal ≥ %g×" % goal,
    ]
    rows = [
        _codec_row(name, s, values, e, goal)
        for name, s in doc["use_cases"].items()
        for values, e in s["encodings"].items()
    ]
    intro = "%s; seeds %s; %.0f s of wall time." % (
        doc["protocol"],
        listed(doc["seeds"]),
        doc["seconds"],
    )
    return intro + "\n\n" + markdown_table(header, rows)


BLOCKS = [
    Block("device_bench", "The agent under MicroPython", ("device-bench.json",), device_bench),
    Block("device_energy", "A device round's energy", ("device-bench.json",), device_energy),
    Block(
        "payload_bound",
        "Payload size against the information-theoretic bound",
        ("payload-bound.json",),
        payload_bound,
    ),
    Block("downlink_codec", "The compressed downlink", ("downlink-codec.json",), downlink_codec),
    Block("downlink", "What the broker sends the devices", ("downlink.json",), downlink),
    Block("aggregation", "Sparse aggregation in-process", ("aggregation.json",), aggregation),
    Block("load", "Load: lightweight devices against mosquitto", ("load.json",), load),
    Block("scale", "Memory per known device", ("scale.json",), scale),
    Block("cluster", "One mosquitto against a NATS cluster", ("cluster.json",), cluster),
]
