"""Faults: the disk fills while checkpointing, a half-sent message, a device that reboots in the
middle of a round. (Deadlines use a monotonic clock, so wall-clock jumps cannot move them.)"""

import errno
import json
import signal
import socket
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest

from broker_service.server import checkpoint
from broker_service.server.journal import Journal
from broker_service.testing.waiting import wait_for_text, wait_until
from broker_service.usecases.sine import SineUseCase
from tests.conftest import resolve_data_dir


@contextmanager
def small_disk(path, size="512k"):
    """A tmpfs of `size` mounted at `path` (the tests run as root, as CI does)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path):
    """Write until the disk is full; returns the filler file."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        theta = np.arange(20_000, dtype=np.float32)
        ckpt = checkpoint.Checkpoint(
            spec={"input": [1], "layers": []},
            theta=theta,
            round=1,
            algorithm="tinymetafed",
            use_case="sine",
        )
        checkpoint.save(disk / "c.json", ckpt)
        filler = fill(disk)
        with pytest.raises(OSError):
            checkpoint.save(
                disk / "c.json",
                checkpoint.Checkpoint(
                    spec=ckpt.spec,
                    theta=theta + 1,
                    round=2,
                    algorithm="tinymetafed",
                    use_case="sine",
                ),
            )
        back = checkpoint.load(disk / "c.json")
        assert back.round == 1 and np.array_equal(back.theta, theta)
        assert sorted(p.name for p in disk.iterdir()) == ["c.json", "filler"]
        filler.unlink()


def test_service_keeps_running_through_a_full_disk(session, tmp_path):
    session.fleet(SineUseCase(fleet_size=5), 5)
    with small_disk(tmp_path / "state", "1m") as state:
        cfg = session.config(rounds=12, cohort=5, eval_devices=2, eval_every=100, round_timeout=3.0)
        service = session.service(cfg, tmp_path / "s.log")
        thread, result = session.background(service)
        wait_until(lambda: service.round >= 3, 60, "round 3")
        filler = fill(state)
        # nothing durable can be accepted now
        wait_for_text(tmp_path / "s.log", "No space left", 60)
        stalled_at = service.round
        filler.unlink()  # space again: the session goes on
        thread.join(120)
        session.close()
        final = checkpoint.load(state / "checkpoint.json")
    log = (tmp_path / "s.log").read_text()
    assert "event=checkpoint_failed" in log or "reason=storage_error" in log
    assert stalled_at < 12 and result["rounds"] == 12 and final.round == 12


def test_half_a_message_then_disconnect_changes_nothing(session, tmp_path):
    use_case = SineUseCase(fleet_size=3)
    session.fleet(use_case, 3)
    cfg = session.config(rounds=4, cohort=3, eval_devices=2)
    service = session.service(cfg, tmp_path / "s.log")
    thread, result = session.background(service)
    wait_until(lambda: service.ledger is not None, 60, "the first round to open")
    topic = service.topics.update(use_case.device_ids[0]).encode()
    with socket.create_connection(("127.0.0.1", session.port)) as s:
        s.sendall(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04half")
        s.recv(4)  # CONNACK
        body_len = 2 + len(topic) + 2 + 1000
        s.sendall(
            bytes([0x32, (body_len & 0x7F) | 0x80, body_len >> 7])
            + len(topic).to_bytes(2, "big")
            + topic
            + b"\x00\x01"
            + b"TM\x01\x02"
        )
    thread.join(60)
    assert result["rounds"] == 4 and result["updates"] == 12 and not result["rejected"]


def test_device_rebooting_mid_round_answers_after_it_is_back(session, tmp_path):
    cfg_agent = {"device_id": "rebooter", "use_case": "kws"}
    cfg = session.config(
        use_case="kws",
        data_dir=str(resolve_data_dir()),
        rounds=1,
        cohort=1,
        quorum=1.0,
        eval_devices=1,
        round_timeout=60.0,
        settings={"recon_samples": 30, "adapt_samples": 60},
    )
    agent = session.agent(cfg_agent, "micropython")
    service = session.service(cfg, tmp_path / "s.log")
    thread, result = session.background(service)
    # the agent logs "training" as its ~3 s round (unix port) starts: reboot it inside it
    wait_for_text(tmp_path / "rebooter.log", "agent training", 60)
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    session.agent(cfg_agent, "micropython")  # the reboot
    thread.join(120)
    text = (tmp_path / "s.log").read_text()
    assert result["rounds"] == 1 and result["updates"] == 1
    assert "device=rebooter online=False" in text and text.count("device=rebooter online=True") == 2
    assert json.loads(json.dumps(result))["rejected"] == {}


def test_a_batch_the_full_disk_cannot_hold_leaves_nothing_to_replay(tmp_path):
    """Group commit on a full disk: the journal is cut back to its last durable batch, so a
    restart replays none of the updates whose batch failed (none of them counted)."""
    with small_disk(tmp_path / "disk") as disk:
        journal = Journal(disk, 3)
        journal.append_many([("a", b"\x01" * 100), ("b", b"\x02" * 100)])
        big = [("d%d" % i, bytes(4096)) for i in range(200)]  # 800 KB > the 512 KB disk
        with pytest.raises(OSError) as caught:
            journal.append_many(big)
        assert caught.value.errno == errno.ENOSPC
        assert journal.replay() == [("a", b"\x01" * 100), ("b", b"\x02" * 100)]
        journal.append_many([("c", b"\x03")])  # the disk has room again for a small batch
        assert [d for d, _ in journal.replay()] == ["a", "b", "c"]
