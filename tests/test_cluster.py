"""A session on a clustered broker: three nats-server nodes speaking MQTT, the service on node 2,
the devices on nodes 1 and 3; and what crosses the nodes (retained messages, last wills, QoS 1
redelivery to a persistent session, a service restarted on another node).

One cluster serves the module; each test has its own fleet name, so its own topic tree."""

from __future__ import annotations

import queue
import signal
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest

from broker_service.server import checkpoint
from broker_service.server.mqtt import ServiceMqtt
from broker_service.server.presence import FleetView
from broker_service.sim.datafiles import write_device_samples
from broker_service.testing.brokers import NatsCluster
from broker_service.testing.session import Session
from broker_service.testing.waiting import wait_until
from broker_service.usecases.sine import SineUseCase
from device_agent import codec
from device_agent.topics import Topics
from tests.test_service import FAST, service_config

NODE1, NODE2, NODE3 = 0, 1, 2
ACK_WAIT = 8.0  # s: nats-server redelivers an unacknowledged QoS 1 message after this (default 30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A three-node NATS cluster with MQTT on each node, for this module's tests."""
    nodes = NatsCluster(tmp_path_factory.mktemp("nats"), 'ack_wait: "%ds"' % ACK_WAIT).start()
    yield nodes
    nodes.stop()


def devices_ports(cluster: NatsCluster) -> list[int]:
    """Where a test's devices connect: nodes 1 and 3 in turn (the service is on node 2)."""
    return [cluster.mqtt_ports[NODE1], cluster.mqtt_ports[NODE3]]


