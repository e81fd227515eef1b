# Downlink integrity without a broker: a keyed agent over the scripted fake transport refuses
# forged, unsigned, replayed (rollback), non-finite and out-of-range messages and keeps its state,
# and the bounded MQTT read skips an oversized message without holding it.
# Usage: micropython -X heapsize=256K tests/mpy/downlink_check.py [NAME...] (from the repository
# root): runs the named scenarios (default: all), each best in its own process (a fresh heap, as
# on a board), and prints one line a fact, identical under MicroPython and CPython.
# tests/test_downlink.py imports the scenarios to check them in detail on CPython.
import gc
import json
import sys
from array import array

sys.path.insert(0, ".")
if hasattr(gc, "threshold"):  # MicroPython: collect while compiling, as device_agent.run does
    gc.threshold(8192)
from device_agent import codec, limits  # noqa: E402
from device_agent.agent import Agent  # noqa: E402
from device_agent.auth import digest, sign, verify  # noqa: E402
from device_agent.config import make_config  # noqa: E402
from device_agent.datasource import SyntheticSource  # noqa: E402
from device_agent.topics import Topics  # noqa: E402
from device_agent.transport import BoundedReader, remaining_length  # noqa: E402
from tests.mpy.fake_transport import FakeBroker  # noqa: E402

if hasattr(gc, "threshold"):
    gc.threshold(-1)

DEVICE = "keyed-1"
TOPICS = Topics("tinymetafed", "test")
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
EPOCH = 1700000000
SETTINGS = {"recon_samples": 2, "adapt_samples": 3, "top_p": 50.0, "values": "f32", "seed": 1}

INF = "1e999"
"""A JSON number both runtimes read as infinity (NaN is not JSON; CPython's extension is tested
in tests/test_downlink.py)."""

BAD_FIELDS = (
    ("top_p", 0),
    ("top_p", 100.5),
    ("top_p", INF),
    ("top_p", "10"),
    ("adapt_samples", 1000000000),
    ("adapt_samples", -1),
    ("adapt_samples", limits.MAX_ROUND_SAMPLES + 1),
    ("adapt_samples", 2.5),
    ("recon_samples", True),
    ("recon_samples", 1e9),
    ("recon_lr", -0.05),
    ("recon_lr", 0),
    ("adapt_lr", INF),
    ("adapt_lr", limits.MAX_LEARNING_RATE * 2),
    ("adapt_lr", "0.01"),
    ("values", "f64"),
    ("local_init", "ones"),
    ("seed", -1),
    ("seed", limits.MAX_U32 + 1),
    ("seed", 1.5),
    ("split", 1),
    ("joint", "yes"),
    ("error_feedback", None),
    ("residual_decay", 0.9),
    ("residual_decay", INF),
    ("residual_decay", True),
    ("residual_max_away", 2),
    ("head_init", "closed_form"),
    ("head_ridge", 0.5),
    ("cancel", "true"),
    ("round", -1),
    ("version", limits.MAX_U32 + 1),
    ("epoch", -1),
)
"""One out-of-range or mistyped value for every field a round command may carry."""


def model_payload(n, version, scale=1.0):
    """A MODEL payload of n small values (scale changes them: another model, same version)."""
    values = array("f", bytes(4 * n))
    for i in range(n):
        values[i] = scale * 0.05 * ((i % 7) - 3)
    return bytes(codec.encode(codec.KIND_MODEL, n, None, values, version, version))


