"""The agent's parts without a broker: the reconnect policy (device_agent.robust) over a scripted
fake transport, the message checks (device_agent.validate) and the documents (device_agent.reports).
"""

import json
import sys

import pytest

from device_agent import codec, reasons, reports, validate
from device_agent.config import make_config
from device_agent.model import Plan
from device_agent.robust import FIRST_BACKOFF_MS, MAX_BACKOFF_MS, RobustAgent, next_backoff
from device_agent.round import RoundResult
from device_agent.specs import spec_for
from tests.mpy import session_check as sc
from tests.mpy.fake_transport import FakeBroker

PLAN = Plan(spec_for("sine"))


def published(broker, leaf):
    """The payloads published on the fake device's topics ending in `leaf`, in order."""
    topic = sc.TOPICS.devices + sc.DEVICE + "/" + leaf
    return [p for t, p, _, _ in broker.published if t == topic]


# -- the reconnect policy --


def test_backoff_doubles_from_half_a_second_and_stays_at_thirty():
    waits = [FIRST_BACKOFF_MS]
    for _ in range(7):
        waits.append(next_backoff(waits[-1]))
    assert waits == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    assert MAX_BACKOFF_MS == 30000


def test_refused_connections_wait_longer_each_time_until_stopped():
    events = []
    broker = FakeBroker([{"refuse": True}] * 10)
    agent = sc.make_agent(broker, events)
    sleeps = []

    def sleep(ms):
        sleeps.append(ms)
        if len(sleeps) == 7:
            agent.stopping = True  # e.g. SimulatedFleet.stop() while waiting

    RobustAgent(agent, sleep=sleep).run()
    assert sleeps == [500, 1000, 2000, 4000, 8000, 16000, 30000]
    retries = [f["retry_ms"] for e, f in events if e == "disconnected"]
    assert retries == sleeps + [30000]
    assert all("connection refused" in f["error"] for e, f in events if e == "disconnected")
    assert len(broker.transports) == 8 and agent.transport is None and agent.connects == 0
    assert broker.published == []


def test_wrapper_reconnects_after_transport_errors_and_finishes_the_round():
    agent, broker, sleeps, events = sc.run(sc.reconnect_sessions)
    # two refusals in a row double the wait; a session that connected starts over at 500 ms
    assert sleeps == [500, 1000, 500]
    assert [e for e, _ in events] == [
        "disconnected",
        "disconnected",
        "connected",
        "model",
        "disconnected",
        "connected",
        "training",
        "round",
    ]
    assert [f["session"] for e, f in events if e == "connected"] == [1, 2]
    assert agent.connects == 2 and agent.rounds_done == 1 and agent.in_round == 0
    # every attempt set the offline last will; each session opened with a retained birth
    offline = {"state": "offline", "device": sc.DEVICE}
    assert all(json.loads(t.will[1]) == offline for t in broker.transports)
    births = [json.loads(p) for p in published(broker, "status")[:2]]
    assert [b["state"] for b in births] == ["online", "online"]
    assert [b["model_version"] for b in births] == [-1, sc.VERSION]  # the model was kept
    # only the command topic: the model is fetched on invitation (it was held here)
    subscribed = [sc.TOPICS.command(sc.DEVICE)]
    assert all(t.subscriptions == subscribed for t in broker.transports[2:])
    (update,) = published(broker, "update")
    header, idx, _ = codec.decode(update)
    assert (header.round, header.model_version, header.n) == (0, sc.VERSION, PLAN.n_global)
    assert len(idx) == header.k > 0
    (telemetry,) = [json.loads(p) for p in published(broker, "telemetry")]
    assert telemetry["device"] == sc.DEVICE and telemetry["samples"] == 5
    assert telemetry["bytes_sent"] == len(update) and telemetry["rejected"] == {}
    # the goodbye: retained offline status, then the transport is closed
    assert json.loads(published(broker, "status")[-1]) == offline
    assert broker.published[-1][2:] == (True, 1) and broker.transports[-1].closed


def test_connection_lost_mid_round_leaves_the_round_and_the_command_runs_again():
    agent, broker, sleeps, events = sc.run(sc.lost_round_sessions)
    assert sleeps == [500]
    assert [e for e, _ in events] == [
        "connected",
        "model",
        "training",
        "disconnected",
        "connected",
        "training",
        "round",
    ]
    lost = [f for e, f in events if e == "disconnected"][0]
    assert "connection lost" in lost["error"] and lost["retry_ms"] == 500
    assert agent.in_round == 0 and agent.abort_reason is None and agent.rounds_done == 1
    assert len(published(broker, "update")) == 1 and len(published(broker, "telemetry")) == 1


