"""The device, the wire and the service: the agent under MicroPython and its energy, payload
size against its bound, the compressed downlink, what the broker sends, aggregation speed,
load, memory per device and the cluster."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, figure, listed

BOARD_NAMES = {"nrf52840": "nRF52840", "esp32": "ESP32", "rp2040": "Pico W"}
KERNEL_NAMES = {"micropython": "Python", "compiled": "native"}


def _ms(value: float | None) -> str:
    return NONE if value is None else "%.3f" % value if value < 0.1 else "%.2f" % value


def device_bench(doc: dict) -> str:
    """The agent's training step under the unix-port MicroPython (as shipped, plain, with the
    compiled kernels) and CPython, its peak heap and payload."""
    header = [
        "use case",
        "params",
        "MACs/sample",
        "step ms (as shipped)",
        "step ms (plain)",
        "@native speed-up",
        "step ms (compiled kernels)",
        "step ms (CPython)",
        "peak heap B",
        "payload B",
    ]
    rows = [
        [
            r["use_case"],
            "%d" % r["params"],
            "%d" % r["macs_per_sample"],
            _ms(r["step_ms"]),
            _ms(r["step_ms_plain"]),
            "%.2fx" % r["native_speedup"],
            _ms(r.get("step_ms_compiled")),
            _ms(r["step_ms_cpython"]),
            "%d" % r["peak_heap_bytes"],
            "%d" % r["payload_bytes"],
        ]
        for r in doc["results"]
    ]
    return (
        "%s, best of %d. As shipped: the pure-Python kernels with their @micropython.native "
        "decorators; plain: without them; compiled: the native module tmf_kernels built for "
        "x64.\n\n%s" % (doc["runtime"], doc["repeat"], markdown_table(header, rows))
    )


def _count(x: float) -> str:
    """An instruction count in millions or thousands (three significant digits at most)."""
    if x >= 1e6:
        return "%sM" % figure(x / 1e6)
    return "%sk" % figure(x / 1e3) if x >= 1e4 else "%d" % round(x)


def device_instructions(doc: dict) -> str:
    """Instructions per MAC of each step kind and of a whole round, for every firmware and
    kernel set, with the fit energy.py takes."""
    header = [
        "firmware, kernels",
        "use case",
        "recon step: instructions/MAC",
        "adapt step: instructions/MAC",
        "round: instructions (MACs)",
        "round: instructions/MAC",
        "heap free built B",
    ]
    rows = []
    for name in doc["targets"]:
        for r in (r for r in doc["runs"] if r["target"] == name):
            rd = r["round"]
            rows.append(
                [
                    name,
                    r["use_case"],
                    "%.1f" % r["recon_step"]["per_mac"],
                    "%.1f" % r["adapt_step"]["per_mac"],
                    "%s (%s)" % (_count(rd["instructions"]), f"{rd['macs']:,}")
                    if rd["fits"]
                    else "did not fit the heap",
                    "%.1f" % rd["per_mac"] if rd["fits"] else NONE,
                    "%d" % r["heap_free_built"],
                ]
            )
    fitted = "; ".join(
        "%s %s (rms %.0f %%)"
        % (name, figure(f["instructions_per_mac"]), 100 * f["rms_relative_error"])
        for name, f in doc["fit"].items()
    )
    calib = "; ".join(
        "%s %.1f" % (name, c["instructions"] / c["us"]) for name, c in doc["calibration"].items()
    )
    legend = "; ".join("%s: %s" % (name, t["about"]) for name, t in doc["targets"].items())
    measured = doc.get("measured") or doc.get("provenance") or {}
    return (
        "Counted by `%s` (%s). %s. A step's instructions are the mean of the round's %d "
        "reconstruction and %d adaptation steps, each timed alone; a round's leave out drawing "
        "the synthetic samples. Instructions per virtual µs measured on each firmware: %s. "
        "Instructions per MAC of a round, fitted on the four rounds (energy.py's figure): "
        "%s.\n\n%s"
        % (
            measured.get("command", "?"),
            measured.get("date", "date not recorded"),
            legend,
            doc["command"]["recon_samples"],
            doc["command"]["adapt_samples"],
            calib,
            fitted,
            markdown_table(header, rows),
        )
    )


def device_cpi(doc: dict) -> str:
    """The traced training steps: their instruction mix and cycles per instruction by the
    core's timings, each core's CPI, and each board's as energy.py prices it."""
    header = [
        "firmware, kernels",
        "use case",
        "instructions",
        "CPI (P = 1 / 2 / 3)",
        "loads / stores / branches / float",
        "taken branches",
        "where (share of instructions)",
    ]
    rows = [
        [
            t["target"],
            t["use_case"],
            _count(t["instructions"]),
            _cpis(t),
            " / ".join(
                "%.0f %%" % (100 * t["classes"][c]) for c in ("load", "store", "branch", "float")
            ),
            "%.0f %%" % (100 * t["taken_branches"]),
            ", ".join("%s %.0f %%" % (n, 100 * share) for n, share in t["symbols"][:3]),
        ]
        for t in doc["traces"]
    ]
    cores = "; ".join(
        "%s %s %.2f%s"
        % (
            core,
            KERNEL_NAMES[k],
            c["cpi"],
            " (%.2f–%.2f)" % (c["low"], c["high"]) if c["high"] > c["low"] else "",
        )
        for core, kernels in doc["cpi"].items()
        for k, c in kernels.items()
    )
    boards = "; ".join(
        "%s %s / %s"
        % (
            BOARD_NAMES.get(name, name),
            "%.2f" % b["micropython"]["cycles_per_instruction"],
            "%.2f" % b["compiled"]["cycles_per_instruction"],
        )
        for name, b in doc["model"]["boards"].items()
    )
    return (
        "One adaptation step of each use case (those of at most %s instructions), every "
        "instruction logged, priced by the Cortex-M4's timings (the Cortex-M7 firmware's "
        "windows) or the Cortex-M0+'s (the others) at zero wait states; P is the Cortex-M4's "
        "pipeline refill after a taken branch. CPI at P = 2 over all windows of a core and "
        "kernel: %s. With the boards' memory factors, energy.py's CPI, Python / native: %s.\n\n%s"
        % (_count(doc["trace_limit"]), cores, boards, markdown_table(header, rows))
    )


