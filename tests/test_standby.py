"""The primary/standby pair on one state directory: the standby watches the primary's retained
status and the state lock, takes over only with the lock, and finishes a session whose primary
was killed mid-round with the model an uninterrupted session ends with."""

import os
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker_service.observe.logs import EventLog
from broker_service.server import checkpoint
from broker_service.server.config import ConfigError, ServiceConfig, load_config
from broker_service.server.journal import Journal
from broker_service.server.mqtt import OFFLINE, ONLINE, service_status_topic
from broker_service.server.standby import Standby, primary_state, watch_client_id
from broker_service.server.statelock import StateLock
from broker_service.sim.fleet import NumpyRunner
from broker_service.testing.brokers import free_port
from broker_service.testing.waiting import read_text, wait_for_text, wait_until
from broker_service.usecases.sine import SineUseCase
from device_agent.topics import Topics
from tests.locks import hold_lock_in_child, holder_pid, kill_hard


def test_the_status_payloads_are_read_safely():
    assert primary_state(ONLINE) == "online" and primary_state(OFFLINE) == "offline"
    for payload in (b"", b"{", b"[1]", b'{"state": 3}', b'{"state": ""}', b"\xff"):
        assert primary_state(payload) == "unknown", payload
    assert watch_client_id().startswith("tinymetafed-standby-")
    assert watch_client_id() != "tinymetafed-service"


def test_the_standby_switch_comes_from_the_file_the_environment_or_the_flag(tmp_path):
    assert load_config(None, None, {}).standby is False
    path = tmp_path / "c.toml"
    path.write_text("[service]\nstandby = true\nstandby_username = 'watch'\n")
    cfg = load_config(str(path), {"standby": None}, {"TINYMETAFED_STANDBY_PASSWORD": "pw"})
    assert cfg.standby is True and (cfg.standby_username, cfg.standby_password) == ("watch", "pw")
    for word, value in (("1", True), ("Yes", True), ("off", False), ("false", False)):
        assert load_config(None, None, {"TINYMETAFED_STANDBY": word}).standby is value
    assert load_config(None, {"standby": True}, {"TINYMETAFED_STANDBY": "0"}).standby is True
    with pytest.raises(ConfigError, match="standby from \\$TINYMETAFED_STANDBY: 'maybe'"):
        load_config(None, None, {"TINYMETAFED_STANDBY": "maybe"})
    path.write_text("standby = 1\n")
    with pytest.raises(ConfigError, match="is not true or false"):
        load_config(str(path), None, {})


def test_a_standby_on_a_free_state_takes_it_without_waiting(tmp_path):
    cfg = ServiceConfig(broker="mqtt://127.0.0.1:1", state_dir=str(tmp_path), standby=True)
    log = tmp_path / "s.log"
    lock = Standby(cfg, EventLog(path=log)).wait()  # no broker needed
    assert lock is not None and lock.held and holder_pid(tmp_path) == os.getpid()
    assert "event=standby_takeover" in log.read_text() and "primary=none" in log.read_text()
    lock.release()


