"""The benchmark manifest: which module, with which arguments, makes which results file, which
docs blocks show it, which `make` target re-runs it, and whether it is current or archived.

*Current*: the code of today reproduces it and its make target re-runs it. *Archived*: kept as
evidence of a decision, measured with options the code no longer has, never re-run; it records
the commit that made it. A file that does not record its own provenance (the "provenance" key
that broker_service/observe/provenance.py writes) names here the commit that committed it
(`git log --format=%h -1 -- benchmarks/results/FILE`).

benchmarks/make_docs.py reads this table and checks it against the results folder, the block
registry and the docs pages (`problems`); tests/test_docs_pages.py also checks the Makefile.

The learning benchmarks' energy figures (bench, seed sweep, the heads, server-step and rotation
ablations) are re-priced in place, without a re-run, by `-m benchmarks.reprice` (`make reprice`)
whenever device_agent/energy.py's compute model is recalibrated; a re-priced file says so in its
provenance ("repriced"), and its MADE_BY commit, if any, stays the one that measured it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.docgen.registry import BLOCKS

CURRENT, ARCHIVED = "current", "archived"
DATA = "$(DATA)"
"""The data folder in a command, as the Makefile names it."""
MODULE = "-m benchmarks."
"""How a command that runs a benchmark module begins (after the Python that runs it)."""
APPENDIX = "appendix.md"
"""The page that holds a section for every entry (`<!-- generated: appendix_ENTRY -->`)."""


@dataclass(frozen=True)
class Entry:
    """One benchmark: `commands` (run from the repository's root; one that starts with MODULE
    runs a module of this package with the project's Python, `$(PY) -m benchmarks.NAME ...` in
    the Makefile) write `outputs` (in benchmarks/results/), which the appendix section shows as
    `tables` and other pages as `blocks`; `family` is the make target that re-runs it (None when
    archived)."""

    name: str
    title: str
    about: str
    commands: tuple[str, ...]
    outputs: tuple[str, ...]
    tables: tuple[str, ...]
    family: str | None
    status: str = CURRENT
    blocks: tuple[str, ...] = ()

    @property
    def section(self) -> str:
        """The name of this entry's block in the appendix."""
        return "appendix_" + self.name


def _per_use_case(pattern: str, use_cases=("sine", "omniglot", "kws", "occupancy")) -> tuple:
    return tuple(pattern % u for u in use_cases)


CLAIM_BLOCKS = (
    "claim_less_energy",
    "claim_less_communication",
    "claim_faster_convergence",
    "claim_more_stable",
    "claim_better_few_shot",
    "claim_beats_no_federation",
)

