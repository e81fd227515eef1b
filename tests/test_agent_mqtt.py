"""The device agent over a real mosquitto, under a real `micropython` (256 KB heap) and CPython."""

import json

import numpy as np
import pytest

from broker_service.core.device_round import simulate_round
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.testing.session import agent_process
from broker_service.testing.waiting import wait_for_text, wait_until
from broker_service.usecases.sine import SineUseCase
from device_agent import codec
from device_agent.datasource import write_sample_file
from device_agent.model import Plan
from device_agent.specs import spec_for
from tests.helpers import rel_err
from tests.mqtt_helpers import Driver

COMMAND = {
    "round": 0,
    "version": 1,
    "split": True,
    "recon_samples": 10,
    "adapt_samples": 20,
    "recon_lr": 0.05,
    "adapt_lr": 0.01,
    "top_p": 10.0,
    "values": "f32",
    "error_feedback": True,
    "seed": 4,
}


def agent_config(device_id, port, **extra):
    cfg = {"device_id": device_id, "fleet": "test", "broker": {"host": "127.0.0.1", "port": port}}
    cfg.update(extra)
    return cfg


class SubscriptionCount:
    """The broker's `$SYS/broker/subscriptions/count` (mosquitto with `sys_interval 1`
    publishes it, retained, within a second of a change): how the test knows the broker has
    processed a device's SUBSCRIBE or UNSUBSCRIBE, which arrive on another connection than the
    test's next PUBLISH."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        self.value = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sys-watch")
        self.client.on_message = lambda c, u, msg: setattr(self, "value", int(msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("$SYS/broker/subscriptions/count")
        self.client.loop_start()

    def wait_for(self, count, timeout=30):
        """Until the broker's count is `count`."""
        wait_until(lambda: self.value == count, timeout, "%d subscriptions" % count)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def finish(proc, timeout=60):
    try:
        assert proc.wait(timeout) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_round_over_mosquitto_micropython_equals_cpython_equals_numpy(mosquitto, tmp_path):
    use_case = SineUseCase(fleet_size=3)
    xs, ys = use_case.stream(use_case.device_ids[0], 30, np.random.default_rng(9))
    write_sample_file(str(tmp_path / "samples.csv"), xs, ys, classification=False)
    net = NumpyNet(use_case.spec)
    theta = initial_theta(net, 3)[: net.plan.n_global]
    driver = Driver(mosquitto.port)
    driver.publish_model(theta, version=1)
    data = {"kind": "file", "path": str(tmp_path / "samples.csv")}
    procs = {
        impl: agent_process(
            agent_config("%s-1" % impl[:2], mosquitto.port, data=data), tmp_path, impl, rounds=1
        )
        for impl in ("micropython", "cpython")
    }
    try:
        deltas = {}
        for impl, proc in procs.items():
            device = "%s-1" % impl[:2]
            birth = driver.wait_status(device, "online")
            assert birth["params"] == net.plan.n_params and birth["codec"] == codec.FORMAT_VERSION
            driver.command(device, COMMAND)
            deltas[impl] = codec.decode(driver.get(device, "update"))
            telemetry = json.loads(driver.get(device, "telemetry"))
            assert telemetry["samples"] == 30 and telemetry["bytes_sent"] > 0
            finish(proc)
            assert driver.wait_status(device, "offline")["state"] == "offline"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        driver.close()
    twin = simulate_round(net, theta, xs, ys, COMMAND, np.zeros(len(theta), dtype=np.float32))
    _, idx_np, val_np = codec.decode(twin.payload)
    (_, idx_mp, val_mp), (_, idx_py, val_py) = deltas["micropython"], deltas["cpython"]
    assert list(idx_mp) == list(idx_py) == list(idx_np)
    # the micropython agent runs the compiled kernels (float32 sums, the unix port's Python
    # kernels sum in double): Δ agrees to 1e-5 relative (tests/test_native_kernels.py)
    assert rel_err(val_mp, val_py) < 1e-5
    assert rel_err(val_mp, val_np) < 1e-5


@pytest.mark.parametrize(
    "values",
    # every model encoding θ_g may be sent in
    ["f32", "f16", "int8"],
)
@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_full_round_in_256k_heap_for_every_default_model(use_case, values, mosquitto, tmp_path):
    plan = Plan(spec_for(use_case))
    theta = initial_theta(NumpyNet(plan), 1)[: plan.n_global]
    driver = Driver(mosquitto.port)
    driver.publish_model(theta, version=5, values=values)  # θ_g as the service may send it
    device = "mp-%s-%s" % (use_case, values)
    proc = agent_process(
        agent_config(device, mosquitto.port, use_case=use_case),
        tmp_path,
        "micropython",
        rounds=1,
        heap="256K",
    )
    try:
        driver.wait_status(device, "online")
        settings = dict(values="f16", recon_samples=10, adapt_samples=20)
        driver.command(device, dict(COMMAND, version=5, **settings))
        header, idx, _ = codec.decode(driver.get(device, "update", timeout=120))
        telemetry = json.loads(driver.get(device, "telemetry"))
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        driver.close()
    assert header.n == plan.n_global and len(idx) == header.k > 0
    assert 0 < telemetry["heap_peak"] <= 256 * 1024 and telemetry["heap_free"] > 0
    assert telemetry["energy_mj"] > 0


