"""The agent's heap through one training wake as a sleeping board runs it (a MicroPython script).

`python -m broker_service.tools.firmware heap --wake` puts this module (and heap_probe, whose
checkpoints it uses) into the ROMFS image beside the agent, with each use case's retained model
and work orders as the service encodes them (`wake/<use case>/model.bin`, `order.bin`: version
2, `async`, `want`, the receipt of the device's version-1 update; `receipt.bin`: the same order
once the service journalled the device's version-2 update), and calls `main` on the Cortex-M
firmware. The path is a board's training wake (device_agent.wake.training_wake): import
`device_agent.wake`, build the WakeAgent (its flash state loaded, its sample ring opened), then
`run_wake()`: connect, receive the retained work order, drop the receipted update, fetch the
model, train once on the ring's samples, write the state, publish the update, receive the
receipt, send the telemetry and the asleep status, disconnect. Only the broker is replaced, by
an in-memory one that sends a topic's retained message when it is subscribed to.

Flash. The firmware's only filesystem is the read-only ROMFS, so `Flash` is a small writable
filesystem whose files live in the board's external RAM (PSRAM at FLASH_BASE, beside the ROMFS
partition), reached through `uctypes.bytearray_at`: file contents are outside the heap, as a
board's flash is; what the heap holds of it is what a filesystem driver holds (its file table,
the open file objects). A board's littlefs keeps its caches in the heap too (about 3 x its block
cache, 0.5-1.5 KB); they are not counted here.

Before the measured wake, as the wakes before it would have, the probe writes the device's flash
state (the model of version 1, the residual, the rollback floor, an unacknowledged version-1
update of the longest length the state keeps, which the wake leaves in flash: device_agent.state
reads it only to re-send it) and fills the ring with the samples the round
needs (device_agent.ring, from the synthetic source); that code and its garbage are gone by the
`imported` checkpoint. Checkpoints and output lines are heap_probe's: boot, imported, built
(the WakeAgent made: state and ring loaded), every sample, every publish; then
`done <lowest free> <where> <largest free block there>` or `failed <exception>`.
"""

import gc
import os

import uctypes
from heap_probe import Watch

FLASH_BASE = 0x60000000
"""The RAM the files live in: MPS2_AN500's PSRAM, below the ROMFS partition (0x60C00000)."""
SLOT = 0x100000
"""Bytes a file can hold (each file has its own slot)."""
SLOTS = 8


class Flash:
    """A writable filesystem (MicroPython's VFS protocol) with its files in RAM outside the heap:
    a file is a slot of SLOT bytes and a length."""

    def __init__(self, base=FLASH_BASE, slots=SLOTS):
        self.base = base
        self.free = list(range(slots))
        self.files = {}  # name: [slot, length]

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def chdir(self, path):
        pass

    def getcwd(self):
        return "/"

    def ilistdir(self, path):
        for name in self.files:
            yield (name, 0x8000, 0)

    def stat(self, path):
        entry = self.files.get(path.strip("/"))
        if entry is None:
            raise OSError(2)
        return (0x8000, 0, 0, 0, 0, 0, entry[1], 0, 0, 0)

    def remove(self, path):
        entry = self.files.pop(path.strip("/"), None)
        if entry is None:
            raise OSError(2)
        self.free.append(entry[0])

    def rename(self, old, new):
        entry = self.files.pop(old.strip("/"), None)
        if entry is None:
            raise OSError(2)
        new = new.strip("/")
        if new in self.files:
            self.free.append(self.files[new][0])
        self.files[new] = entry

    def open(self, path, mode):
        name = path.strip("/")
        entry = self.files.get(name)
        if "w" in mode:
            if entry is None:
                entry = [self.free.pop(), 0]
                self.files[name] = entry
            entry[1] = 0
        elif entry is None:
            raise OSError(2)
        return File(uctypes.bytearray_at(self.base + SLOT * entry[0], SLOT), entry)


class File:
    """An open file of Flash: read, readinto, write, seek, close."""

    def __init__(self, mem, entry):
        self.mem = memoryview(mem)
        self.entry = entry
        self.pos = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.mem = None

    def seek(self, offset, whence=0):
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.entry[1]
        self.pos = offset
        return offset

    def read(self, n=-1):
        end = self.entry[1] if n < 0 else min(self.entry[1], self.pos + n)
        data = bytes(self.mem[self.pos : end]) if end > self.pos else b""
        self.pos += len(data)
        return data

    def readinto(self, buf):
        n = max(0, min(len(bytes_of(buf)), self.entry[1] - self.pos))
        bytes_of(buf)[:n] = self.mem[self.pos : self.pos + n]
        self.pos += n
        return n

    def write(self, buf):
        data = bytes_of(buf)
        n = len(data)
        self.mem[self.pos : self.pos + n] = data
        self.pos += n
        if self.pos > self.entry[1]:
            self.entry[1] = self.pos
        return n


def bytes_of(buf):
    """A bytes view of a buffer (an array('f') included), without copying it."""
    if isinstance(buf, (bytes, bytearray)):
        return buf
    return uctypes.bytearray_at(uctypes.addressof(buf), len(buf) * _itemsize(buf))


def _itemsize(buf):
    return 4 if type(buf).__name__ == "array" else 1