ENTRIES: tuple[Entry, ...] = (
    Entry(
        "tune",
        "Settings chosen on validation devices",
        "Every algorithm's learning rates, searched by the same design with the same budget on "
        "validation devices; the bench reads the choices.",
        ("-m benchmarks.tune --data-dir " + DATA,),
        _per_use_case("tuned-%s.json"),
        ("tuning",),
        "bench",
        blocks=("tuning_design",),
    ),
    Entry(
        "seed_sweep",
        "The comparison",
        "Every algorithm with its tuned settings on every use case and seed, measured on test "
        "devices: the tables, the learning curves and the claims.",
        ("-m benchmarks.seed_sweep --seeds 0,1,2 --data-dir " + DATA,),
        (*_per_use_case("bench-%s.json"), "seed-sweep.json"),
        (
            "claims",
            "goals",
            "baselines",
            "learning",
            *_per_use_case("comparison_%s"),
            "seed_sweep",
        ),
        "bench",
        blocks=("bench_setup", "protocol", *CLAIM_BLOCKS),
    ),
    Entry(
        "async_fleet",
        "Devices that sleep: asynchronous against invited rounds",
        "TinyMetaFed asynchronously (devices waking on their own schedule, buffered steps "
        "weighed by staleness; broker_service/sim/buffered.py) against invited rounds at equal "
        "device updates on sine and kws, seeds 0-2: the buffer and the staleness weight "
        "chosen on validation devices, the comparison on test devices.",
        ("-m benchmarks.async_fleet --data-dir " + DATA,),
        ("async-fleet.json",),
        ("async_fleet",),
        "bench",
        blocks=("async_fleet",),
    ),
    Entry(
        "demo_settings",
        "The demo's session settings",
        "The session settings `make demo` runs, chosen on validation waves with the demo's "
        "simulated fleet: the cheapest candidate whose every seed ends at most the target "
        "share of its round-0 error.",
        ("-m benchmarks.demo_settings",),
        ("demo-settings.json",),
        ("demo_settings",),
        "bench-demo",
    ),
    Entry(
        "device_bench",
        "The agent under MicroPython",
        "The agent's round under the unix-port MicroPython, with the kernels as shipped, plain "
        "and compiled, and under CPython: step times, peak heap, payload.",
        ("-m benchmarks.device_bench",),
        ("device-bench.json",),
        ("device_bench",),
        "bench-device",
    ),
    Entry(
        "device_cortexm",
        "The agent on Cortex-M firmware",
        "The agent's rounds on MicroPython firmware for the Cortex-M7, M3 and M0 under QEMU, "
        "counted in instructions: per MAC of each step and round, pure-Python and compiled "
        "kernels; the traced steps' cycles per instruction; what device_agent/energy.py makes "
        "of them, a round's time and energy on each board profile (also in docs/device.md); the "
        "compiled kernels' goals.",
        ("-m benchmarks.device_bench --cortexm",),
        ("device-cortexm.json",),
        ("device_instructions", "device_cpi", "device_energy", "device_goals"),
        "bench-device",
        blocks=("device_energy", "device_heap"),
    ),
    Entry(
        "payload_bound",
        "Payload size against its bound",
        "Each default model's encoded update against the information-theoretic bound.",
        ("-m benchmarks.payload_bound",),
        ("payload-bound.json",),
        ("payload_bound",),
        "bench-device",
    ),
    Entry(
        "battery",
        "Battery life of a device that sleeps",
        "Days on a battery for each board profile, use case and kernel when the device sleeps "
        "between training and sensor wakes, against staying connected with and without the "
        "radio's power save, by device_agent/energy.py (also in docs/device.md); what a day's "
        "energy goes to; the flash's writes and wear.",
        ("-m benchmarks.battery",),
        ("battery.json",),
        ("battery",),
        "bench-device",
        blocks=("battery",),
    ),
    Entry(
        "downlink_codec",
        "The compressed downlink",
        "TinyMetaFed with the model sent as float32, float16 or int8, on validation devices, "
        "and the radio bytes per update against TinyReptile's.",
        ("-m benchmarks.downlink_codec --data-dir " + DATA,),
        ("downlink-codec.json",),
        ("downlink_codec",),
        "bench-codec",
    ),
    Entry(
        "downlink",
        "What the broker sends",
        "A fleet of real agents through a byte-counting proxy: what the broker sends and "
        "receives per round, against the service's own count.",
        ("-m benchmarks.downlink",),
        ("downlink.json",),
        ("downlink",),
        "bench-service",
    ),
    Entry(
        "aggregation",
        "Sparse aggregation in-process",
        "Decoding, validating and averaging sparse updates, against the memory-bandwidth bound.",
        ("-m benchmarks.aggregation",),
        ("aggregation.json",),
        ("aggregation",),
        "bench-service",
    ),
    Entry(
        "load",
        "Load against mosquitto",
        "Lightweight devices, each with its own connection, against the service through "
        "mosquitto. The script measures one setting a run; the committed file holds runs with "
        "device trust on and off (`--trust-off`), measured back to back.",
        ("-m benchmarks.load",),
        ("load.json",),
        ("load",),
        "bench-service",
    ),
    Entry(
        "scale",
        "Memory per known device",
        "The structures that grow with the fleet, and device trust's state, per device.",
        ("-m benchmarks.scale",),
        ("scale.json",),
        ("scale",),
        "bench-service",
    ),
    Entry(
        "cluster",
        "One broker against a cluster",
        "Raw QoS 1 rate and a short session on one mosquitto and on a NATS cluster speaking MQTT.",
        ("-m benchmarks.cluster",),
        ("cluster.json",),
        ("cluster",),
        "bench-service",
    ),
    Entry(
        "sleepy_fleet",
        "Sleepy devices over mosquitto against invited rounds",
        "TinyMetaFed on sine and kws with the real service and mosquitto: async mode with a "
        "simulated fleet of devices that sleep (a real agent's training wake at a time, flash "
        "state and sensor ring in files, time compressed) against rounds mode with the always-on "
        "fleet, at equal device updates; test metric, wall time, bytes, staleness, lost updates.",
        ("-m benchmarks.sleepy_fleet --data-dir " + DATA,),
        ("sleepy-fleet.json",),
        ("sleepy_fleet",),
        "bench-service",
        blocks=("sleepy_fleet",),
    ),
    Entry(
        "hostile_learning",
        "Hostile devices",
        "Every attack with one and four of twenty training devices hostile, against the clean "
        "run on the same seed, with the default aggregation and the clipped mean without trust.",
        (
            "-m benchmarks.hostile learning --use-case sine",
            "-m benchmarks.hostile learning --use-case omniglot --rounds 200 --data-dir " + DATA,
        ),
        ("hostile-sine.json", "hostile-omniglot.json"),
        ("hostile_attacks", "hostile_goal", "hostile_sine", "hostile_omniglot"),
        "bench-hostile",
    ),
    Entry(
        "hostile_trust",
        "Choosing the trust settings",
        "Device trust at several settings and the clipped mean without it, clean and under "
        "attack, on validation devices.",
        ("-m benchmarks.hostile trust-sweep --use-case sine",),
        ("hostile-trust-sine.json",),
        ("trust_sweep_sine",),
        "bench-hostile",
    ),
    Entry(
        "hostile_step",
        "Choosing the outer step",
        "The clipped mean at several outer steps with the growth bound, clean and under attack.",
        ("-m benchmarks.hostile step-sweep --use-case sine",),
        ("hostile-step-sine.json",),
        ("step_sweep_sine",),
        "bench-hostile",
    ),
    Entry(
        "hostile_agreement",
        "Agreement with the consensus",
        "Each update's agreement with the consensus of device histories, what trust is built "
        "from, for honest and reversing devices.",
        (
            "-m benchmarks.hostile agreement --use-case sine",
            "-m benchmarks.hostile agreement --use-case omniglot --rounds 200 --data-dir " + DATA,
        ),
        ("hostile-agreement-sine.json", "hostile-agreement-omniglot.json"),
        ("agreement",),
        "bench-hostile",
    ),
    Entry(
        "hostile_norms",
        "Honest update norms",
        "Honest updates' norms against the model's and the median: what the refusal bound "
        "rests on before any history.",
        ("-m benchmarks.hostile norms --data-dir " + DATA,),
        ("hostile-norms.json",),
        ("norms",),
        "bench-hostile",
    ),
    Entry(
        "hostile_service",
        "The service under attack",
        "The service, a real mosquitto and simulated agents, some re-flashed to attack it.",
        ("-m benchmarks.hostile service --rounds 300",),
        ("hostile-service.json",),
        ("hostile_service",),
        "bench-hostile",
    ),
    Entry(
        "fuzz",
        "Fuzzing",
        "Coverage-guided fuzzing of every decoder, the round ledger and the agent's message "
        "handling (needs atheris).",
        ("-m benchmarks.fuzz",),
        ("fuzz.json",),
        ("fuzz",),
        "bench-hostile",
    ),
    Entry(
        "ablation_ef",
        "Error feedback and stale residuals",
        "TinyMetaFed with error feedback off and with stale residuals decayed or dropped; the "
        "default kept the residual whole.",
        ("-m benchmarks.ablation_ef --seeds 0,1,2 --data-dir " + DATA,),
        ("ablation-ef.json",),
        ("ablation_ef",),
        None,
        ARCHIVED,
    ),
    Entry(
        "omniglot_rotations",
        "Omniglot with rotation augmentation",
        "TinyMetaFed on Omniglot with every training character rotated into new classes.",
        (
            "tinymetafed bench --use-case omniglot --seeds 0,1,2 --algorithms tinymetafed "
            "--set rotations=true --json benchmarks/results/omniglot-rotations.json",
        ),
        ("omniglot-rotations.json",),
        ("omniglot_rotations",),
        None,
        ARCHIVED,
    ),
    Entry(
        "ablation_heads",
        "Closed-form heads",
        "The output layer rebuilt in closed form against SGD steps, trained jointly or frozen; "
        "then the ridge's λ on sine. The SGD head stayed the default.",
        (
            "-m benchmarks.ablation_heads --data-dir " + DATA,
            "-m benchmarks.ablation_heads --use-cases sine --ridges 0.1,10 "
            "--out benchmarks/results/ablation-heads-ridge.json",
        ),
        ("ablation-heads.json", "ablation-heads-ridge.json"),
        ("ablation_heads", "ablation_heads_ridge"),
        None,
        ARCHIVED,
    ),
    Entry(
        "ablation_outer",
        "The server's outer step",
        "TinyMetaFed with the coverage-aware mean, server momentum, Adam and Yogi against the "
        "plain Reptile step; the plain step stayed the default.",
        (
            "-m benchmarks.outer --configs reptile_step,reptile_step_wide,coverage,momentum,adam "
            "--data-dir " + DATA,
            "-m benchmarks.outer --configs reptile_step,yogi --data-dir %s "
            "--out benchmarks/results/ablation-outer-yogi.json" % DATA,
            "-m benchmarks.outer --configs reptile_step,coverage_adam --data-dir %s "
            "--out benchmarks/results/ablation-outer-both.json" % DATA,
        ),
        ("ablation-outer.json", "ablation-outer-yogi.json", "ablation-outer-both.json"),
        ("ablation_outer", "ablation_outer_yogi", "ablation_outer_both"),
        None,
        ARCHIVED,
    ),
    Entry(
        "hostile_clip",
        "Choosing the clip multiple",
        "The clipped mean at several clip multiples, clean and under attack, before device "
        "trust and the growth bound.",
        (
            "-m benchmarks.hostile sweep --use-case sine --rounds 1500",
            "-m benchmarks.hostile sweep --use-case omniglot --rounds 200 --data-dir " + DATA,
        ),
        ("hostile-clip-sine.json", "hostile-clip-omniglot.json"),
        ("clip_sweep_sine", "clip_sweep_omniglot"),
        None,
        ARCHIVED,
    ),
    Entry(
        "hostile_coverage",
        "The coverage-aware mean under attack",
        "The coverage-aware mean against the clipped mean under the attacks clipping is for; "
        "it stayed off.",
        (
            "-m benchmarks.hostile learning --use-case sine "
            "--only clipped_mean,coverage,no_federation --attacks none,sign_flip,max_norm,drift "
            "--json benchmarks/results/hostile-coverage-sine.json",
        ),
        ("hostile-coverage-sine.json",),
        ("hostile_coverage_sine",),
        None,
        ARCHIVED,
    ),
    Entry(
        "hostile_step_uncapped",
        "The outer step before the growth bound",
        "The clipped mean at several outer steps before the model's growth was bounded.",
        (
            "-m benchmarks.hostile step-sweep --use-case sine "
            "--json benchmarks/results/hostile-step-uncapped-sine.json",
        ),
        ("hostile-step-uncapped-sine.json",),
        ("step_sweep_uncapped_sine",),
        None,
        ARCHIVED,
    ),
)
"""Every benchmark whose results are committed, in the appendix's order."""

