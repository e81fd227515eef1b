"""Device enrollment for the shipped broker: password entries, per-device ACL blocks, board
configs, and revocation.

A device's broker user name is its device id, and the broker replaces every client id by the
user name (`use_username_as_clientid`), so a device can only ever connect as itself. Enrollment
writes three files:

- the password file (`deploy/mosquitto/passwd`): `user:$7$...` lines in mosquitto's own
  PBKDF2-SHA512 format, hashed here so that no password appears on a command line;
- the ACL beside it (`acl`): one block per device naming its fleet and its own topics, so it can
  read only its fleet's model and its own commands and write only its own status, updates and
  telemetry (no `pattern` lines: they would apply to every account, whatever its fleet);
- the board config (JSON, with the device's password), readable by its owner only;
- with a keys file (the service's `hmac_keys_file`), a new random HMAC key for the device, in
  its board config (`hmac_key`) and in that file, so the device signs its updates and accepts
  only commands the service signed for it (docs/security.md, "The device").

The two broker files are 0640 (group `mosquitto` when it exists and may be set) and are
replaced atomically under a lock. An existing user is never reset unless `replace` is given.
The service and monitor accounts are reserved: the broker's start script
(`deploy/mosquitto/entrypoint.sh`) makes them from the environment at every start, so
enrollment and revocation refuse their names.
"""

from __future__ import annotations

import base64
import fcntl
import grp
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from device_agent.config import AgentConfigError, make_config
from device_agent.topics import Topics, check_name

SERVICE_USER = "tinymetafed-service"
"""The service's broker account (read/write on its fleets); also its client id."""

MONITOR_USER = "tinymetafed-monitor"
"""The broker health check's account (read-only `$SYS`)."""

STANDBY_USER = "tinymetafed-standby"
"""A standby service's watch account (read-only, the service status topics), made by the
broker's start script when TINYMETAFED_STANDBY_PASSWORD is set."""

RESERVED_USERS = (SERVICE_USER, MONITOR_USER, STANDBY_USER)

BROKER_FILE_MODE = 0o640
"""Password file and ACL: owner read/write, the broker's group read, nobody else."""

SECRET_FILE_MODE = 0o600
"""Board configs: they hold the device's broker and Wi-Fi passwords."""

PBKDF2_ITERATIONS = 101
"""mosquitto_passwd's default. Enrollment's passwords are 144-bit random strings, which no
amount of stretching makes stronger; a hand-picked `--password` should be as long."""

HMAC_KEY_BYTES = 32
"""Random bytes of a device's HMAC-SHA256 key."""

PASSWORD_BYTES = 18
"""Random bytes of a generated device password (24 URL-safe characters)."""

SALT_BYTES = 12
"""Salt length mosquitto_passwd uses for `$7$` hashes."""

ACL_HEADER = """\
# Devices enrolled with `tinymetafed device enroll`, one block each (`tinymetafed device revoke`
# removes one). A device may read only its fleet's model and its own commands, and write only
# its own status, updates and telemetry. The service and monitor accounts are not here: the
# broker's start script (entrypoint.sh) adds them from the environment at every start.
# Do not add `pattern` lines: they would apply to every account, whatever its fleet.
"""


class EnrollError(RuntimeError):
    """Enrollment or revocation refused or failed; the message says why."""


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The mosquitto 2.x `$7$` hash of `password`: PBKDF2-HMAC-SHA512 with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (
        iterations,
        base64.b64encode(salt).decode(),
        base64.b64encode(digest).decode(),
    )


def device_acl(device_id: str, fleet: str, prefix: str = "tinymetafed") -> list[str]:
    """The ACL block of one device: its fleet's model and its own subtree, nothing else."""
    topics = Topics(prefix, fleet)
    return [
        "user %s" % device_id,
        "topic read %s" % topics.model,
        "topic read %s" % topics.command(device_id),
        "topic write %s" % topics.status(device_id),
        "topic write %s" % topics.update(device_id),
        "topic write %s" % topics.telemetry(device_id),
    ]