def test_stopping_ends_the_session_with_a_goodbye():
    events = []
    broker = FakeBroker([{"inbox": [sc.model_message(PLAN.n_global)]}])
    agent = sc.make_agent(broker, events)

    def stop_on_model(event, **fields):
        events.append(event)
        if event == "model":
            agent.stopping = True

    agent.log = stop_on_model
    sleeps = []
    RobustAgent(agent, sleep=sleeps.append).run()
    assert events == ["connected", "model"] and sleeps == []
    assert [json.loads(p)["state"] for p in published(broker, "status")] == ["online", "offline"]
    assert broker.transports[0].closed


# -- what the agent accepts and refuses --


def model(n, kind=codec.KIND_MODEL, version=1):
    indices = None if kind == codec.KIND_MODEL else list(range(n))
    return bytes(codec.encode(kind, n, indices, [0.5] * n, version, version))


def command(cmd):
    return bytes(codec.encode_command(cmd, 1, 0))


def refusal(check, *args):
    with pytest.raises(validate.Refused) as info:
        check(*args)
    return info.value.reason, info.value.detail


@pytest.mark.parametrize("n", [PLAN.n_global, PLAN.n_params])
def test_a_dense_model_of_theta_g_or_of_every_parameter_is_accepted(n):
    h = validate.check_model(model(n, version=7), PLAN, 65536)
    assert (h.n, h.model_version) == (n, 7)


def test_model_refusals_name_their_reason():
    delta = model(PLAN.n_global, codec.KIND_DELTA)
    assert refusal(validate.check_model, delta, PLAN, 65536) == (reasons.BAD_KIND, "")
    small = model(5)
    assert refusal(validate.check_model, small, PLAN, 65536) == (reasons.SHAPE_MISMATCH, "n=5")
    # the codec's own refusals keep its message as the detail
    for payload, limit, reason in [
        (b"TM\x01", 65536, reasons.TRUNCATED),
        (bytes(64), 65536, reasons.BAD_MAGIC),
        (model(PLAN.n_global), 100, reasons.OVERSIZED),
    ]:
        got, detail = refusal(validate.check_model, payload, PLAN, limit)
        assert got == reason
        try:
            codec.decode_header(payload, limit)
        except codec.CodecError as exc:
            assert detail == str(exc)


def test_command_checks():
    assert validate.check_command(command({"round": 3, "version": 1, "top_p": 5.0}))["round"] == 3
    assert refusal(validate.check_command, command({"version": 1})) == (
        reasons.BAD_COMMAND,
        "bad_command: missing integer 'round'",
    )
    assert refusal(validate.check_command, command({"round": 0, "version": "1"}))[0] == (
        reasons.BAD_COMMAND
    )
    assert refusal(validate.check_command, model(4))[0] == reasons.BAD_KIND
    assert refusal(validate.check_command, b"TM\x01garbage")[0] == reasons.TRUNCATED
    assert refusal(validate.check_command, command([1, 2]))[0] == reasons.BAD_JSON


@pytest.mark.parametrize(
    "held, split, refused",
    [
        (None, True, (reasons.STALE_VERSION, "want 2 have None")),
        ((1, PLAN.n_global), True, (reasons.STALE_VERSION, "want 2 have 1")),
        ((2, PLAN.n_global), False, (reasons.SHAPE_MISMATCH, "")),
        ((2, PLAN.n_params), True, (reasons.SHAPE_MISMATCH, "")),
        ((2, PLAN.n_global), True, None),
        ((2, PLAN.n_params), False, None),
    ],
)
def test_a_round_needs_the_commanded_version_of_the_right_length(held, split, refused):
    header = None
    if held is not None:
        header = codec.decode_header(model(held[1], version=held[0]))
    cmd = {"round": 0, "version": 2, "split": split}
    settings = dict(cmd)
    if refused is None:
        validate.check_round(cmd, settings, header, PLAN)
    else:
        assert refusal(validate.check_round, cmd, settings, header, PLAN) == refused


def test_refusals_are_counted_logged_and_a_stale_round_is_reported():
    events = []
    broker = FakeBroker([{}])
    agent = sc.make_agent(broker, events)
    agent.connect()
    agent.on_message(sc.TOPICS.command(sc.DEVICE), b"TM\x01garbage")
    agent.on_message(sc.TOPICS.model, bytes(64))
    agent.on_message(sc.TOPICS.model, model(5))
    agent.on_message(*sc.command_message())  # version 2, and no model is held
    agent.fetch_ms = 0
    agent.run_pending()  # subscribes to the model topic to fetch the model...
    transport = broker.transports[0]
    assert transport.subscriptions == [sc.TOPICS.command(sc.DEVICE), sc.TOPICS.model]
    agent.run_pending()  # ...which never comes: it unsubscribes and reports a stale round
    assert transport.subscriptions == [sc.TOPICS.command(sc.DEVICE)]
    assert agent.rejected == {
        "command:truncated": 1,
        "model:bad_magic": 1,
        "model:shape_mismatch": 1,
        "command:stale_version": 1,
    }
    rejected = [f for e, f in events if e == "rejected"]
    assert rejected[2] == {"what": "model", "reason": "shape_mismatch", "detail": "n=5"}
    assert rejected[3]["detail"] == "want 2 have None"
    (stale,) = [json.loads(p) for p in published(broker, "telemetry")]
    assert stale == {"round": 0, "version": 2, "error": "stale_version", "device": sc.DEVICE}
    assert agent.model_header is None and agent.rounds_done == 0