class Samples:
    """The ring's reader with a checkpoint at every draw (close() closes the reader)."""

    def __init__(self, reader, watch):
        self.reader = reader
        self.watch = watch
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.watch.check("sample%d" % self.n)
        self.n += 1
        return next(self.reader)

    def close(self):
        self.reader.close()


class Broker:
    """An in-memory broker for one wake: retained messages sent on subscription (read from the
    image then, as a network read would be), the receipt's order sent once the update is
    published; publishes recorded by size."""

    def __init__(self, retained, receipt, watch):
        self.retained = retained  # {topic: image file}
        self.receipt = receipt  # (topic, image file) sent after the update
        self.watch = watch
        self.inbox = []
        self.published = []

    def factory(self, client_id, host, port, user, password, keepalive, ssl, ca_file=None):
        """make_transport's signature (heap_probe.Broker.factory: umqtt.simple's client too)."""
        from device_agent.transport import UmqttTransport

        transport = Transport(self)
        transport.umqtt = UmqttTransport(client_id, host, port, user, password, keepalive)
        return transport

    def deliver(self, topic, path):
        with open(path, "rb") as f:
            self.inbox.append((topic, f.read()))


class Transport:
    """The agent's transport interface over a wake's Broker."""

    on_message = None
    on_oversized = None
    limits = None

    def __init__(self, broker):
        self.broker = broker
        self.umqtt = None

    def connect(self, will_topic, will_payload):
        pass

    def subscribe(self, topic):
        path = self.broker.retained.get(topic)
        if path is not None:
            self.broker.deliver(topic, path)

    def unsubscribe(self, topic):
        pass

    def publish(self, topic, payload, retain=False, qos=1):
        kind = topic.split("/")[-1]
        self.broker.watch.check("publish-" + kind)
        self.broker.published.append((kind, len(payload)))
        if kind == "update" and self.broker.receipt is not None:
            self.broker.deliver(*self.broker.receipt)

    def poll(self):
        if self.broker.inbox:
            topic, payload = self.broker.inbox.pop(0)
            self.on_message(topic, payload)

    def wait(self, timeout_ms):
        self.poll()

    def close(self):
        pass


def prepare(cfg, folder, need, keyed_epoch):
    """The flash as the wakes before this one left it: the state (model version 1, residual,
    rollback floor when keyed, the unacknowledged version-1 update) and `need` samples in the
    ring."""
    from device_agent import codec
    from device_agent import state as flash
    from device_agent.datasource import SyntheticSource
    from device_agent.model import Plan
    from device_agent.ring import Ring
    from device_agent.specs import spec_for

    plan = Plan(spec_for(cfg["use_case"]))
    sleep = cfg["sleep"]
    ring = Ring(sleep["ring_file"], plan, sleep["ring"])
    source = SyntheticSource(plan, 1)
    for _ in range(need):
        x, y = next(source)
        ring.append(x, y)
    st = flash.State()
    with open(folder + "model1.bin", "rb") as f:
        st.model = f.read()
    st.residual = codec.zeros(plan.n_global)
    st.residual_round = 1
    st.last_trained = 1
    st.update = bytes(flash.update_limit(plan))
    st.update_version = 1
    st.wakes = 1
    if keyed_epoch is not None:
        st.newest = (keyed_epoch, 1, 1)
    flash.save(sleep["state"], st)


def main(use_case, need, ring, hmac_key=None, epoch=None):
    """One training wake of `use_case`'s default model (the round streams `need` samples; the
    ring keeps `ring`); with `hmac_key` (hex) a keyed device whose service signs with `epoch`."""
    fs = Flash()
    os.mount(fs, "/flash")
    os.chdir("/flash")
    watch = Watch()
    watch.check("boot")
    import device_agent.wake  # noqa: F401 - the wake program's imports and its gc threshold
    from device_agent.config import make_config

    folder = "/rom/wake/%s/" % use_case
    orders = folder if hmac_key is not None else folder + "plain-"
    values = {"device_id": "heap-1", "use_case": use_case, "telemetry_every": 1}
    values["sleep"] = {"ring": ring, "order_ms": 2000, "receipt_ms": 2000}
    if hmac_key is not None:
        values["hmac_key"] = hmac_key
    cfg = make_config(values)
    prepare(cfg, folder, need, epoch)
    values = None
    from device_agent.sleepy import WakeAgent

    watch.check("imported")
    broker = Broker({}, None, watch)
    try:
        agent = WakeAgent(cfg, transport_factory=broker.factory)
        topic = agent.topics.command(agent.device_id)
        broker.retained = {topic: orders + "order.bin", agent.topics.model: folder + "model.bin"}
        broker.receipt = (topic, orders + "receipt.bin")
        topic = None
        if hasattr(gc, "threshold"):
            gc.threshold(-1)  # as wake.training_wake: collected only when the heap is full
        samples = agent.ring.samples

        def watched(seen):
            return Samples(samples(seen), watch)

        agent.ring.samples = watched
        watch.check("built")
        status = agent.run_wake()
    except MemoryError as exc:
        print("failed", repr(exc))
        return None
    print("published", " ".join("%s:%d" % p for p in broker.published), "status", status)
    print("done", watch.low, watch.where, watch.block)
    return watch.low