def remove_acl_block(lines: list[str], user: str) -> tuple[list[str], bool]:
    """`lines` without the block of `user` (its `user` line up to the next one), and whether
    there was one."""
    out: list[str] = []
    skipping = found = False
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0] == "user":
            skipping = words[1] == user
            found = found or skipping
        if not skipping:
            out.append(line)
    return out, found


def remove_passwd_entry(lines: list[str], user: str) -> tuple[list[str], bool]:
    """`lines` of a password file without `user`'s entry, and whether it had one."""
    kept = [line for line in lines if line.split(":", 1)[0] != user]
    return kept, len(kept) != len(lines)


def _read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _broker_group() -> int:
    try:
        return grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        return -1


def _write_atomic(path: Path, text: str, mode: int, group: int = -1) -> None:
    """Replace `path` by `text` (temp file, fsync, rename) with `mode`; an existing file keeps
    its owner and group, a new one gets `group` when the caller may set it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = -1
    if path.exists():
        st = path.stat()
        owner, group = st.st_uid, st.st_gid
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".%s." % path.name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        with suppress(PermissionError):  # not root, not in that group: it stays the caller's
            os.chown(tmp, owner, group)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(passwd_file: Path) -> Iterator[None]:
    """One enrollment at a time on these files (an exclusive lock beside them)."""
    passwd_file.parent.mkdir(parents=True, exist_ok=True)
    with open(passwd_file.parent / ".enroll.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_passwd(passwd_file: Path, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    _write_atomic(passwd_file, text, BROKER_FILE_MODE, _broker_group())


def _write_acl(acl_file: Path, lines: list[str]) -> None:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    text = "".join(line + "\n" for line in lines) if lines else ACL_HEADER
    _write_atomic(acl_file, text, BROKER_FILE_MODE, _broker_group())


def add_broker_user(passwd_file: Path, user: str, password: str, replace: bool = False) -> None:
    """Add `user` to a mosquitto password file (created when missing); an existing entry is
    replaced only with `replace`."""
    with _locked(passwd_file):
        lines, existed = remove_passwd_entry(_read_lines(passwd_file), user)
        if existed and not replace:
            raise EnrollError("%s already has a password in %s" % (user, passwd_file))
        _write_passwd(passwd_file, lines + ["%s:%s" % (user, hash_password(password))])


def _refuse_reserved(user: str) -> None:
    if user in RESERVED_USERS:
        raise EnrollError(
            "%s is a reserved account: the broker's start script makes it from the environment "
            "(deploy/.env), never from the enrollment files" % user
        )


def write_board_config(path: Path, config: dict, replace: bool = False) -> None:
    """Write a board config readable by its owner only; an existing file only with `replace`."""
    if path.exists() and not replace:
        raise EnrollError("%s exists; pass --replace to overwrite it" % path)
    _write_atomic(path, json.dumps(config, indent=1) + "\n", SECRET_FILE_MODE)


def _read_keys(keys_file: Path) -> dict[str, str]:
    if not keys_file.exists():
        return {}
    try:
        doc = json.loads(keys_file.read_text())
    except ValueError:
        raise EnrollError("%s is not a JSON object of hex keys" % keys_file) from None
    if not isinstance(doc, dict):
        raise EnrollError("%s is not a JSON object of hex keys" % keys_file)
    return doc


def _write_keys(keys_file: Path, keys: dict[str, str]) -> None:
    _write_atomic(keys_file, json.dumps(keys, indent=1, sort_keys=True) + "\n", SECRET_FILE_MODE)


def board_config(
    device_id: str,
    password: str,
    broker_host: str,
    broker_port: int,
    use_case: str,
    fleet: str,
    tls: bool,
    ca_file: str | None = None,
) -> dict:
    """The checked config of an enrolled board: its broker user is its device id; with TLS,
    `ca_file` is the broker's CA, which `device bundle` copies onto the board."""
    broker = {
        "host": broker_host,
        "port": broker_port,
        "user": device_id,
        "password": password,
        "ssl": tls,
    }
    if tls and ca_file:
        broker["ca_file"] = ca_file
    try:
        return make_config(
            {
                "device_id": device_id,
                "fleet": fleet,
                "use_case": use_case,
                "broker": broker,
                "data": {"kind": "file", "path": "samples.csv"},
                "wifi": {"ssid": "my-network", "password": "change-me"},
            }
        )
    except AgentConfigError as exc:
        raise EnrollError(str(exc)) from None


