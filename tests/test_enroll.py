"""Enrollment's files: mosquitto-compatible hashes, per-device ACL blocks, owner-only secrets,
no silent reset of an enrolled or reserved user, revocation; and the `device` CLI."""

import base64
import grp
import hashlib
import json
import os
import subprocess
import sys

import pytest

from broker_service.tools.enroll import (
    ACL_HEADER,
    MONITOR_USER,
    SERVICE_USER,
    STANDBY_USER,
    EnrollError,
    add_broker_user,
    device_acl,
    enroll,
    hash_password,
    remove_acl_block,
    revoke,
)
from tests.mqtt_helpers import ROOT


def verify(line: str, password: str) -> bool:
    """Check a `user:$7$...` password line the way mosquitto does."""
    _, _, iterations, salt, digest = line.split(":", 1)[1].split("$")
    again = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return base64.b64encode(again).decode() == digest


def entries(passwd) -> dict:
    return dict(line.split(":", 1) for line in passwd.read_text().splitlines())


def test_hash_matches_mosquitto_passwd(tmp_path):
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(tmp_path / "p"), "alice", "s3cret:with colon"],
        check=True,
    )
    line = (tmp_path / "p").read_text().strip()
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    ours = hash_password("s3cret:with colon", base64.b64decode(salt), int(iterations))
    assert line == "alice:" + ours
    assert verify("bob:" + hash_password("pw"), "pw") and not verify("bob:" + ours, "pw")


def test_device_acl_names_only_its_fleet_and_subtree():
    assert device_acl("esp-1", "lab") == [
        "user esp-1",
        "topic read tinymetafed/lab/model",
        "topic read tinymetafed/lab/devices/esp-1/cmd",
        "topic write tinymetafed/lab/devices/esp-1/status",
        "topic write tinymetafed/lab/devices/esp-1/update",
        "topic write tinymetafed/lab/devices/esp-1/telemetry",
    ]


def test_remove_acl_block_keeps_the_others():
    lines = [
        "# head",
        "",
        *device_acl("a", "f"),
        "",
        *device_acl("b", "f"),
        "",
        *device_acl("c", "f"),
    ]
    kept, found = remove_acl_block(lines, "b")
    assert found and kept == ["# head", "", *device_acl("a", "f"), "", *device_acl("c", "f")]
    assert remove_acl_block(lines, "zz") == (lines, False)


def test_enroll_writes_private_files(tmp_path):
    passwd, out = tmp_path / "mosquitto" / "passwd", tmp_path / "board.json"
    config = enroll("esp-1", passwd, "broker.example", fleet="lab", out=out)
    acl = passwd.parent / "acl"
    assert passwd.stat().st_mode & 0o777 == 0o640 and acl.stat().st_mode & 0o777 == 0o640
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_text()) == config
    assert config["broker"] == {
        "host": "broker.example",
        "port": 8883,
        "user": "esp-1",
        "password": config["broker"]["password"],
        "keepalive": 30,
        "ssl": True,
        "ca_file": None,  # no --ca-file given
    }
    assert len(config["broker"]["password"]) >= 24
    assert verify("esp-1:" + entries(passwd)["esp-1"], config["broker"]["password"])
    assert acl.read_text() == ACL_HEADER + "\n" + "\n".join(device_acl("esp-1", "lab")) + "\n"
    group = grp.getgrnam("mosquitto").gr_gid  # the broker's group may read them (made test)
    assert passwd.stat().st_gid == group and acl.stat().st_gid == group