def client(port: int, client_id: str, clean: bool = True, **kw) -> mqtt.Client:
    """A connected paho MQTT 3.1.1 client with its network thread running; `inbox` gets
    (topic, payload, dup, arrival time on the monotonic clock) of each message."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=clean,
        **kw,
    )
    c.inbox = queue.Queue()  # type: ignore[attr-defined]
    c.on_message = lambda cl, ud, msg: c.inbox.put(
        (msg.topic, bytes(msg.payload), msg.dup, time.monotonic())
    )
    connected = []
    c.on_connect = lambda cl, ud, flags, reason, props: connected.append(flags.session_present)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    wait_until(lambda: connected, 10, "%s connected on port %d" % (client_id, port))
    c.session_present = connected[0]  # type: ignore[attr-defined]
    return c


def subscribed(c: mqtt.Client, topic: str) -> None:
    """Subscribe at QoS 1 and wait for the SUBACK."""
    acked = []
    c.on_subscribe = lambda *args: acked.append(True)
    c.subscribe(topic, qos=1)
    wait_until(lambda: acked, 10, "SUBACK for %s" % topic)


def closed(c: mqtt.Client) -> None:
    c.loop_stop()
    c.disconnect()


def received(
    c: mqtt.Client, count: int, timeout: float = 10.0
) -> list[tuple[str, bytes, bool, float]]:
    """The next `count` messages of a client, waiting at most `timeout` s in all."""
    deadline = time.monotonic() + timeout
    out = []
    while len(out) < count:
        try:
            out.append(c.inbox.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(
                "%d of %d messages after %gs" % (len(out), count, timeout)
            ) from None
    return out


def retained_on(port: int, topic: str, count: int, timeout: float) -> None:
    """Wait until a new subscriber on `port` gets `count` messages of `topic` (the devices'
    births): each try a fresh subscription, which gets what the cluster has retained when it
    is made (a birth published while a subscriber's interest was still on its way to the
    publisher's node reaches that subscriber neither live nor as retained)."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        watcher = client(port, "retained-watcher-%d" % tries)
        try:
            subscribed(watcher, topic)
            received(watcher, count, max(0.5, min(5.0, deadline - time.monotonic())))
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        finally:
            closed(watcher)


class Probe:
    """The service's own presence path (ServiceMqtt events into a FleetView) on one node."""

    def __init__(self, port: int, tmp_path, fleet: str):
        self.cfg = service_config(port, tmp_path, fleet=fleet)
        self.mqtt = ServiceMqtt(
            self.cfg, Topics(self.cfg.prefix, fleet), client_id="probe-" + fleet
        )
        self.view = FleetView()
        self.mqtt.start()

    def pump(self) -> None:
        """Apply every event received so far."""
        while (event := self.mqtt.next_event(0.05)) is not None:
            device, leaf = self.mqtt.topics.device_of(event.topic)
            if event.kind == "message" and leaf == "status":
                self.view.update(device, event.payload)

    def wait(self, predicate, timeout: float, what: str) -> None:
        """Pump events until `predicate(view)` holds."""
        wait_until(lambda: (self.pump(), predicate(self.view))[1], timeout, what)

    def stop(self) -> None:
        self.mqtt.stop()


def test_session_with_service_and_devices_on_different_nodes(cluster, tmp_path):
    """Devices on nodes 1 and 3 (six simulated, one real micropython agent on node 1), the
    service on node 2: the session completes its rounds; the model the service retained on node
    2 is what a client on node 1 gets; a killed device's last will reaches the service's node."""
    use_case = SineUseCase(fleet_size=7)
    real = use_case.device_ids[6]
    samples = write_device_samples(use_case, real, tmp_path / (real + ".csv"), 0)
    agent_cfg = {
        "device_id": real,
        "use_case": "sine",
        "fleet": "across",
        "broker": {"host": "127.0.0.1", "port": cluster.mqtt_ports[NODE1]},
        "data": {"kind": "file", "path": samples},
    }
    with Session(tmp_path, cluster.mqtt_ports[NODE2]) as session:
        proc = session.agent(agent_cfg, "micropython")
        session.fleet(use_case, 6, ports=devices_ports(cluster), fleet="across")
        probe = Probe(session.port, tmp_path, "across")
        session.on_close(probe.stop)
        probe.wait(lambda v: len(v.online()) == 7, 20, "7 devices online seen from node 2")
        cfg = service_config(
            session.port, tmp_path, fleet="across", rounds=5, min_updates=5,
            settings=FAST, eval_every=5, eval_devices=7,
        )  # fmt: skip
        summary = session.service(cfg, tmp_path / "service.log").run()
        log = (tmp_path / "service.log").read_text()
        assert summary["rounds"] == 5 and summary["updates"] == 25, summary
        assert "event=accepted" in log and "device=%s " % real in log, "the real agent took part"

        # the retained model, published on node 2, as a new client on node 1 gets it: the
        # cluster replicates a retained message to the other nodes a little later, so the last
        # version is read again until it arrives (or the deadline)
        def retained_version() -> int:
            reader = client(cluster.mqtt_ports[NODE1], "model-reader")
            subscribed(reader, Topics("tinymetafed", "across").model)
            payload = received(reader, 1)[0][1]
            closed(reader)
            return codec.decode_header(payload, len(payload)).model_version

        wait_until(
            lambda: retained_version() == 5, 20, "model version 5 retained on node 1", interval=0.2
        )
        # a device killed on node 1: its last will makes it offline for the service on node 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        probe.wait(lambda v: real not in v.online(), 10, "%s offline on node 2" % real)
        assert len(probe.view.online()) == 6


def test_retained_presence_is_cluster_wide(cluster, tmp_path):
    """Statuses retained on nodes 1 and 3 are all there for a service connecting to node 2."""
    with Session(tmp_path, cluster.mqtt_ports[NODE2]) as session:
        session.fleet(SineUseCase(fleet_size=4), 4, ports=devices_ports(cluster), fleet="presence")
        statuses = Topics("tinymetafed", "presence").devices + "+/status"
        retained_on(cluster.mqtt_ports[NODE1], statuses, 4, 60)  # every birth is stored by now
        probe = Probe(cluster.mqtt_ports[NODE2], tmp_path, "presence")  # connects afterwards
        try:
            probe.wait(lambda v: len(v.online()) == 4, 10, "4 retained statuses on node 2")
        finally:
            probe.stop()


def test_qos1_to_a_persistent_session_crosses_nodes(cluster):
    """A subscriber with a persistent session leaves node 2; QoS 1 messages published on node 1
    meanwhile reach it as soon as it comes back on node 3. A message it received but never
    acknowledged comes again (DUP) only when the server's ack_wait has passed since it was first
    sent, not at the reconnection as MQTT 3.1.1 (4.4) asks."""
    topic = "tinymetafed/qos/devices/d1/update"
    sub = client(cluster.mqtt_ports[NODE2], "persistent-sub", clean=False, manual_ack=True)
    subscribed(sub, topic)
    pub = client(cluster.mqtt_ports[NODE1], "publisher")
    pub.publish(topic, b"first", qos=1).wait_for_publish(10)
    assert received(sub, 1)[0][1] == b"first"  # delivered, not acknowledged
    sent_at = time.monotonic()
    sub.loop_stop()
    sub.socket().close()  # the subscriber's link drops without a DISCONNECT
    for i in range(3):
        pub.publish(topic, b"offline-%d" % i, qos=1).wait_for_publish(10)
    closed(pub)
    back = client(cluster.mqtt_ports[NODE3], "persistent-sub", clean=False)
    back_at = time.monotonic()
    try:
        assert back.session_present
        got = received(back, 4, ACK_WAIT + 20)  # the three queued ones and "first" again
        offline = [m for m in got if m[1] != b"first"]
        assert sorted(m[1] for m in offline) == [b"offline-0", b"offline-1", b"offline-2"]
        ((_, _, dup, again_at),) = [m for m in got if m[1] == b"first"]
        assert dup and again_at - sent_at >= ACK_WAIT - 0.5, "redelivered before ack_wait"
        if back_at - sent_at < ACK_WAIT - 1:  # back in time to tell the two apart
            assert max(m[3] for m in offline) < again_at, "the queued messages waited for ack_wait"
    finally:
        closed(back)


def _serve(session: Session, port: int, state, log) -> subprocess.Popen:
    flags = ("--fleet", "restart", "--cohort", "4", "--eval-every", "100", "--round-timeout", "10")
    return session.serve(*flags, port=port, state=state, log=log, env={"TINYMETAFED_ROUNDS": "8"})


def test_service_killed_on_node_2_resumes_on_node_3(cluster, tmp_path):
    """The service is killed mid-session while devices on node 1 answer, and restarted against
    node 3: it resumes from its checkpoint and completes the session."""
    state, log = tmp_path / "state", tmp_path / "serve.log"
    with Session(tmp_path, cluster.mqtt_ports[NODE1]) as session:
        session.fleet(SineUseCase(fleet_size=6), 6, fleet="restart")
        proc = _serve(session, cluster.mqtt_ports[NODE2], state, log)
        ckpt = state / "checkpoint.json"
        wait_until(lambda: ckpt.exists() and checkpoint.load(ckpt).round >= 3, 60, "round 3")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = checkpoint.load(ckpt).round
        proc = _serve(session, cluster.mqtt_ports[NODE3], state, log)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    assert killed_at < 8
    assert "event=resumed round=%d" % killed_at in log.read_text()
    assert checkpoint.load(ckpt).round == 8
