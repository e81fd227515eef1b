"""The agent's heap through one full round as a board runs it (a MicroPython script).

`python -m broker_service.tools.firmware heap` puts this module into the ROMFS image beside the
agent and calls `main` on the Cortex-M firmware. The path is a board's (deploy/board/main.py):
import `device_agent.run`, build the agent (`run.build`), open a session (umqtt.simple is
imported and its client made then, as on a board), receive the retained model and the round
command, run the round, publish the update and the telemetry, say goodbye. Only the broker is
replaced, by an in-memory transport.

Measurement. A checkpoint collects garbage (`gc.collect()`) and reads `gc.mem_free()`: the
heap not held by live objects there. Checkpoints: at boot, after the imports, after the agent
is built, at every sample the round draws (between two SGD steps), and at every publish (the
update and telemetry payloads alive). Each checkpoint prints one line
`heap <where> <free> <largest free block>`; the lowest is the round's live-heap low point.
Transients inside a step (boxed floats, an encoder's temporaries) fall between checkpoints;
`ballast` covers them: that many bytes, in BALLAST_CHUNK-byte bytearrays, are allocated once the
agent is built and held through the round, with the checkpoints off (garbage is collected only
when the heap is full, as on a board); a round that completes with them never had less than
`ballast` bytes free, transients included. The last line is
`done <lowest free> <where> <largest free block there>` or `failed <exception>`.
"""

import gc
import json

BALLAST_CHUNK = 1024
"""Bytes of each ballast piece: small enough to fill the holes of a fragmented heap."""


def largest_block(limit):
    """The largest bytearray that can be allocated now (16-byte steps, at most `limit` bytes):
    the largest free block. A failed try collects garbage and retries before it fails, so the
    blocks of earlier tries do not count against later ones."""
    lo, hi = 0, limit // 16
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            bytearray(mid * 16)  # its bytes are one block; the object header is another
            lo = mid
        except MemoryError:
            hi = mid - 1
    return lo * 16


class Watch:
    """The heap checkpoints: prints each, keeps the lowest free figure, where it was, and the
    largest free block there."""

    def __init__(self, enabled=True):
        self.low = None
        self.where = None
        self.block = None
        self.enabled = enabled

    def check(self, where):
        """Collect, then record the free heap and the largest free block at `where` (nothing
        when disabled)."""
        if not self.enabled:
            return None
        gc.collect()
        free = gc.mem_free()
        block = largest_block(free)
        if self.low is None or free < self.low:
            self.low = free
            self.where = where
            self.block = block
        print("heap", where, free, block)
        return free


class Samples:
    """The agent's data source with a checkpoint at every draw."""

    def __init__(self, source, watch):
        self.source = source
        self.watch = watch
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.watch.check("sample%d" % self.n)
        self.n += 1
        return next(self.source)


class Broker:
    """An in-memory broker for one session: scripted inbox, publishes recorded by size."""

    def __init__(self, inbox, watch):
        self.inbox = inbox
        self.watch = watch
        self.published = []

    def factory(self, client_id, host, port, user, password, keepalive, ssl, ca_file=None):
        """make_transport's signature: the session's transport. A board's umqtt.simple transport
        is made too (importing umqtt.simple then, as make_transport does) and kept, unconnected,
        so its memory counts."""
        from device_agent.transport import UmqttTransport

        transport = Transport(self)
        transport.umqtt = UmqttTransport(client_id, host, port, user, password, keepalive)
        return transport


class Transport:
    """The agent's transport interface (device_agent.transport.Transport) over a Broker."""

    on_message = None
    on_oversized = None
    limits = None

    def __init__(self, broker):
        self.broker = broker
        self.umqtt = None

    def connect(self, will_topic, will_payload):
        pass

    def subscribe(self, topic):
        pass

    def unsubscribe(self, topic):
        pass

    def publish(self, topic, payload, retain=False, qos=1):
        kind = topic.split("/")[-1]
        self.broker.watch.check("publish-" + kind)
        self.broker.published.append((kind, len(payload)))

    def poll(self):
        if self.broker.inbox:
            topic, payload = self.broker.inbox.pop(0)
            self.on_message(topic, payload)

    def wait(self, timeout_ms):
        self.poll()

    def close(self):
        pass


def model_payload(n, version, values_name):
    """A MODEL payload of θ_g (n small values) as the service encodes it (`values_name`: f32,
    f16 or int8)."""
    from array import array

    from device_agent import codec

    values = array("f", bytes(4 * n))
    for i in range(n):
        values[i] = 0.05 * ((i % 7) - 3)
    enc = codec.value_encoding(values_name)
    return bytes(codec.encode(codec.KIND_MODEL, n, None, values, version, version, 0, enc))


def hold(ballast):
    """`ballast` bytes in BALLAST_CHUNK pieces, kept alive by the returned list."""
    pieces = [None] * (ballast // BALLAST_CHUNK)
    for i in range(len(pieces)):
        pieces[i] = bytearray(BALLAST_CHUNK)  # (and a 16-byte object header, not counted)
    return pieces


def main(use_case, command_json, model_values, ballast=0):
    """One full round of `use_case`'s default model with the service's command (JSON text) and
    θ_g encoded as `model_values`: with checkpoints, or (`ballast` > 0) with that many bytes
    held through it and none."""
    watch = Watch(not ballast)
    watch.check("boot")
    from device_agent import codec, run
    from device_agent.config import make_config

    watch.check("imported")
    cfg = make_config({"device_id": "heap-1", "use_case": use_case, "telemetry_every": 1})
    agent = run.build(cfg)
    command = json.loads(command_json)
    topic = agent.topics.command(agent.device_id)
    inbox = [
        (agent.topics.model, model_payload(agent.plan.n_global, command["version"], model_values)),
        (topic, bytes(codec.encode_command(command, command["version"], command["round"]))),
    ]
    broker = Broker(inbox, watch)
    agent.transport_factory = broker.factory
    agent.source = Samples(agent.source, watch)
    watch.check("built")
    try:
        held = hold(ballast)
        agent.connect()
        agent.serve(1)
        agent.goodbye()
    except MemoryError as exc:
        print("failed", repr(exc))
        return None
    print("published", " ".join("%s:%d" % p for p in broker.published), "held", len(held))
    print("done", watch.low, watch.where, watch.block)
    return watch.low