def _cpis(t: dict) -> str:
    """A window's CPI at P = 1 / 2 / 3, or the one figure when P does not enter it."""
    got = ["%.2f" % (t["cycles"][p] / t["instructions"]) for p in ("1", "2", "3")]
    return " / ".join(got) if len(set(got)) > 1 else got[0]


def _pair(cells: dict, key: str) -> str:
    got = [cells[k].get(key) for k in ("micropython", "compiled")]
    return " / ".join(NONE if v is None else figure(v) for v in got)


def device_energy(doc: dict) -> str:
    """One device round's compute time and energy on each board profile, pure-Python / native
    kernels, from the round's measured instructions, and energy.py's MAC model beside."""
    boards = list(energy_boards(doc))
    header = ["use case", "MACs/round", "B up / down"]
    header += [
        c
        for b in boards
        for c in ("%s s" % BOARD_NAMES.get(b, b), "%s mJ (radio)" % BOARD_NAMES.get(b, b))
    ]
    rows = []
    for use_case, row in doc["energy"].items():
        cells = [
            use_case,
            f"{row['macs']:,}",
            "%s / %d"
            % (NONE if row["bytes_up"] is None else "%d" % row["bytes_up"], row["bytes_down"]),
        ]
        for b in boards:
            radio = row[b]["radio_mj"]
            cells += [
                _pair(row[b], "compute_s"),
                "%s (%s)" % (_pair(row[b], "energy_mj"), NONE if radio is None else figure(radio)),
            ]
        rows.append(cells)
    ratios = "; ".join(
        "%s %s"
        % (
            KERNEL_NAMES[k],
            ", ".join(
                "%s %.2f"
                % (u, row["nrf52840"][k]["model_compute_s"] / row["nrf52840"][k]["compute_s"])
                for u, row in doc["energy"].items()
                if row["nrf52840"][k].get("compute_s")
            ),
        )
        for k in ("micropython", "compiled")
    )
    return "\n".join(
        [
            markdown_table(header, rows),
            "\nOne device round (%d reconstruction and %d adaptation samples). Each board's "
            "cells: pure-Python kernels / compiled kernels (tmf_kernels), compute seconds and "
            "energy, priced from the round's instructions as counted on the firmware (the "
            "Cortex-M7 counts for the nRF52840 and the ESP32, the Cortex-M0 and armv6m ones for "
            "the Pico W) at energy.py's cycles per instruction; radio: the round's MQTT exchange "
            "(model and command down, update up) with its TCP/IP and link framing. energy.py's "
            "MAC-only model (what the agent's telemetry and the simulation price) against these "
            "compute times: %s."
            % (doc["command"]["recon_samples"], doc["command"]["adapt_samples"], ratios),
        ]
    )


