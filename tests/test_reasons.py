"""The rejection reasons and size limits are stated once (device_agent.reasons / limits)."""

import re
from pathlib import Path

from device_agent import limits, reasons

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "broker_service").rglob("*.py")) + sorted(
    (ROOT / "device_agent").glob("*.py")
)
BARE_REASON = re.compile(
    r"""(CodecError|Rejected|Refused)\(\s*["']|\breject\(\s*["'][a-z]+["'],\s*["']|reason=["']"""
)


def test_every_reason_is_listed_in_the_protocol_docs():
    text = (ROOT / "docs" / "protocol.md").read_text()
    missing = [r for r in reasons.REJECTIONS + reasons.ABORTS if r not in text]
    assert not missing, "docs/protocol.md does not list %s" % missing


def test_reasons_are_unique_snake_case():
    every = reasons.REJECTIONS + reasons.ABORTS
    assert len(set(every)) == len(every)
    assert all(re.fullmatch(r"[a-z_]+", r) for r in every)


def test_no_bare_string_reasons_in_the_code():
    found = []
    for path in SOURCES:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if BARE_REASON.search(line):
                found.append("%s:%d: %s" % (path.relative_to(ROOT), no, line.strip()))
    assert not found, "use device_agent.reasons constants:\n" + "\n".join(found)


def test_size_limits_are_not_written_as_numbers():
    literal = re.compile(
        r"\b(max_size|max_payload|MAX_PAYLOAD|MAX_COMMAND|MAX_SAMPLES)\s*(:\s*int\s*)?=\s*[0-9(]"
    )
    found = [
        "%s: %s" % (path.relative_to(ROOT), m.group(0))
        for path in SOURCES
        if path.name != "limits.py"
        for m in literal.finditer(path.read_text())
    ]
    assert not found, "size limits belong in device_agent/limits.py: %s" % found
    assert limits.MAX_COMMAND < limits.MAX_PAYLOAD
    assert limits.MAX_SAMPLES == 0xFFFF  # the header's unsigned 16-bit field