def publish_status(port: int, payload: bytes) -> None:
    """Set the service's retained status as the primary's connection (or its will) would."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-primary")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        topic = service_status_topic(Topics("tinymetafed", "default"))
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_lock_decides_not_the_status(mosquitto, tmp_path):
    state = tmp_path / "state"
    primary = hold_lock_in_child(state)
    cfg = ServiceConfig(broker="mqtt://127.0.0.1:%d" % mosquitto.port, state_dir=str(state))
    log = tmp_path / "s.log"
    stop = threading.Event()
    standby = Standby(cfg, EventLog(path=log), stop=stop, poll=0.2)
    result = {}
    thread = threading.Thread(target=lambda: result.update(lock=standby.wait()))
    thread.start()
    try:
        wait_for_text(log, "event=standby_waiting", 30)
        assert "pid %d, since" % primary.pid in read_text(log)
        wait_for_text(log, "event=standby_saw broker=connected", 30)
        publish_status(mosquitto.port, ONLINE)
        wait_for_text(log, "event=standby_saw primary=online", 30)
        publish_status(mosquitto.port, OFFLINE)  # offline, yet the lock is held: no takeover
        wait_for_text(log, "event=standby_lock_held", 30)
        assert thread.is_alive() and "standby_takeover" not in read_text(log)
        kill_hard(primary)  # the lock is free now
        thread.join(30)
    finally:
        stop.set()
        thread.join(30)
        kill_hard(primary)
    lock = result["lock"]
    assert lock is not None and lock.held and holder_pid(state) == os.getpid()
    text = read_text(log)
    assert "event=standby_takeover" in text and "primary=offline" in text.split("takeover")[1]
    lock.release()


def test_without_a_broker_the_lock_alone_decides(tmp_path):
    state = tmp_path / "state"
    primary = hold_lock_in_child(state)
    port = free_port()  # nothing listens there
    cfg = ServiceConfig(broker="mqtt://127.0.0.1:%d" % port, state_dir=str(state))
    log = tmp_path / "s.log"
    stop = threading.Event()
    result = {}
    standby = Standby(cfg, EventLog(path=log), stop=stop, poll=0.2)
    thread = threading.Thread(target=lambda: result.update(lock=standby.wait()))
    thread.start()
    try:
        wait_for_text(log, "event=standby_saw broker=unreachable reason=127.0.0.1:%d" % port, 30)
        kill_hard(primary)
        thread.join(30)
    finally:
        stop.set()
        thread.join(30)
        kill_hard(primary)
    text = read_text(log)
    assert result["lock"] is not None and holder_pid(state) == os.getpid()
    assert text.count("broker=unreachable") == 1 and "primary=unknown" in text
    result["lock"].release()


class Gate:
    """Stops the first device that starts round `round_no` inside it until `opened` is set."""

    def __init__(self, round_no: int) -> None:
        self.round_no = round_no
        self.claimed = threading.Lock()
        self.device: str | None = None
        self.opened = threading.Event()

    def holds(self, device: str, round_no: int) -> bool:
        """True once: for the first device to reach the gated round."""
        with self.claimed:
            if round_no != self.round_no or self.device is not None:
                return False
            self.device = device
            return True


class GatedRunner(NumpyRunner):
    """A simulated device's round that, at the gate, waits (its connection kept alive, new
    commands stashed) before it computes: the service sees a round that stays open."""

    def __init__(self, runner: NumpyRunner, gate: Gate) -> None:
        super().__init__(runner.use_case, runner.net, runner.seed)
        self.gate = gate

    def __call__(self, agent, command):
        if self.gate.holds(agent.device_id, command["round"]):
            deadline = time.monotonic() + 180
            while not self.gate.opened.is_set():
                assert time.monotonic() < deadline, "the gate was never opened"
                agent.transport.wait(100)
        return super().__call__(agent, command)


def serve(session, state, log, *extra, ready=None):
    """`tinymetafed serve` in its own process: 10 sine rounds of 5 devices."""
    flags = ("--rounds", "10", "--cohort", "5", "--eval-every", "100", "--round-timeout", "120")
    return session.serve(*flags, *extra, state=state, log=log, ready=ready)


GATED_ROUND = 4


def test_the_standby_finishes_the_session_of_a_primary_killed_mid_round(session, tmp_path):
    use_case = SineUseCase()
    fleet = session.fleet(use_case, 10, start=False)
    gate = Gate(GATED_ROUND)
    session.on_close(gate.opened.set)  # before the fleet stops: a held device lets go
    for agent in fleet.agents:
        agent.round_runner = GatedRunner(agent.round_runner, gate)
    fleet.start()
    state, a_log, s_log = tmp_path / "pair", tmp_path / "primary.log", tmp_path / "standby.log"
    primary = serve(session, state, a_log)
    wait_until(lambda: holder_pid(state) == primary.pid, 60, "the primary's lock")
    standby = serve(session, state, s_log, "--standby", ready="event=standby_saw primary=online")
    journal = Journal(state / "journal", GATED_ROUND)
    # round 4 is open: four of its five devices answered (journaled), the fifth is held
    wait_until(lambda: len(journal.replay()) == 4, 120, "four journaled updates of round 4")
    kill_hard(primary)
    wait_for_text(s_log, "event=round_open round=%d" % GATED_ROUND, 60)
    gate.opened.set()  # the held device answers the standby's service
    assert standby.wait(180) == 0, read_text(s_log)[-3000:]
    taken_over = checkpoint.load(state / "checkpoint.json")
    assert holder_pid(state) == standby.pid
    fleet.stop()
    # the same session without interruption, with the same seeds, on fresh devices
    session.fleet(use_case, 10)
    clean = serve(session, tmp_path / "clean", tmp_path / "clean.log")
    assert clean.wait(180) == 0
    reference = checkpoint.load(tmp_path / "clean" / "checkpoint.json")
    assert "event=round_closed round=%d " % GATED_ROUND not in read_text(a_log)  # killed in it
    text = read_text(s_log)
    waiting = text.index("event=standby_waiting")
    assert "pid %d, since" % primary.pid in text[waiting:].splitlines()[0]
    assert waiting < text.index("event=standby_saw primary=online")
    assert text.index("event=standby_saw primary=online") < text.index("event=standby_takeover")
    assert "event=resumed round=%d " % GATED_ROUND in text
    assert text.count("event=replayed round=%d " % GATED_ROUND) == 4
    assert taken_over.round == reference.round == 10
    np.testing.assert_array_equal(taken_over.theta, reference.theta)
    assert StateLock(state).try_acquire()  # the standby's service released it at its end
