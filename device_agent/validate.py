"""Which incoming MODEL and COMMAND messages an agent accepts, and why it refuses the others.

Pure checks with no state and no broker, so every refusal is easy to test: each returns what it
accepted or raises `Refused` with a reason from device_agent.reasons and a detail for the log.
What the agent then does with an accepted message (a redelivered model, a cancel, a newer model
aborting a round) is the agent's state, not a check.

A device with a key (`hmac_key`) also requires the service's signature on every command, and a
command's order (session epoch, model version, round) at least the newest it verified; the model
it trains on must have the SHA-256 digest that the verified command names (docs/security.md).
"""

from device_agent import auth, codec, limits, reasons
from device_agent.round import LOCAL_INITS, global_size

COMMAND_KEYS = ("round", "version")
"""The integer fields every command carries."""

FLAGS = ("split", "joint", "error_feedback", "cancel", "async", "want")
"""Command fields that are JSON booleans (`async` and `want`: an asynchronous session's work
order, docs/protocol.md "Asynchronous sessions")."""

COUNTS = ("recon_samples", "adapt_samples")
"""Command fields that are sample counts: integers in [0, limits.MAX_ROUND_SAMPLES]."""

RATES = ("recon_lr", "adapt_lr")
"""Command fields that are learning rates: numbers in (0, limits.MAX_LEARNING_RATE]."""

IDS = ("round", "version", "seed", "epoch", "receipt")
"""Command fields that are unsigned 32-bit integers (`receipt`: the newest model version for
which the service journalled this device's update, in a work order)."""

RETIRED = (
    ("residual_decay", 1),
    ("residual_max_away", 0),
    ("head_init", "sgd"),
    ("head_ridge", 1),
)
"""Command fields no longer supported, each with the only value still accepted (its old
default, which a round ignores): an older service may still send them."""

CHOICES = (
    ("values", codec.VALUE_NAMES),
    ("local_init", LOCAL_INITS),
    ("receipt_reason", reasons.REJECTIONS),
)
"""Command fields that name one of a few known strings."""

DIGEST_KEY = "model_sha256"
"""The signed command's field naming its model: the hex SHA-256 of the MODEL payload."""

EPOCH_KEY = "epoch"
"""The signed command's field naming the service's session (a larger one is a newer session)."""


