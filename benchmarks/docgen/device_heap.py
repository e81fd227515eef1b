"""The device agent's heap through a full round on the Cortex-M7 firmware (docs/device.md)."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, USE_CASES, Block

KERNEL_LABELS = {"micropython": "Python", "compiled": "compiled"}
ROOM = 32 * 1024
"""Bytes a round should leave free at its lowest point (room for TLS buffers)."""


def _kb(value: int | None) -> str:
    return NONE if value is None else "%.1f" % (value / 1024)


def _pair(free: int | None, block: int | None) -> str:
    return "%s / %s" % (_kb(free), _kb(block))


def _rows(part: dict) -> tuple[list[list[str]], list[str]]:
    """The table rows of one part of the heap figures, and what falls below ROOM."""
    rows, short = [], []
    for use_case in USE_CASES:
        for kernel, label in KERNEL_LABELS.items():
            f = part.get(kernel, {}).get(use_case)
            if f is None:
                continue
            stages, blocks = f["stages"], f["blocks"]
            rows.append(
                [
                    use_case,
                    label,
                    _kb(stages.get("boot")),
                    _kb(stages.get("imported")),
                    _pair(stages.get("built"), blocks.get("built")),
                    _pair(f["low"], f["low_block"]),
                    f["low_at"],
                ]
            )
            if f["low"] < ROOM:
                short.append("%s (%s kernels, %.1f KB)" % (use_case, label, f["low"] / 1024))
    return rows, short


def _verdict(short: list[str], what: str) -> str:
    if not short:
        return "Every default model keeps at least %d KB free %s with either kernel set." % (
            ROOM // 1024,
            what,
        )
    return "Below %d KB free at the lowest point %s: %s." % (ROOM // 1024, what, ", ".join(short))


def _boot_gap(heap: dict) -> float | None:
    """KB less free at boot in the wake probe than in the round probe (its stand-ins)."""
    try:
        round_boot = heap["kernels"]["micropython"]["kws"]["stages"]["boot"]
        wake_boot = heap["wake"]["micropython"]["kws"]["stages"]["boot"]
    except KeyError:
        return None
    return (round_boot - wake_boot) / 1024


HEADER = ["use case", "kernels", "boot", "imported", "built", "lowest", "where"]


def device_heap(doc: dict) -> str:
    """Each default model's free heap at boot, after the imports, once the agent is built and at
    the lowest point, with either kernel set, through a round and through a sleeping device's
    training wake, and whether each leaves ROOM free."""
    heap = doc.get("heap")
    if not heap:
        return "No heap figures in this results file (measured with `--no-heap`)."
    rows, short = _rows(heap["kernels"])
    out = [
        markdown_table(HEADER, rows),
        "\nKB free (1 KB = 1024 bytes) on the %s firmware (140 KB heap), each after a "
        "collection, with the largest free block after the slash: at boot, once the agent's "
        "modules are imported (with the compiled kernels, the module's machine code is then "
        "in the heap), once the agent is built, and the lowest over a full default round's "
        "checkpoints (every sample, every publish). %s"
        % (heap["board"], _verdict(short, "through a round")),
    ]
    if heap.get("wake"):
        rows, short = _rows(heap["wake"])
        gap = _boot_gap(heap)
        out += [
            "\nThrough a keyed sleeping device's training wake (`firmware heap --wake`: its "
            "flash state loaded, the retained work order verified, the model of the new version "
            "fetched, one round on the sample ring, the state written, the update published, "
            "the receipt read; the previous update, of the longest length the state keeps, "
            "left in flash):\n",
            markdown_table(HEADER, rows),
            "\n%s The wake probe's stand-ins, a filesystem in Python over RAM outside the heap "
            "and an in-memory broker, leave %s KB less free at boot than the round probe's; a "
            "board's filesystem driver is C, though its caches (0.5-3 KB) take heap too."
            % (_verdict(short, "through a training wake"), "?" if gap is None else "%.1f" % gap),
        ]
    return "\n".join(out)


BLOCKS = [
    Block(
        "device_heap",
        "The agent's heap on the Cortex-M7 firmware",
        ("device-cortexm.json",),
        device_heap,
    ),
]