def test_enroll_keeps_the_owner_and_group_of_existing_files(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    (tmp_path / "acl").write_text(ACL_HEADER)
    for path in (passwd, tmp_path / "acl"):
        path.chmod(0o644)  # world-readable, as older enrollments left it
        os.chown(path, 0, 0)
    enroll("esp-1", passwd, "h")
    for path in (passwd, tmp_path / "acl"):
        assert (path.stat().st_gid, path.stat().st_mode & 0o777) == (0, 0o640)


def test_an_enrolled_device_is_not_reset_without_replace(tmp_path):
    passwd, out = tmp_path / "passwd", tmp_path / "b.json"
    first = enroll("esp-1", passwd, "h", out=out)
    before = (passwd.read_text(), (tmp_path / "acl").read_text(), out.read_text())
    with pytest.raises(EnrollError, match="already enrolled"):
        enroll("esp-1", passwd, "h", fleet="other")
    with pytest.raises(EnrollError, match="exists"):
        enroll("esp-2", passwd, "h", out=out)
    assert (passwd.read_text(), (tmp_path / "acl").read_text(), out.read_text()) == before
    second = enroll("esp-1", passwd, "h", fleet="other", out=out, replace=True)
    assert second["broker"]["password"] != first["broker"]["password"]
    assert verify("esp-1:" + entries(passwd)["esp-1"], second["broker"]["password"])
    assert len(entries(passwd)) == 1
    assert (tmp_path / "acl").read_text().count("user esp-1") == 1
    assert "tinymetafed/other/devices/esp-1/update" in (tmp_path / "acl").read_text()
    assert json.loads(out.read_text()) == second


def test_add_broker_user_refuses_an_existing_user(tmp_path):
    add_broker_user(tmp_path / "p", "svc", "one")
    with pytest.raises(EnrollError, match="already has a password"):
        add_broker_user(tmp_path / "p", "svc", "two")
    add_broker_user(tmp_path / "p", "svc", "two", replace=True)
    assert verify("svc:" + entries(tmp_path / "p")["svc"], "two")


@pytest.mark.parametrize("name", [SERVICE_USER, MONITOR_USER, STANDBY_USER])
def test_reserved_accounts_are_never_enrolled_or_revoked(tmp_path, name):
    for replace in (False, True):
        with pytest.raises(EnrollError, match="reserved"):
            enroll(name, tmp_path / "passwd", "h", replace=replace)
    with pytest.raises(EnrollError, match="reserved"):
        revoke(name, tmp_path / "passwd")
    assert not (tmp_path / "passwd").exists()


@pytest.mark.parametrize("name", ["a b", "a/b", "#", "+", "x" * 65, "a:b", ""])
def test_names_that_would_break_the_files_are_refused(tmp_path, name):
    with pytest.raises(EnrollError):
        enroll(name, tmp_path / "passwd", "h")
    with pytest.raises(EnrollError):
        enroll("ok", tmp_path / "passwd", "h", fleet=name)
    assert not (tmp_path / "passwd").exists() and not (tmp_path / "acl").exists()


def test_revoke_removes_the_password_and_the_acl_block(tmp_path):
    passwd = tmp_path / "passwd"
    for device in ("a", "b", "c"):
        enroll(device, passwd, "h")
    revoke("b", passwd)
    assert set(entries(passwd)) == {"a", "c"}
    acl = (tmp_path / "acl").read_text()
    assert "user b" not in acl and "devices/b/" not in acl
    assert "\n".join(device_acl("a", "default")) in acl
    assert "\n".join(device_acl("c", "default")) in acl
    with pytest.raises(EnrollError, match="not enrolled"):
        revoke("b", passwd)
    for device in ("a", "c"):
        revoke(device, passwd)
    assert passwd.read_text() == "" and (tmp_path / "acl").read_text() == ACL_HEADER


def test_enroll_with_a_keys_file_gives_the_device_and_the_service_one_key(tmp_path):
    from broker_service.server.admission import load_hmac_keys
    from device_agent.config import make_config

    passwd, keys = tmp_path / "passwd", tmp_path / "keys.json"
    configs = {d: enroll(d, passwd, "h", keys_file=keys) for d in ("a", "b")}
    assert keys.stat().st_mode & 0o777 == 0o600
    served = load_hmac_keys(str(keys))
    for device, cfg in configs.items():
        assert make_config(cfg)["hmac_key"] == cfg["hmac_key"]
        assert served[device] == bytes.fromhex(cfg["hmac_key"]) and len(served[device]) == 32
    assert served["a"] != served["b"]
    revoke("b", passwd)  # broker files only: the key stays until revoked with the keys file
    with pytest.raises(EnrollError, match="already enrolled"):
        enroll("b", passwd, "h", keys_file=keys)
    revoke("b", passwd, keys_file=keys)
    assert set(load_hmac_keys(str(keys))) == {"a"}
    renewed = enroll("a", passwd, "h", keys_file=keys, replace=True)
    assert load_hmac_keys(str(keys))["a"] == bytes.fromhex(renewed["hmac_key"]) != served["a"]


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "broker_service.cli", "device", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_device_cli_enroll_replace_and_revoke(tmp_path):
    passwd, out = str(tmp_path / "passwd"), tmp_path / "c.json"
    args = ["--device-id", "esp32-07", "--passwd-file", passwd]
    proc = cli("enroll", *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(out.read_text())
    assert cfg["broker"]["user"] == "esp32-07" and len(cfg["broker"]["password"]) >= 16
    assert cfg["broker"]["port"] == 8883 and cfg["broker"]["ssl"] is True
    assert out.stat().st_mode & 0o777 == 0o600
    again = cli("enroll", *args, "--out", str(out))
    assert again.returncode == 2 and "already enrolled" in again.stderr
    assert json.loads(out.read_text()) == cfg
    proc = cli("enroll", *args, "--out", str(out), "--replace", "--no-tls", "--broker-port", "1883")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["broker"]["ssl"] is False
    reserved = cli("enroll", "--device-id", SERVICE_USER, "--passwd-file", passwd, "--replace")
    assert reserved.returncode == 2 and "reserved" in reserved.stderr
    proc = cli("revoke", *args)
    assert proc.returncode == 0 and "restart the broker" in proc.stdout
    assert "esp32-07" not in (tmp_path / "passwd").read_text()
    gone = cli("revoke", *args)
    assert gone.returncode == 2 and "not enrolled" in gone.stderr