def test_agent_survives_a_broker_restart_mid_round(mosquitto, tmp_path):
    plan = Plan(spec_for("kws"))
    theta = initial_theta(NumpyNet(plan), 1)[: plan.n_global]
    driver = Driver(mosquitto.port)
    driver.publish_model(theta, version=1)
    device = "mp-restart"
    proc = agent_process(
        agent_config(
            device,
            mosquitto.port,
            use_case="kws",
            broker={"host": "127.0.0.1", "port": mosquitto.port, "keepalive": 5},
        ),
        tmp_path,
        "micropython",
        rounds=1,
    )
    try:
        driver.wait_status(device, "online")
        driver.command(device, dict(COMMAND, recon_samples=40, adapt_samples=40))
        log = tmp_path / (device + ".log")
        wait_for_text(log, "agent training", 60)  # the ~2 s round (unix port) is under way
        mosquitto.stop()
        wait_for_text(log, "agent disconnected", 30)  # the agent saw the broker go
        mosquitto.start()
        driver.wait_status(device, "online", timeout=60)  # reconnected, new birth
        driver.publish_model(theta, version=2)  # broker lost its retained state
        driver.command(device, dict(COMMAND, round=1, version=2))
        header, _, _ = codec.decode(driver.get(device, "update", timeout=60))
        assert header.round == 1 and header.model_version == 2
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        driver.close()
    log = (tmp_path / (device + ".log")).read_text()
    assert "disconnected" in log and log.count("agent connected") >= 2


def test_model_is_fetched_only_on_invitation_and_garbage_is_rejected(tmp_path):
    from broker_service.testing.brokers import Mosquitto

    mosquitto = Mosquitto(tmp_path, extra="sys_interval 1\n").start()
    plan = Plan(spec_for("kws"))
    theta = initial_theta(NumpyNet(plan), 1)[: plan.n_global]
    driver = Driver(mosquitto.port)
    subscriptions = SubscriptionCount(mosquitto.port)
    device = "mp-fetch"
    # the Python kernels: a kws round of 100 samples lasts long enough for the checks below
    config = agent_config(device, mosquitto.port, use_case="kws")
    proc = agent_process(config, tmp_path, "micropython", rounds=1, native=False)
    log = tmp_path / (device + ".log")
    try:
        driver.wait_status(device, "online")
        outside = 3  # the device's command topic, the driver's devices/#, this $SYS topic
        subscriptions.wait_for(outside)
        # not invited: retained models (even garbage) are not sent to the device at all
        driver.publish_model(theta, version=1)
        driver.client.publish(driver.topics.command(device), b"TM\x01garbage", qos=1)
        wait_for_text(log, "agent rejected", 30)  # the garbage command
        driver.client.publish(driver.topics.model, b"\x00" * 64, qos=1, retain=True)
        # invited: it subscribes, gets the garbage, refuses it, and waits for the right model
        driver.command(device, {"round": 0, "version": 1, "recon_samples": 40, "adapt_samples": 60})
        wait_for_text(log, "reason=bad_magic", 30)
        subscriptions.wait_for(outside + 1)  # and the model topic, until it holds the model
        driver.publish_model(theta, version=1)
        wait_for_text(log, "agent training", 60)
        subscriptions.wait_for(outside)  # the broker has processed its UNSUBSCRIBE
        # the device left the model topic: a newer model mid-round does not reach it; the next
        # round's command supersedes the round, and the device fetches that round's model
        driver.publish_model(theta, version=2)
        driver.command(device, {"round": 1, "version": 2, "recon_samples": 5, "adapt_samples": 5})
        aborted = json.loads(driver.get(device, "telemetry"))
        assert aborted["aborted"] == "superseded" and aborted["round"] == 0
        header, _, _ = codec.decode(driver.get(device, "update"))
        done = json.loads(driver.get(device, "telemetry"))
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        driver.close()
        subscriptions.close()
        mosquitto.stop()
    assert header.round == 1 and header.model_version == 2
    assert done["rejected"] == {"command:truncated": 1, "model:bad_magic": 1}
    text = log.read_text()
    assert text.count("agent fetch ") == 2  # one subscription per invitation
    models = [line for line in text.splitlines() if line.startswith("agent model ")]
    assert [m.split("version=")[1].split()[0] for m in models] == ["1", "2"]