def enroll(
    device_id: str,
    passwd_file: Path,
    broker_host: str,
    broker_port: int = 8883,
    use_case: str = "sine",
    fleet: str = "default",
    password: str | None = None,
    *,
    acl_file: Path | None = None,
    out: Path | None = None,
    replace: bool = False,
    tls: bool = True,
    ca_file: str | None = None,
    keys_file: Path | None = None,
) -> dict:
    """Create a device's broker account (password entry and ACL block) and, with `keys_file`,
    its HMAC key; return its board config, also written to `out` when given. A device already
    enrolled, or an existing `out`, is refused unless `replace`; reserved names always are."""
    _refuse_reserved(device_id)
    password = password or secrets.token_urlsafe(PASSWORD_BYTES)
    config = board_config(
        device_id, password, broker_host, broker_port, use_case, fleet, tls, ca_file
    )
    acl_file = acl_file or passwd_file.parent / "acl"
    with _locked(passwd_file):
        users, in_passwd = remove_passwd_entry(_read_lines(passwd_file), device_id)
        rules, in_acl = remove_acl_block(
            _read_lines(acl_file) or ACL_HEADER.splitlines(), device_id
        )
        keys = _read_keys(keys_file) if keys_file is not None else {}
        if (in_passwd or in_acl or device_id in keys) and not replace:
            where = passwd_file if in_passwd else acl_file if in_acl else keys_file
            raise EnrollError(
                "%s is already enrolled (%s); pass --replace to reset its credentials"
                % (device_id, where)
            )
        if keys_file is not None:
            config["hmac_key"] = secrets.token_bytes(HMAC_KEY_BYTES).hex()
            keys[device_id] = config["hmac_key"]
        if out is not None:
            write_board_config(out, config, replace)
        if keys_file is not None:
            _write_keys(keys_file, keys)
        block = device_acl(device_id, config["fleet"], config["prefix"])
        _write_acl(acl_file, rules + [""] + block)
        _write_passwd(passwd_file, users + ["%s:%s" % (device_id, hash_password(password))])
    return config


def revoke(
    device_id: str,
    passwd_file: Path,
    acl_file: Path | None = None,
    keys_file: Path | None = None,
) -> None:
    """Remove a device's password entry, ACL block and (with `keys_file`) HMAC key. The broker
    applies it at its next start (a running broker keeps the device's open connection until
    then), the service at its next start."""
    _refuse_reserved(device_id)
    try:
        check_name("device id", device_id)
    except ValueError as exc:
        raise EnrollError(str(exc)) from None
    acl_file = acl_file or passwd_file.parent / "acl"
    with _locked(passwd_file):
        users, in_passwd = remove_passwd_entry(_read_lines(passwd_file), device_id)
        rules, in_acl = remove_acl_block(_read_lines(acl_file), device_id)
        keys = _read_keys(keys_file) if keys_file is not None else {}
        in_keys = keys.pop(device_id, None) is not None
        if not (in_passwd or in_acl or in_keys):
            raise EnrollError("%s is not enrolled in %s" % (device_id, passwd_file))
        _write_passwd(passwd_file, users)
        _write_acl(acl_file, rules)
        if keys_file is not None and in_keys:
            _write_keys(keys_file, keys)
