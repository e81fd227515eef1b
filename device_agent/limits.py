"""Every size limit of the protocol, stated once. Importable on MicroPython.

A receiver refuses a payload over its limit (reason `oversized`) before it decodes anything.
"""

MAX_PAYLOAD = 1 << 20
"""Largest MODEL or DELTA payload (bytes) a decoder accepts unless told a smaller limit."""

MAX_COMMAND = 4096
"""Largest COMMAND payload (bytes): a JSON object of round settings."""

MAX_SAMPLES = 0xFFFF
"""Largest sample count a DELTA header carries (an unsigned 16-bit field)."""
