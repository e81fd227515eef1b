"""Which incoming MODEL and COMMAND messages an agent accepts, and why it refuses the others.

Pure checks with no state and no broker, so every refusal is easy to test: each returns what it
accepted or raises `Refused` with a reason from device_agent.reasons and a detail for the log.
What the agent then does with an accepted message (a redelivered model, a cancel, a newer model
aborting a round) is the agent's state, not a check.
"""

from device_agent import codec, reasons
from device_agent.round import global_size

COMMAND_KEYS = ("round", "version")
"""The integer fields every command carries."""


class Refused(Exception):
    """A message the agent does not accept: `reason` (device_agent.reasons) and a log `detail`."""

    def __init__(self, reason, detail=""):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _refused(exc):
    return Refused(exc.reason, str(exc))


def check_model(payload, plan, max_bytes):
    """The header of a MODEL payload (every value, dense) of θ_g or of all of `plan`'s parameters.

    Only the header and the checksum are read here; the values are decoded into the parameter
    array when a round starts, from the payload as received.
    """
    try:
        h = codec.decode_header(payload, max_bytes)
    except codec.CodecError as exc:
        raise _refused(exc) from None
    if h.kind != codec.KIND_MODEL or h.index_enc != codec.INDEX_ALL:
        raise Refused(reasons.BAD_KIND)
    if h.n not in (plan.n_global, plan.n_params):
        raise Refused(reasons.SHAPE_MISMATCH, "n=%d" % h.n)
    return h


def check_command(payload):
    """The settings dict of a COMMAND payload whose round and version are integers."""
    try:
        _, cmd = codec.decode_command(payload)
    except codec.CodecError as exc:
        raise _refused(exc) from None
    for key in COMMAND_KEYS:
        if not isinstance(cmd.get(key), int):
            raise _refused(codec.CodecError(reasons.BAD_COMMAND, "missing integer %r" % key))
    return cmd


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
