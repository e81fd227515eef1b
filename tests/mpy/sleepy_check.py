# A sleeping device's flash files: the state (device_agent.state) and the sensor ring
# (device_agent.ring), encoded, decoded, corrupted, and replaced atomically.
# Usage: micropython tests/mpy/sleepy_check.py FOLDER  (from the repository root; FOLDER is
# an empty folder for the files); prints one line a fact, identical under MicroPython and
# CPython (tests/test_sleepy_state.py compares them).
import gc
import os
import sys
from array import array

sys.path.insert(0, ".")
from device_agent import codec, state  # noqa: E402
from device_agent.checksum import crc32  # noqa: E402
from device_agent.model import Plan  # noqa: E402
from device_agent.ring import Ring  # noqa: E402
from device_agent.specs import spec_for  # noqa: E402
from device_agent.validate import Refused  # noqa: E402

FOLDER = sys.argv[1]


def path(name):
    return FOLDER + "/" + name


def example(plan, version):
    """A state as a device holds it after training on `version`."""
    st = state.State()
    values = array("f", bytes(4 * plan.n_global))
    for i in range(plan.n_global):
        values[i] = 0.01 * ((i * 7 + version) % 23 - 11)
    st.model = bytes(codec.encode(codec.KIND_MODEL, plan.n_global, None, values, version, version))
    st.residual = array("f", bytes(4 * plan.n_global))
    for i in range(plan.n_global):
        st.residual[i] = 0.001 * (i % 17) - 0.005
    st.residual_round = version
    st.newest = (1700000000, version, version)
    st.last_trained = version
    k = plan.n_global // 10
    idx = list(range(0, 10 * k, 10))
    delta = bytes(codec.encode(codec.KIND_DELTA, plan.n_global, idx, values[:k], version, version))
    st.update = delta + bytes(32)  # and a tag
    st.update_version = version
    st.ring_seen = 30
    st.wakes = 4
    st.reported_wakes = 3
    st.reported_sensor = 30
    return st


def describe(st):
    h = st.header
    return "model=%s residual=%s/%s newest=%s trained=%s update=%s/%s counts=%d,%d,%d,%d" % (
        None if h is None else h.model_version,
        None if st.residual is None else "%.4f" % st.residual[7],
        st.residual_round,
        st.newest,
        st.last_trained,
        None if st.update is None else len(st.update),
        st.update_version,
        st.ring_seen,
        st.wakes,
        st.reported_wakes,
        st.reported_sensor,
    )


CORRUPTIONS = (
    "truncated",
    "longer",
    "header bit",
    "model bit",
    "residual bit",
    "update bit",
    "magic",
    "format",
    "empty",
)


def corrupt(data, what, model_len):
    """A state file's bytes spoilt one way (one copy at a time: a 256 KB heap)."""
    if what == "truncated":
        return data[:-1]
    if what == "longer":
        return data + b"\x00"
    if what == "header bit":
        return flip(data, 9)
    if what == "model bit":
        return flip(data, state.HEADER_SIZE + 40)
    if what == "residual bit":
        return flip(data, state.HEADER_SIZE + model_len + 8)
    if what == "update bit":
        return flip(data, len(data) - 20)
    if what == "magic":
        return b"XX" + data[2:]
    if what == "format":
        return data[:2] + b"\x09" + data[3:]
    return b""


def refusal(data, plan):
    try:
        state.decode(data, plan, 65536)
    except Refused as exc:
        return exc.reason
    return "accepted"


def flip(data, pos):
    out = bytearray(data)
    out[pos] ^= 0x40
    return bytes(out)


for use_case in ("sine", "kws"):
    plan = Plan(spec_for(use_case))
    st = example(plan, 3)
    data = state.encode(st)
    print(use_case, "state bytes", len(data), "crc %08x" % crc32(data))
    print(use_case, "decoded", describe(state.decode(data, plan, 65536)))
    fresh = state.encode(state.State())
    print(use_case, "fresh bytes", len(fresh), describe(state.decode(fresh, plan, 65536)))
    model_at = state.HEADER_SIZE + 40
    residual_at = state.HEADER_SIZE + len(st.model) + 8
    for what in CORRUPTIONS:
        print(use_case, what, refusal(corrupt(data, what, len(st.model)), plan))
        gc.collect()

# atomic replacement: a save is a temporary file renamed over the old one
plan = Plan(spec_for("sine"))
main = path("state.bin")
print("load missing", state.load(main, plan, 65536)[1])
state.save(main, example(plan, 1))
st, why = state.load(main, plan, 65536)
print("load saved", why, describe(st))
state.save(main, example(plan, 2))
print("load replaced", describe(state.load(main, plan, 65536)[0]))
# a reboot while the temporary file was written: the old state stands, the torn file goes
with open(main + state.TMP_SUFFIX, "wb") as f:
    f.write(state.encode(example(plan, 3))[:100])
st, why = state.load(main, plan, 65536)
print("torn tmp", why, describe(st), "tmp left", state._exists(main + state.TMP_SUFFIX))
# a FAT volume's rename removes the old file first: a reboot then leaves the complete tmp
with open(main + state.TMP_SUFFIX, "wb") as f:
    f.write(state.encode(example(plan, 4)))
os.remove(main)
st, why = state.load(main, plan, 65536)
print("tmp only", why, describe(st), "renamed", state._exists(main))
# a corrupted file reads as a fresh device, the reason given
with open(main, "rb") as f:
    data = f.read()
with open(main, "wb") as f:
    f.write(flip(data, len(data) - 3))
st, why = state.load(main, plan, 65536)
print("corrupted", why, describe(st))

# the ring: fixed-size records, wrapping, read oldest first, a bad header starts afresh
for use_case in ("sine", "kws"):
    plan = Plan(spec_for(use_case))
    name = path("ring-%s.bin" % use_case)
    n_in = plan.layers[0].size_in()
    x = array("f", bytes(4 * n_in))
    for k in range(7):
        ring = Ring(name, plan, 4)
        for i in range(n_in):
            x[i] = 0.5 * k + 0.001 * i
        target = k % plan.output_size if plan.loss != "mse" else [0.25 * k]
        ring.append(None if k == 5 else x, None if k == 5 else target)  # wake 6 failed
    ring = Ring(name, plan, 4)
    print(use_case, "ring", ring.appended, ring.wakes, os.stat(name)[6])
    for seen in (0, 4, 6, 9):
        reader = ring.samples(seen)
        got = []
        for xs, y in reader:
            got.append("%.3f:%s" % (xs[n_in - 1], y if plan.loss != "mse" else "%.2f" % y[0]))
        reader.close()
        print(use_case, "since", seen, ring.available(seen), got)
    print(use_case, "other capacity", Ring(name, plan, 5).reset)
    with open(name, "r+b") as f:
        f.seek(12)
        f.write(b"\xff")
    ring = Ring(name, plan, 4)
    print(use_case, "bad header", ring.reset, ring.available(0))
    ring.append(x, target)
    print(use_case, "after reset", Ring(name, plan, 4).appended, os.stat(name)[6])