class Refused(Exception):
    """A message the agent does not accept: `reason` (device_agent.reasons) and a log `detail`."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _refused(exc):
    return Refused(exc.reason, str(exc))


def model_limit(plan, max_bytes):
    """The largest MODEL payload worth reading: a dense float32 vector of every parameter, or
    `max_bytes` (the board's own cap) when that is smaller. Anything longer is oversized."""
    return min(max_bytes, codec.HEADER_SIZE + 4 * plan.n_params)


def check_model(payload, plan, max_bytes):
    """The header of a MODEL payload (every value, dense) of θ_g or of all of `plan`'s parameters.

    The header, the checksum and every value (finite, a usable int8 scale) are checked here, on
    receipt; the values are decoded into the parameter array when a round starts, from the
    payload as received.
    """
    try:
        h = codec.decode_header(payload, max_bytes)
    except codec.CodecError as exc:
        raise _refused(exc) from None
    if h.kind != codec.KIND_MODEL or h.index_enc != codec.INDEX_ALL:
        raise Refused(reasons.BAD_KIND)
    if h.n not in (plan.n_global, plan.n_params):
        raise Refused(reasons.SHAPE_MISMATCH, "n=%d" % h.n)
    try:
        codec.check_values(payload, h, codec.HEADER_SIZE)
    except codec.CodecError as exc:
        raise _refused(exc) from None
    return h


def check_signature(message, key):
    """The command payload of `message`: as is without a key, else with its tag checked and cut.

    UNSIGNED: the message is exactly as long as its header says (no tag); BAD_SIGNATURE: the
    trailing tag is not the HMAC of the rest under `key`. Runs before any JSON is parsed.
    """
    if key is None:
        return message
    if codec.declared_size(message) == len(message):
        raise Refused(reasons.UNSIGNED, "%d bytes without a tag" % len(message))
    payload = auth.verify(key, message)
    if payload is None:
        raise Refused(reasons.BAD_SIGNATURE)
    return payload


def check_command(payload):
    """The settings dict of a COMMAND payload: integer round and version, every known field of
    the right type and in range (check_settings)."""
    try:
        _, cmd = codec.decode_command(payload)
    except codec.CodecError as exc:
        raise _refused(exc) from None
    for key in COMMAND_KEYS:
        if not isinstance(cmd.get(key), int):
            raise _refused(codec.CodecError(reasons.BAD_COMMAND, "missing integer %r" % key))
    check_settings(cmd)
    return cmd


def _setting(key, value):
    return Refused(reasons.BAD_SETTING, "%s=%r" % (key, value))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_settings(cmd):
    """Refuse (BAD_SETTING) a command whose known fields have the wrong type or range.

    Booleans are JSON booleans; sample counts integers in [0, MAX_ROUND_SAMPLES]; learning rates
    numbers in (0, MAX_LEARNING_RATE]; top_p in (0, 100]; round, version, seed, epoch and
    receipt integers in [0, MAX_U32]; values and local_init one of the known names,
    receipt_reason one of reasons.REJECTIONS; a RETIRED field only at its old default. A NaN or
    an infinity fails every range. Unknown fields are ignored (a newer service may send more).
    """
    for key in FLAGS:
        if key in cmd and not isinstance(cmd[key], bool):
            raise _setting(key, cmd[key])
    for key in COUNTS:
        value = cmd.get(key, 0)
        if not (_is_int(value) and 0 <= value <= limits.MAX_ROUND_SAMPLES):
            raise _setting(key, value)
    for key in RATES:
        value = cmd.get(key, 1)
        if not (_is_number(value) and 0 < value <= limits.MAX_LEARNING_RATE):
            raise _setting(key, value)
    value = cmd.get("top_p", 100)
    if not (_is_number(value) and 0 < value <= 100):
        raise _setting("top_p", value)
    for key, old in RETIRED:
        if key in cmd and (cmd[key] != old or isinstance(cmd[key], bool)):
            raise _setting(key, cmd[key])
    for key in IDS:
        value = cmd.get(key, 0)
        if not (_is_int(value) and 0 <= value <= limits.MAX_U32):
            raise _setting(key, value)
    for key, names in CHOICES:
        if key in cmd and cmd[key] not in names:
            raise _setting(key, cmd[key])


def check_signed_fields(cmd):
    """The model digest (32 bytes; None for a cancel) a verified command names.

    A signed command carries its session `epoch`, and a round command the hex SHA-256 of its
    model (`model_sha256`); without them it is refused as BAD_COMMAND.
    """
    if EPOCH_KEY not in cmd:
        raise Refused(reasons.BAD_COMMAND, "a signed command needs %r" % EPOCH_KEY)
    if cmd.get("cancel"):
        return None
    text = cmd.get(DIGEST_KEY)
    if not isinstance(text, str) or len(text) != 2 * auth.DIGEST_SIZE:
        raise Refused(reasons.BAD_COMMAND, "a signed command needs %r" % DIGEST_KEY)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _setting(DIGEST_KEY, text) from None


def command_order(cmd):
    """(epoch, version, round) of a signed command: the order in which the service sent it."""
    return (cmd[EPOCH_KEY], cmd["version"], cmd["round"])


def check_fresh(order, newest):
    """Refuse (ROLLBACK) a command ordered before `newest`, the newest one verified (or None)."""
    if newest is not None and order < newest:
        raise Refused(reasons.ROLLBACK, "%s < %s" % (order, newest))


def check_model_fresh(header, newest):
    """Refuse (ROLLBACK) a model older than the version of `newest`, the newest command verified
    (None: nothing verified yet). A model of a newer session is refused too until its command
    arrives; the agent then asks the broker for the retained model again."""
    if newest is not None and header.model_version < newest[1]:
        raise Refused(reasons.ROLLBACK, "version %d < %d" % (header.model_version, newest[1]))


def check_digest(want, have):
    """Refuse (BAD_DIGEST) a model whose SHA-256 `have` is not the digest `want` a verified
    command names."""
    if not auth.same_bytes(want, have):
        raise Refused(reasons.BAD_DIGEST)


def check_round(cmd, settings, header, plan):
    """Refuse a round the held model (`header`, None when none) cannot serve.

    STALE_VERSION: no model, or another version than the command's. SHAPE_MISMATCH: the model's
    length is not the round's θ_g (`settings["split"]` decides whether θ_l is part of it).
    """
    if header is None or header.model_version != cmd["version"]:
        have = None if header is None else header.model_version
        raise Refused(reasons.STALE_VERSION, "want %s have %s" % (cmd["version"], have))
    if header.n != global_size(plan, bool(settings["split"])):
        raise Refused(reasons.SHAPE_MISMATCH)