def energy_boards(doc: dict) -> list[str]:
    """The board profiles a device-cortexm.json document priced, in its order."""
    first = next(iter(doc["energy"].values()))
    return [b for b in first if b not in ("macs", "bytes_up", "bytes_down")]


def device_goals(doc: dict) -> str:
    """The speed goals on the Cortex-M7 with the compiled kernels, and where an omniglot and a
    kws adaptation step spend their instructions, kernel by kernel."""
    g = doc["goals"]
    steps = markdown_table(
        ["use case", "step", "instructions/MAC", "goal", "met"],
        [
            [
                s["use_case"],
                s["kind"],
                "%.1f" % s["per_mac"],
                "≤ %g" % s["goal"],
                "met" if s["met"] else "%.2f× the goal" % s["ratio"],
            ]
            for s in g["steps"]
        ],
    )
    r = g["omniglot_round_nrf52840"]
    line = (
        "An omniglot round with the compiled kernels on the nRF52840 profile: %.2f s by "
        "energy.py's model, %s s from the round's counted instructions (goal ≤ %g s: %s)."
        % (
            r["model_s"],
            NONE if r["measured_s"] is None else "%.2f" % r["measured_s"],
            r["goal_s"],
            "met" if r["met"] else "not met, %.2f× the goal" % (r["model_s"] / r["goal_s"]),
        )
    )
    rows = []
    for r in doc["runs"]:
        if r["target"] != "m7-native" or r["use_case"] not in ("omniglot", "kws"):
            continue
        for p in r["profile"]:
            rows.append(
                [
                    r["use_case"],
                    "%s %s" % (p["kind"], p["pass"]) if p["layer"] >= 0 else "loss and gradient",
                    f"{p['macs']:,}",
                    _count(p["instructions"]),
                    NONE if p["per_mac"] is None else "%.1f" % p["per_mac"],
                ]
            )
    kernels = markdown_table(
        ["use case", "kernel call (in a step's order)", "MACs", "instructions", "instructions/MAC"],
        rows,
    )
    return "\n\n".join(
        [
            steps,
            line,
            "Each kernel call of an adaptation step on the Cortex-M7 with the compiled kernels "
            "(the call's own cost included):",
            kernels,
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
    Block(
        "device_instructions",
        "Instructions per MAC on Cortex-M firmware",
        ("device-cortexm.json",),
        device_instructions,
    ),
    Block(
        "device_cpi",
        "Cycles per instruction of the traced steps",
        ("device-cortexm.json",),
        device_cpi,
    ),
    Block("device_energy", "A device round's energy", ("device-cortexm.json",), device_energy),
    Block("device_goals", "The compiled kernels' goals", ("device-cortexm.json",), device_goals),
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
