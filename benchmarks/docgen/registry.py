"""Every block a docs page may hold, by name: the results files it reads and its renderer."""

from __future__ import annotations

from . import (
    ablations,
    asynchronous,
    attacks,
    battery,
    claims,
    comparison,
    device_heap,
    sleepy,
    systems,
)
from .common import Block


def _registry(*groups: list[Block]) -> dict[str, Block]:
    """The blocks by name; a name given twice is an error."""
    out: dict[str, Block] = {}
    for block in (b for group in groups for b in group):
        if block.name in out:
            raise ValueError("block %r is defined twice" % block.name)
        out[block.name] = block
    return out


BLOCKS = _registry(
    claims.BLOCKS,
    comparison.BLOCKS,
    ablations.BLOCKS,
    attacks.BLOCKS,
    systems.BLOCKS,
    battery.BLOCKS,
    device_heap.BLOCKS,
    asynchronous.BLOCKS,
    sleepy.BLOCKS,
)
"""Every table block, by the NAME a page gives it (`<!-- generated: NAME -->`)."""
