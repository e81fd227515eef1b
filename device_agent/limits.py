"""Every size limit of the protocol, stated once. Importable on MicroPython.

A receiver refuses a payload over its limit (reason `oversized`) before it decodes anything.
"""

MAX_PAYLOAD = 1 << 20
"""Largest MODEL or DELTA payload (bytes) a decoder accepts unless told a smaller limit."""

MAX_COMMAND = 4096
"""Largest COMMAND payload (bytes): a JSON object of round settings."""

MAX_SAMPLES = 0xFFFF
"""Largest sample count a DELTA header carries (an unsigned 16-bit field)."""

MAX_TOPIC = 256
"""Longest topic (bytes) a device reads from its broker; the fleet's topics are far shorter."""

DRAIN_CHUNK = 512
"""Bytes a device reads at a time when it skips a message over its limit (never the whole)."""

MAX_ROUND_SAMPLES = 10000
"""Largest `recon_samples` or `adapt_samples` a round command may ask a device to stream."""

MAX_LEARNING_RATE = 10.0
"""Largest `recon_lr` or `adapt_lr` a round command may set (rates must also be above 0)."""

MAX_U32 = 0xFFFFFFFF
"""Largest round, model version, seed and session epoch: the header's unsigned 32-bit fields."""
MAX_STATUS = 2048
"""Largest status (presence) JSON document (bytes) the service reads; a birth is ~400 bytes."""

MAX_TELEMETRY = 8192
"""Largest telemetry JSON document (bytes) the service reads; a round's is ~500 bytes plus the
agent's rejection counts."""

MAX_JSON_DEPTH = 8
"""Deepest nesting of arrays and objects in a JSON document from a device (the agent's are 2
deep). Deeper is refused by a scan before parsing: thousands of `[` exhaust a recursive
parser's stack (RecursionError, not ValueError)."""

MAX_ROUND = 0xFFFFFFFF
"""Largest round or model version (the header's unsigned 32-bit fields)."""

MAX_REPORTED = 1e15
"""Largest number a device may report in a status or telemetry field (counts, bytes, ms, mJ,
losses); larger, negative or non-finite values are refused before use."""
