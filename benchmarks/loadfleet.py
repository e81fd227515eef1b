"""Many lightweight protocol-level devices in one asyncio process: each speaks just enough
MQTT 3.1.1 (CONNECT with a last will, SUBSCRIBE to its command topic, QoS 1 PUBLISH/PUBACK)
to announce itself and answer every round command with a valid sparse update. Each device
encodes its update once; answering a command only writes the command's round and model version
into the header and recomputes the CRC (zlib's CRC-32, the codec's), so the fleet's own CPU stays
small next to the service's.

    python -m benchmarks.loadfleet --port P --devices 1000 --n 1120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import zlib

import numpy as np

from broker_service.core.device_round import top_k_indices
from device_agent import codec
from device_agent.topics import Topics


def _len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _len(len(body)) + body


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readexactly(1))[0]
    n, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return head, await reader.readexactly(n)


async def device(name: str, port: int, topics: Topics, template, ready, stats) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status = topics.status(name)
    will = json.dumps({"state": "offline", "device": name}).encode()
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retain
    body = (
        _str("MQTT")
        + bytes([4, flags])
        + struct.pack("!H", 120)
        + _str(name)
        + _str(status)
        + _str(will)
    )
    writer.write(packet(0x10, body))
    await read_packet(reader)  # CONNACK
    writer.write(packet(0x82, struct.pack("!H", 1) + _str(topics.command(name)) + b"\x01"))
    await read_packet(reader)  # SUBACK
    birth = json.dumps({"state": "online", "device": name}).encode()
    writer.write(packet(0x31 | 0x02, _str(status) + struct.pack("!H", 2) + birth))
    pid = 10
    stats["ready"] = stats.get("ready", 0) + 1
    if stats["ready"] >= stats["devices"]:
        ready.set()
    update_topic = topics.update(name)
    while True:
        head, body = await read_packet(reader)
        kind = head & 0xF0
        if kind == 0x30:
            tlen = struct.unpack_from("!H", body)[0]
            pos = 2 + tlen
            qos = (head >> 1) & 3
            if qos:
                writer.write(packet(0x40, body[pos : pos + 2]))
                pos += 2
            h = codec.Header(struct.unpack_from(codec.HEADER, body, pos))
            payload = answer(template, h)
            pid = pid % 60000 + 1
            writer.write(packet(0x32, _str(update_topic) + struct.pack("!H", pid) + payload))
            stats["sent"] += 1
        await writer.drain()


def answer(template: bytes, h: codec.Header) -> bytes:
    """The device's update `template` for the round and model version of command header `h`."""
    buf = bytearray(template)
    struct.pack_into("<II", buf, 8, h.model_version, h.round)
    view = memoryview(buf)
    crc = zlib.crc32(view[codec.HEADER_SIZE :], zlib.crc32(view[: codec.CRC_OFFSET]))
    struct.pack_into("<I", buf, codec.CRC_OFFSET, crc)
    return bytes(buf)


async def main_async(args) -> None:
    topics = Topics("tinymetafed", args.fleet)
    rng = np.random.default_rng(0)
    ready = asyncio.Event()
    stats = {"devices": args.devices, "sent": 0}
    tasks = []
    sizes = []
    for i in range(args.devices):
        delta = (rng.standard_normal(args.n) * 1e-3).astype(np.float32)
        idx = top_k_indices(delta, max(1, args.n // 10)).tolist()
        template = bytes(
            codec.encode(
                codec.KIND_DELTA, args.n, idx, delta[idx].tolist(), 0, 0, 30, codec.VALUE_F16
            )
        )
        sizes.append(len(template))
        tasks.append(
            asyncio.create_task(device("load-%05d" % i, args.port, topics, template, ready, stats))
        )
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await ready.wait()
    print("ready %d %d" % (args.devices, round(float(np.mean(sizes)))), flush=True)
    await asyncio.gather(*tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--n", type=int, default=1120)
    parser.add_argument("--fleet", default="load")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
