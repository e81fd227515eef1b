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


def device_heap(doc: dict) -> str:
    """Each default model's free heap at boot, after the imports, once the agent is built and at
    the round's lowest point, with either kernel set, and whether the round leaves ROOM free."""
    heap = doc.get("heap")
    if not heap:
        return "No heap figures in this results file (measured with `--no-heap`)."
    rows = []
    short = []
    for use_case in USE_CASES:
        for kernel, label in KERNEL_LABELS.items():
            f = heap["kernels"].get(kernel, {}).get(use_case)
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
                short.append("%s (%s kernels)" % (use_case, label))
    header = ["use case", "kernels", "boot", "imported", "built", "lowest", "where"]
    verdict = (
        "Every default model keeps at least %d KB free with either kernel set." % (ROOM // 1024)
        if not short
        else "Below %d KB free at the lowest point: %s." % (ROOM // 1024, ", ".join(short))
    )
    return "\n".join(
        [
            markdown_table(header, rows),
            "\nKB free (1 KB = 1024 bytes) on the %s firmware (140 KB heap), each after a "
            "collection, with the largest free block after the slash: at boot, once the agent's "
            "modules are imported (with the compiled kernels, the module's machine code is then "
            "in the heap), once the agent is built, and the lowest over a full default round's "
            "checkpoints (every sample, every publish). %s" % (heap["board"], verdict),
        ]
    )


BLOCKS = [
    Block(
        "device_heap",
        "The agent's heap on the Cortex-M7 firmware",
        ("device-cortexm.json",),
        device_heap,
    ),
]
