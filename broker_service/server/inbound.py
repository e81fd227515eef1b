"""What the service reads from a device's JSON messages (status and telemetry), and how.

A device may send any bytes (brief section 2b), so a document is checked before it is parsed
and every number in it before it is used: its size (`limits.MAX_STATUS`,
`limits.MAX_TELEMETRY`), strict UTF-8, its nesting by a linear scan (`limits.MAX_JSON_DEPTH`:
thousands of `[` would exhaust the parser's stack with a RecursionError), then the parse, where
integers longer than 19 digits, NaN and ±Infinity are refused, then each known number's type and
range (finite, 0 to `limits.MAX_REPORTED`). A refusal raises `Rejected` with its reason.
"""

from __future__ import annotations

import json
import math
from typing import Any

from broker_service.observe.recorder import TELEMETRY_FIELDS
from broker_service.server.rounds import Rejected
from device_agent import limits, reasons

MAX_INT_DIGITS = 19
"""Digits of the longest integer literal accepted (int64 range): a 400-digit integer would
overflow float() where it is used."""

STATUS_NUMBERS = ("free_heap", "params", "global_params", "codec")
"""The integer capabilities of a status document (non-negative)."""
BATTERY_KEYS = ("mah", "volts", "usable")
"""A birth's `battery`: capacity (mAh), nominal voltage and usable fraction, each above 0."""
MAX_BATTERY = 1e9
"""The largest capacity or voltage a birth's `battery` may state (as a device's config)."""
MAX_NAME = 32
"""The longest `energy_profile` name read."""

OPEN = "[{"
CLOSE = "]}"


def json_depth(text: str, limit: int) -> int:
    """The nesting depth of arrays and objects in `text`, brackets inside strings ignored; the
    scan stops as soon as it passes `limit` (and returns limit + 1)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in CLOSE:
            depth -= 1
    return deepest


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise Rejected(reasons.BAD_NUMBER, "an integer of %d digits" % len(literal))
    return int(literal)


def _no_constant(name: str) -> Any:
    raise Rejected(reasons.BAD_NUMBER, name)


def read_json_object(payload: bytes, max_bytes: int, not_object: str) -> dict:
    """The JSON object in `payload`, checked as the module says; `not_object` is the reason
    for a document that is not a JSON object."""
    if len(payload) > max_bytes:
        raise Rejected(reasons.OVERSIZED, "%d bytes > %d" % (len(payload), max_bytes))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(not_object, "not UTF-8") from None
    if json_depth(text, limits.MAX_JSON_DEPTH) > limits.MAX_JSON_DEPTH:
        raise Rejected(reasons.TOO_DEEP, "deeper than %d" % limits.MAX_JSON_DEPTH)
    try:
        doc = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except ValueError as exc:
        raise Rejected(not_object, str(exc)[:80]) from None
    if not isinstance(doc, dict):
        raise Rejected(not_object, "a JSON %s, not an object" % type(doc).__name__)
    return doc


def reported_number(doc: dict, key: str, high: float = limits.MAX_REPORTED) -> float | None:
    """doc[key] as a float when present and not null; raises Rejected (bad_number) unless it is
    an int or float (not a bool), finite, and within [0, high]."""
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(reasons.BAD_NUMBER, "%s is a %s" % (key, type(value).__name__))
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= high):
        raise Rejected(reasons.BAD_NUMBER, "%s=%.3g is out of [0, %.3g]" % (key, number, high))
    return number


def reported_int(doc: dict, key: str, high: float = limits.MAX_REPORTED) -> int | None:
    """doc[key] as an int when present and not null; raises Rejected (bad_number) unless it is
    an integer within [0, high]."""
    value = doc.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise Rejected(reasons.BAD_NUMBER, "%s is not an integer" % key)
    number = reported_number(doc, key, high)
    return None if number is None else int(value)


def read_battery(doc: dict) -> None:
    """Check a birth's `energy_profile` (a short string) and `battery` (an object of
    BATTERY_KEYS, each a number above 0 and at most MAX_BATTERY, `usable` at most 1), when
    present and not null; raises Rejected (bad_json, bad_number) with the field at fault."""
    name = doc.get("energy_profile")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME):
        raise Rejected(reasons.BAD_JSON, "energy_profile is not a name")
    cell = doc.get("battery")
    if cell is None:
        return
    if not isinstance(cell, dict):
        raise Rejected(reasons.BAD_JSON, "battery is not an object")
    for key in BATTERY_KEYS:
        high = 1.0 if key == "usable" else MAX_BATTERY
        value = reported_number(cell, key, high)
        if not value:  # missing, or 0
            raise Rejected(reasons.BAD_NUMBER, "battery.%s must be a number above 0" % key)


def read_status(payload: bytes) -> dict:
    """A device's presence document; empty (a cleared retained message) is {} (offline).
    `state` must be a string; the integer capabilities, a sleeping device's `wake_s` and
    `sense_s` and a birth's battery (`read_battery`) are range-checked; `model_version` may also
    be -1 (no model yet)."""
    if not payload:
        return {}
    doc = read_json_object(payload, limits.MAX_STATUS, reasons.BAD_JSON)
    if not isinstance(doc.get("state", ""), str):
        raise Rejected(reasons.BAD_JSON, "state is not a string")
    for key in STATUS_NUMBERS:
        reported_int(doc, key)
    reported_number(doc, "wake_s")  # a sleeping device's announced sleep, in seconds
    reported_number(doc, "sense_s")  # ... and its sensor wakes' period
    read_battery(doc)
    if doc.get("model_version") != -1:
        reported_int(doc, "model_version", limits.MAX_ROUND)
    return doc


def read_telemetry(payload: bytes) -> dict:
    """The numbers the service uses from a telemetry document: `round` and `version` (ints up
    to limits.MAX_ROUND) and the recorded fields (floats), each only when present; anything else
    in the document is dropped."""
    doc = read_json_object(payload, limits.MAX_TELEMETRY, reasons.BAD_TELEMETRY)
    clean: dict[str, float | int] = {}
    for key in ("round", "version"):
        number = reported_int(doc, key, limits.MAX_ROUND)
        if number is not None:
            clean[key] = number
    for key in TELEMETRY_FIELDS:
        value = reported_number(doc, key)
        if value is not None:
            clean[key] = value
    return clean


TELEMETRY_KEPT = ("round", "energy_mj", "loss_after")
"""The numbers of a device's latest telemetry the service keeps once recorded: its round's
energy and loss are counted when the round closes."""


def kept_telemetry(doc: dict) -> dict:
    """The TELEMETRY_KEPT numbers of a document read by `read_telemetry`."""
    return {key: doc[key] for key in TELEMETRY_KEPT if key in doc}
