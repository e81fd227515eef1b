"""Service configuration from defaults, a TOML file, environment variables and flags.

Training settings (broker_service/core/hyperparams.py keys such as recon_lr or top_p) can be
overridden with a [settings] table in the file or `--set KEY=VALUE` flags.

Precedence, lowest to highest: built-in defaults < TOML file (`--config`; keys at top level or
under [service] / [broker]) < environment variables `TINYMETAFED_<KEY>` (upper case, e.g.
TINYMETAFED_BROKER, TINYMETAFED_ROUNDS) < command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from device_agent import limits

ENV_PREFIX = "TINYMETAFED_"


class ConfigError(ValueError):
    """A setting that cannot work; the message names it and where it came from."""


@dataclass
class ServiceConfig:
    """Every setting of `tinymetafed serve` (see docs/service.md for each)."""

    broker: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    prefix: str = "tinymetafed"
    fleet: str = "default"
    use_case: str = "sine"
    data_dir: str | None = None
    algorithm: str = "tinymetafed"
    rounds: int | None = None
    cohort: int | None = None
    quorum: float = 0.6
    min_updates: int = 1
    round_timeout: float = 30.0
    wait_for_devices: float = 60.0
    max_attempts: int = 3
    seed: int = 0
    state_dir: str = "tinymetafed-state"
    eval_every: int = 5
    eval_devices: int = 10
    max_payload: int = limits.MAX_PAYLOAD
    metrics_file: str | None = None
    influx_url: str | None = None
    influx_org: str = "tinymetafed"
    influx_bucket: str = "tinymetafed"
    influx_token: str | None = None
    hmac_keys_file: str | None = None
    init_checkpoint: str | None = None
    max_update_norm: float = 0.0
    settings: dict = field(default_factory=dict)

    def broker_address(self) -> tuple[str, int, bool]:
        """(host, port, tls) from the broker URL (mqtt:// or mqtts://)."""
        url = urlparse(self.broker)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError(
                "broker must look like mqtt://host:port or mqtts://host:port, got %r" % self.broker
            )
        tls = url.scheme == "mqtts"
        return url.hostname, url.port or (8883 if tls else 1883), tls


def _coerce(name: str, kind, value, origin: str):
    if value is None:
        return None
    text = str(kind)
    try:
        if "int" in text and not isinstance(value, int):
            return int(value)
        if "float" in text and not isinstance(value, float):
            return float(value)
    except ValueError:
        raise ConfigError("%s from %s: %r is not a number" % (name, origin, value)) from None
    return value


def _flatten(doc: dict) -> dict:
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key in ("service", "broker"):
            for sub, v in value.items():
                flat[("broker" if (key, sub) == ("broker", "url") else sub)] = v
        else:
            flat[key] = value
    return flat


def load_config(
    path: str | None = None, flags: dict | None = None, env: dict | None = None
) -> ServiceConfig:
    """Merge the four layers; unknown keys in the file are an error naming them."""
    env = os.environ if env is None else env
    known = {f.name: f.type for f in fields(ServiceConfig)}
    values: dict = {}
    if path:
        try:
            doc = _flatten(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("config file %s: %s" % (path, exc)) from None
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise ConfigError("config file %s: unknown keys %s" % (path, ", ".join(unknown)))
        values.update({k: _coerce(k, known[k], v, path) for k, v in doc.items()})
    for name, kind in known.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = _coerce(name, kind, env[key], "$" + key)
    for name, value in (flags or {}).items():
        if name == "settings" and value:
            values["settings"] = {**values.get("settings", {}), **value}
        elif name in known and value is not None:
            values[name] = _coerce(name, known[name], value, "--" + name.replace("_", "-"))
    if not isinstance(values.get("settings", {}), dict):
        raise ConfigError("[settings] must be a table of training settings")
    cfg = ServiceConfig(**values)
    cfg.broker_address()
    if not 0 < cfg.quorum <= 1:
        raise ConfigError("quorum must be in (0, 1], got %s" % cfg.quorum)
    return cfg