MADE_BY = {
    "ablation-ef.json": "fbefd8e",
    "ablation-heads-ridge.json": "a02dc27",
    "ablation-heads.json": "89b5b3d",
    "ablation-outer-both.json": "6eb2cea",
    "ablation-outer-yogi.json": "dddf441",
    "ablation-outer.json": "4f20b0a",
    "aggregation.json": "fd1afdd",
    "bench-kws.json": "19d24b8",
    "bench-occupancy.json": "19d24b8",
    "bench-omniglot.json": "19d24b8",
    "bench-sine.json": "19d24b8",
    "cluster.json": "bab4b34",
    "device-bench.json": "4b8959a",
    "downlink-codec.json": "ce04c47",
    "downlink.json": "fd1afdd",
    "fuzz.json": "ca66ec7",
    "hostile-agreement-omniglot.json": "0191e87",
    "hostile-agreement-sine.json": "0191e87",
    "hostile-clip-omniglot.json": "63bb6e5",
    "hostile-clip-sine.json": "63bb6e5",
    "hostile-coverage-sine.json": "1174513",
    "hostile-norms.json": "c79d50e",
    "hostile-omniglot.json": "83e1449",
    "hostile-service.json": "2b1556c",
    "hostile-sine.json": "83e1449",
    "hostile-step-sine.json": "e9ffb95",
    "hostile-step-uncapped-sine.json": "69e22ac",
    "hostile-trust-sine.json": "0f047f0",
    "load.json": "f4af1bb",
    "omniglot-rotations.json": "fbefd8e",
    "payload-bound.json": "2371b6a",
    "scale.json": "2b1556c",
    "seed-sweep.json": "19d24b8",
    "tuned-kws.json": "e527e4f",
    "tuned-occupancy.json": "e527e4f",
    "tuned-omniglot.json": "e527e4f",
    "tuned-sine.json": "e527e4f",
}
"""The commit that committed each file that records no provenance of its own (every archived
file needs one); a file re-run with its provenance recorded no longer needs it."""


