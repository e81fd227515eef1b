"""The accepted-update journal: every update accepted for the open round is appended and
fsynced before it counts, so a crash loses no accepted work; a restart replays it.

Group commit: the updates that arrived together are written in one write and made durable by one
fsync (`append_many`), which is what lets one service keep up with its broker (an fsync costs a
few hundred microseconds here, far more than checking an update). The service counts none of
them before `append_many` returned.

File format: records of (u16 device-id length, device id, u32 payload length, payload), in
acceptance order. A torn last record (crash mid-write) is ignored on replay.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path


class Journal:
    """The journal of round `round_no` in `folder` (one file a round)."""

    def __init__(self, folder: Path, round_no: int) -> None:
        self.path = Path(folder) / ("round-%06d.journal" % round_no)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, device: str, payload: bytes) -> None:
        """Durably append one accepted update."""
        self.append_many([(device, payload)])

    def append_many(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Durably append accepted updates (device, payload) in order: one write, one fsync.
        When it raises (OSError), none of them may count: the file is cut back to its length
        before the write (when the disk allows it), so a restart does not replay them either."""
        if not records:
            return
        parts: list[bytes] = []
        for device, payload in records:
            name = device.encode()
            parts.append(struct.pack("<H", len(name)) + name + struct.pack("<I", len(payload)))
            parts.append(payload)
        with open(self.path, "ab") as f:
            start = f.tell()
            try:
                f.write(b"".join(parts))
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise

    def replay(self) -> list[tuple[str, bytes]]:
        """The complete records, in order."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        out: list[tuple[str, bytes]] = []
        pos = 0
        while pos + 2 <= len(data):
            (n,) = struct.unpack_from("<H", data, pos)
            if pos + 2 + n + 4 > len(data):
                break
            device = data[pos + 2 : pos + 2 + n].decode(errors="replace")
            (size,) = struct.unpack_from("<I", data, pos + 2 + n)
            start = pos + 6 + n
            if start + size > len(data):
                break
            out.append((device, data[start : start + size]))
            pos = start + size
        return out

    def remove(self) -> None:
        """Drop the journal once its round is checkpointed."""
        self.path.unlink(missing_ok=True)