def test_telemetry_every_k_rounds_and_a_bad_setting_is_named():
    from device_agent.agent import Agent
    from device_agent.config import AgentConfigError
    from device_agent.datasource import SyntheticSource

    broker = FakeBroker([{}])
    cfg = make_config({"device_id": sc.DEVICE, "fleet": "test", "telemetry_every": 2})
    agent = Agent(cfg, None, transport_factory=broker.factory, logger=sc.events_logger([]))
    agent.source = SyntheticSource(agent.plan, 1)
    agent.connect()
    agent.on_message(*sc.model_message(PLAN.n_global))
    for t in range(3):
        agent.on_message(*sc.command_message(dict(sc.COMMAND, round=t)))
        agent.run_pending()
    assert agent.rounds_done == 3 and len(published(broker, "update")) == 3
    assert [json.loads(p)["round"] for p in published(broker, "telemetry")] == [1]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(AgentConfigError, match="telemetry_every"):
            make_config({"device_id": "d-1", "telemetry_every": bad})


# -- the documents --


def test_presence_documents():
    cfg = make_config({"device_id": "d-1", "use_case": "sine"})
    birth = json.loads(reports.birth("d-1", cfg["board"], "sine", PLAN, 4))
    assert birth["state"] == "online" and birth["device"] == "d-1"
    assert birth["board"] == sys.platform and birth["firmware"].startswith("cpython ")
    assert (birth["params"], birth["global_params"]) == (PLAN.n_params, PLAN.n_global)
    assert birth["codec"] == codec.FORMAT_VERSION and birth["model_version"] == 4
    assert birth["values"] == list(codec.VALUE_NAMES) and "bitmap" in birth["indices"]
    assert json.loads(reports.birth("d-1", "esp32", "sine", PLAN, -1))["board"] == "esp32"
    assert json.loads(reports.offline("d-1")) == {"state": "offline", "device": "d-1"}


def test_round_telemetry():
    result = RoundResult()
    result.payload = bytes(100)
    result.samples, result.macs, result.nnz = 30, 75840, 12
    result.adapt_loss_first, result.adapt_loss_last, result.adapt_loss = 0.9, 0.4, 0.6
    cmd = {"round": 3, "version": 4}
    doc = reports.round_done(cmd, result, 12, None, 500, "nrf52840", {"model:bad_magic": 1})
    assert set(doc) == {
        "round",
        "version",
        "compute_ms",
        "samples",
        "macs",
        "nnz",
        "loss_before",
        "loss_after",
        "adapt_loss",
        "heap_free",
        "heap_peak",
        "bytes_sent",
        "bytes_received",
        "energy_mj",
        "kernels",
        "rejected",
    }
    assert doc["loss_before"] == 0.9  # no reconstruction: the first adaptation loss
    assert (doc["bytes_sent"], doc["bytes_received"]) == (100, 500) and doc["energy_mj"] > 0
    result.recon_loss = 1.5
    assert reports.round_done(cmd, result, 12, None, 500, "esp32", {})["loss_before"] == 1.5
    text = reports.telemetry("d-1", reports.round_status(cmd, "aborted", reasons.ABORT_CANCELLED))
    assert json.loads(text) == {"round": 3, "version": 4, "aborted": "cancelled", "device": "d-1"}


def test_a_command_on_the_wire_carries_only_what_differs_from_the_defaults():
    from broker_service.core.hyperparams import settings_for
    from broker_service.core.strategies import ALGORITHMS, wire_command
    from device_agent.round import DEFAULTS, round_settings

    for name, strategy_cls in ALGORITHMS.items():
        strategy = strategy_cls(settings_for("sine", top_p=7.5, joint=False))
        full = strategy.round_command(12, version=12)
        sent = wire_command(full)
        assert round_settings(sent) == round_settings(full), name
        assert all(k not in sent or sent[k] != DEFAULTS[k] for k in DEFAULTS if k != "seed")
        assert sent["round"] == 12 and sent["seed"] == 12 and sent["joint"] is False
        payload = codec.encode_command(sent, 12, 12)
        assert validate.check_command(bytes(payload)) == sent
    # equal only with the same JSON type: 10 is not the default 10.0, 1 is not True
    assert wire_command({"top_p": 10, "split": 1}) == {"top_p": 10, "split": 1}
    assert wire_command({"top_p": 10.0, "split": True}) == {}