def by_name() -> dict[str, Entry]:
    """The entries by name."""
    return {e.name: e for e in ENTRIES}


def owner(filename: str) -> Entry | None:
    """The entry whose commands write `filename`, or None."""
    return next((e for e in ENTRIES if filename in e.outputs), None)


def _entry_problems(entry: Entry, results: Path, placed: dict[str, set[str]]) -> list[str]:
    """What is wrong with one entry: missing files, unknown blocks, blocks that read files of
    another entry, files no table shows, blocks on no page, a status without its commit."""
    out = []
    if entry.status not in (CURRENT, ARCHIVED):
        out.append("%s: status %r is neither current nor archived" % (entry.name, entry.status))
    if (entry.status == CURRENT) != (entry.family is not None):
        out.append("%s: a current entry has a make target, an archived one none" % entry.name)
    out += [
        "%s: %s does not exist" % (entry.name, f)
        for f in entry.outputs
        if not (results / f).is_file()
    ]
    for name in (*entry.tables, *entry.blocks):
        if name not in BLOCKS:
            out.append("%s: no block is named %s" % (entry.name, name))
        elif set(BLOCKS[name].files) - set(entry.outputs):
            out.append("%s: block %s reads files the entry does not make" % (entry.name, name))
    shown = {f for t in entry.tables if t in BLOCKS for f in BLOCKS[t].files}
    out += ["%s: no table shows %s" % (entry.name, f) for f in entry.outputs if f not in shown]
    out += [
        "%s: block %s is on no page" % (entry.name, b) for b in entry.blocks if not placed.get(b)
    ]
    if APPENDIX not in placed.get(entry.section, set()):
        out.append("%s: %s has no block %s" % (entry.name, APPENDIX, entry.section))
    if entry.status == ARCHIVED:
        out += [
            "%s: no commit recorded for %s" % (entry.name, f)
            for f in entry.outputs
            if f not in MADE_BY
        ]
    return out


def problems(results: Path, placed: dict[str, set[str]]) -> list[str]:
    """Every way the manifest disagrees with the results folder, the block registry and the
    pages (`placed`: each block name with the pages it sits on); [] when it holds."""
    out = [p for e in ENTRIES for p in _entry_problems(e, results, placed)]
    listed = {f for e in ENTRIES for f in e.outputs}
    out += [
        "%s is in no manifest entry" % p.name
        for p in sorted(results.glob("*.json"))
        if p.name not in listed
    ]
    used = {n for e in ENTRIES for n in (*e.tables, *e.blocks)}
    out += ["block %s belongs to no manifest entry" % n for n in BLOCKS if n not in used]
    names = [e.name for e in ENTRIES]
    out += ["entry %s is listed twice" % n for n in sorted(set(names)) if names.count(n) > 1]
    return out