def nan_model(n, version):
    """A MODEL payload whose header and checksum are right but one value is NaN."""
    values = array("f", bytes(4 * n))
    values[n // 2] = float("nan")
    return bytes(codec.encode(codec.KIND_MODEL, n, None, values, version, version))


def command_payload(version, rnd, model, epoch=EPOCH, key=KEY, fields=None):
    """A round command as the service sends a keyed device: epoch, model digest, signed.
    key None: unsigned; model None: no digest; `fields` override any field."""
    cmd = {"round": rnd, "version": version}
    cmd.update(SETTINGS)
    if epoch is not None:
        cmd["epoch"] = epoch
    if model is not None:
        cmd["model_sha256"] = digest(model).hex()
    cmd.update(fields or {})
    text = json.dumps(cmd).replace('"%s"' % INF, INF)  # infinity as JSON text
    payload = bytearray(codec.HEADER_SIZE + len(text))
    payload[codec.HEADER_SIZE :] = text.encode()
    codec._finish(payload, codec.KIND_COMMAND, 0, 0, 0, version, rnd, 0, 0)
    payload = bytes(payload)
    return payload if key is None else sign(key, payload)


class Probe:
    """A keyed sine agent on a one-session fake broker, driven message by message."""

    def __init__(self, key=KEY):
        self.events = []
        self.broker = FakeBroker([{}])
        values = {"device_id": DEVICE, "fleet": "test", "use_case": "sine"}
        if key is not None:
            values["hmac_key"] = key.hex()
        self.agent = Agent(make_config(values), None, self.broker.factory, logger=self.log)
        self.agent.source = SyntheticSource(self.agent.plan, 1)
        self.agent.connect()
        self.n = self.agent.plan.n_global

    def log(self, event, **fields):
        self.events.append(event)  # names only: kept objects would fragment the small heap

    def model(self, payload):
        self.agent.on_message(TOPICS.model, payload)
        return self

    def command(self, payload):
        self.agent.on_message(TOPICS.command(DEVICE), payload)
        self.agent.run_pending()
        return self

    def updates(self):
        return [p for t, p, _, _ in self.broker.published if t == TOPICS.update(DEVICE)]

    def errors(self):
        """The `error` fields of the telemetry published (refused rounds)."""
        docs = [json.loads(p) for t, p, _, _ in self.broker.published if t.endswith("telemetry")]
        return [doc["error"] for doc in docs if "error" in doc]

    def summary(self, name):
        rejected = sorted("%s=%d" % kv for kv in self.agent.rejected.items())
        return "%s rounds %d version %d rejected %s errors %s" % (
            name,
            self.agent.rounds_done,
            self.agent.model_version(),
            " ".join(rejected) or "-",
            " ".join(self.errors()) or "-",
        )


def honest():
    """The service's model and signed command: the round runs and the update is signed."""
    p = Probe()
    model = model_payload(p.n, 1)
    p.model(model).command(command_payload(1, 1, model))
    return p


def forged_commands():
    """Signed with another key, unsigned, a tag cut short, a tag over changed bytes."""
    p = Probe()
    model = model_payload(p.n, 1)
    p.model(model)
    p.command(command_payload(1, 1, model, key=OTHER_KEY))
    p.command(command_payload(1, 1, model, key=None))
    p.command(command_payload(1, 1, model)[:-1])
    tampered = bytearray(command_payload(1, 1, model))
    tampered[40] ^= 1
    p.command(bytes(tampered))
    return p


def forged_model():
    """A model the broker forged (right version, other values): never trained on."""
    p = Probe()
    p.agent.fetch_ms = 0
    genuine = model_payload(p.n, 1)
    forged = model_payload(p.n, 1, scale=3.0)
    p.model(forged)  # held until a command names a model
    p.command(command_payload(1, 1, genuine))  # asks the broker again...
    p.model(forged)  # ...which still holds the forgery
    p.agent.run_pending()
    return p


def rollback():
    """After version 2 is verified: an older command and an older model are refused."""
    p = Probe()
    old = model_payload(p.n, 1)
    new = model_payload(p.n, 2)
    p.model(old).command(command_payload(1, 1, old))
    p.model(new).command(command_payload(2, 2, new))
    p.command(command_payload(1, 1, old))  # a replay of a genuine, older command
    p.model(old)  # a replay of the genuine, older model
    p.command(command_payload(2, 2, new, epoch=EPOCH - 1))  # from an older session
    return p


def new_session():
    """A newer service session restarts at version 0: its model is refused until its signed
    command arrives, then fetched again and trained on."""
    p = Probe()
    old = model_payload(p.n, 5)
    fresh = model_payload(p.n, 0, scale=2.0)  # made first: a round leaves the heap fragmented
    p.model(old).command(command_payload(5, 5, old))
    p.model(fresh)  # refused: older than version 5 of the running session
    p.command(command_payload(0, 0, fresh, epoch=EPOCH + 1))  # subscribes to the model again
    p.model(fresh)  # the broker re-sends the retained model
    p.agent.run_pending()
    return p


def bad_values():
    """A model with a NaN is refused on receipt; the previous model stays."""
    p = Probe()
    good = model_payload(p.n, 1)
    p.model(good).model(nan_model(p.n, 2))
    p.command(command_payload(1, 1, good))
    return p


def bad_fields(key=KEY):
    """Every out-of-range field refused (signed or not), then the honest command runs."""
    p = Probe(key)
    model = model_payload(p.n, 1)
    p.model(model)
    for field, value in BAD_FIELDS:
        p.command(command_payload(1, 1, model, key=key, fields={field: value}))
    p.command(command_payload(1, 1, model, key=key))
    return p


def unkeyed():
    """A device without a key accepts unsigned commands as before, and no signed one."""
    p = Probe(None)
    model = model_payload(p.n, 1)
    p.model(model).command(command_payload(1, 1, model, key=KEY))
    p.command(command_payload(1, 1, None, key=None, epoch=None))
    return p


SCENARIOS = (
    ("honest", honest),
    ("forged_commands", forged_commands),
    ("forged_model", forged_model),
    ("rollback", rollback),
    ("new_session", new_session),
    ("bad_values", bad_values),
    ("bad_fields", bad_fields),
    ("bad_fields_unkeyed", lambda: bad_fields(None)),
    ("unkeyed", unkeyed),
)


# -- the bounded MQTT read --


class StreamSock:
    """A blocking socket reading a script of parts: bytes, or an int n for n filler bytes made
    as they are read (a huge message that is never in memory). Records writes and reads."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.written = []
        self.largest_read = 0

    def setblocking(self, flag):
        pass

    def write(self, data):
        self.written.append(bytes(data))

    def read(self, n):
        self.largest_read = max(self.largest_read, n)
        out = bytearray()
        while len(out) < n and self.parts:
            part = self.parts[0]
            if isinstance(part, int):
                take = min(part, n - len(out))
                out.extend(bytes(take))
                part -= take
            else:
                take = min(len(part), n - len(out))
                out.extend(part[:take])
                part = part[take:]
            if part:
                self.parts[0] = part
            else:
                self.parts.pop(0)
        return bytes(out)


class FakeClient:
    """What the bounded read uses of a umqtt.simple client: its socket and callback."""

    def __init__(self, sock, cb):
        self.sock = sock
        self.cb = cb


class ReadProbe(BoundedReader):
    """The bounded read alone, over a StreamSock (no umqtt needed)."""

    def __init__(self, sock, limit):
        self.seen = []
        self.skipped = []
        BoundedReader.__init__(self, FakeClient(sock, lambda t, m: self.seen.append((t, len(m)))))
        self.limit_of = lambda topic: limit
        self.on_oversized = lambda topic, size: self.skipped.append((topic, size))


def publish_header(topic, size, qos=1):
    """The fixed header, topic and packet id of a PUBLISH whose payload has `size` bytes."""
    rest = 2 + len(topic) + (2 if qos else 0) + size
    head = bytes((0x30 | (qos << 1),)) + remaining_length(rest)
    head += bytes((len(topic) >> 8, len(topic) & 0xFF)) + topic
    return head + (b"\x00\x07" if qos else b"")


def bounded_read():
    """A 1 MB retained model, an over-long topic, then a small message: the first two skipped
    in DRAIN_CHUNK pieces and acknowledged, the third delivered."""
    big = 1 << 20
    long_topic = b"t" * (limits.MAX_TOPIC + 1)
    sock = StreamSock(
        [
            publish_header(TOPICS.model.encode(), big),
            big,
            publish_header(long_topic, 10, qos=0),
            10,
            publish_header(TOPICS.model.encode(), 100),
            100,
        ]
    )
    probe = ReadProbe(sock, 4096)
    ops = [probe.wait_msg() for _ in range(3)]
    return probe, sock, ops


def malformed_length():
    """A remaining length of five bytes is a broken broker: OSError, nothing allocated."""
    probe = ReadProbe(StreamSock([b"\x30\xff\xff\xff\xff\x7f"]), 4096)
    try:
        probe.wait_msg()
    except OSError as exc:
        return "malformed_length OSError %s" % (exc.args[0],)
    return "malformed_length accepted"


def signed_update():
    """The honest round's update carries the device's tag."""
    (update,) = honest().updates()
    payload = verify(KEY, update)
    return "signed_update round %s" % (payload is not None and codec.decode(payload)[0].round)


def bounded():
    """The bounded read's facts."""
    probe, sock, ops = bounded_read()
    return "bounded seen %s skipped %s ops %s largest read %d acks %d" % (
        probe.seen,
        probe.skipped,
        ops,
        sock.largest_read,
        len(sock.written),
    )


CHECKS = (("signed_update", signed_update), ("bounded", bounded), ("malformed", malformed_length))


def names():
    """Every scenario and check, in order."""
    return [name for name, _ in SCENARIOS + CHECKS]


def run(name):
    """The line of one scenario or check."""
    for known, scenario in SCENARIOS:
        if known == name:
            return scenario().summary(name)
    for known, check in CHECKS:
        if known == name:
            return check()
    return "%s unknown" % name


if __name__ == "__main__":
    for wanted in sys.argv[1:] or names():
        print(run(wanted))
        gc.collect()
