"""Service configuration from defaults, a TOML file, environment variables and flags.

Training settings (broker_service/core/settings.py fields such as recon_lr or top_p) can be
overridden with a [settings] table in the file or `--set KEY=VALUE` flags; a key the service does
not read (a service option such as eval_every, a bench-only setting, a typo) is an error.

Precedence, lowest to highest: built-in defaults < TOML file (`--config`; keys at top level or
under [service] / [broker]) < environment variables `TINYMETAFED_<KEY>` (upper case, e.g.
TINYMETAFED_BROKER, TINYMETAFED_ROUNDS) < command-line flags.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from broker_service.core.settings import FIELDS as TRAINING_FIELDS
from broker_service.core.settings import REMOVED, removed_setting
from broker_service.options import ConfigError, broker_address
from device_agent import limits

ENV_PREFIX = "TINYMETAFED_"


def option(default=None, help: str = "", secret: bool = False):
    """A ServiceConfig field with its help text; a secret one never becomes a flag."""
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass
class ServiceConfig:
    """Every setting of `tinymetafed serve` (docs/service.md); each `serve` flag is made from
    its field here: the name in kebab case, the type of the annotation, the help text."""

    broker: str = option("mqtt://127.0.0.1:1883", "mqtt://host:port or mqtts://host:port (TLS)")
    username: str | None = option(help="broker user name")
    password: str | None = option(help="broker password", secret=True)
    ca_file: str | None = option(help="CA certificate (PEM) to verify an mqtts:// broker")
    cert_file: str | None = option(help="client certificate (PEM) for mutual TLS")
    key_file: str | None = option(help="the client certificate's private key (PEM)")
    prefix: str = option("tinymetafed", "topic tree <prefix>/<fleet>/...")
    fleet: str = option("default", "fleet name in the topic tree")
    use_case: str = option("sine", "the model and the new-device data to evaluate on")
    data_dir: str | None = option(help="folder holding the data sets of the real use cases")
    algorithm: str = option(
        "tinymetafed",
        "tinymetafed or tinyreptile (reptile and fedavg train on stored samples: simulation only)",
    )
    rounds: int | None = option(help="rounds to run (default: the use case's)")
    cohort: int | None = option(help="devices a round (default: the use case's)")
    quorum: float = option(0.6, "fraction of the cohort needed to close a round, in (0, 1]")
    min_updates: int = option(1, "accepted updates needed to close a round, at least")
    round_timeout: float = option(30.0, "seconds each attempt of a round waits for updates")
    wait_for_devices: float = option(60.0, "seconds to wait for the first devices")
    max_attempts: int = option(3, "re-invitations of a round before the slow retry")
    seed: int = option(0, "seed of cohorts, initialisation and evaluation episodes")
    state_dir: str = option(
        "tinymetafed-state", "checkpoint, journal, heartbeat, metrics file and spool"
    )
    eval_every: int | None = option(
        help="measure the model on new devices every N rounds (default: the use case's)"
    )
    eval_devices: int | None = option(
        help="new devices of each measurement (default: the use case's)"
    )
    max_payload: int = option(limits.MAX_PAYLOAD, "bytes; larger updates are rejected unread")
    metrics_file: str | None = option(
        help="line-protocol metrics file (default: <state_dir>/metrics.lp)"
    )
    influx_url: str | None = option(help="also write the metrics to this InfluxDB")
    influx_org: str = option("tinymetafed", "InfluxDB organisation")
    influx_bucket: str = option("tinymetafed", "InfluxDB bucket")
    influx_token: str | None = option(help="InfluxDB token", secret=True)
    hmac_keys_file: str | None = option(
        help="JSON {device: hex key}: every update must carry its HMAC-SHA256 tag"
    )
    init_checkpoint: str | None = option(
        help="start a new session from this checkpoint's weights (same architecture)"
    )
    max_update_norm: float = option(
        0.0, "refuse longer updates (L2 norm); 0: 100x the median of the last 200 accepted"
    )
    mode: str = option(
        "rounds", "rounds (invited rounds) or async (buffered steps: devices that sleep)"
    )
    buffer: int | None = option(
        help="async: accepted updates that make one aggregation step (default: the cohort size)"
    )
    max_staleness: int = option(
        8, "async: refuse an update computed more than this many model versions ago"
    )
    staleness_power: float = option(
        0.5, "async: an update s versions old weighs (1+s)^-power (FedBuff's 0.5; 0: no discount)"
    )
    step_timeout: float = option(
        60.0, "async: seconds after which a step is taken with at least min_updates updates"
    )
    standby: bool = option(
        False,
        "wait while another service holds state_dir (shared volume), then take over when it is "
        "gone: resume its checkpoint and journal and finish the session",
    )
    standby_username: str | None = option(
        help="broker user of the standby's watch of the service status (default: username); "
        "its own account where the broker binds client ids to user names"
    )
    standby_password: str | None = option(help="standby_username's password", secret=True)
    settings: dict = field(
        default_factory=dict,
        metadata={"help": "training settings (core/settings.py): [settings] or --set KEY=VALUE"},
    )

    def broker_address(self) -> tuple[str, int, bool]:
        """(host, port, tls) from the broker URL (broker_service.options.broker_address)."""
        return broker_address(self.broker)


SESSION_OPTIONS = ("rounds", "cohort", "eval_every", "eval_devices")
"""The service options that are training settings too (core/settings.py) and mean the same thing
there: unset (None), each takes the use case's value; set, it overrides it. No other option
shares a name with a training setting."""


def session_options(cfg: ServiceConfig) -> dict[str, int]:
    """The SESSION_OPTIONS set in `cfg`, as training-setting overrides."""
    chosen = {name: getattr(cfg, name) for name in SESSION_OPTIONS}
    return {name: value for name, value in chosen.items() if value is not None}


def _scalar(hint) -> type:
    """str, int, float, bool or dict from an annotation such as `int | None`."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    return kinds[0]


FIELD_TYPES: dict[str, type] = {
    name: _scalar(hint) for name, hint in typing.get_type_hints(ServiceConfig).items()
}


@dataclass(frozen=True)
class FlagOption:
    """One `serve` flag made from a ServiceConfig field."""

    name: str
    kind: type
    help: str
    default: object

    @property
    def flag(self) -> str:
        return flag_name(self.name)


def flag_name(name: str) -> str:
    """The command-line flag of a setting: eval_every -> --eval-every."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """The environment variable of a setting: eval_every -> TINYMETAFED_EVAL_EVERY."""
    return ENV_PREFIX + name.upper()


def flag_options() -> list[FlagOption]:
    """The fields that are `serve` flags: every scalar one except the secrets (a bool field is
    a switch)."""
    return [
        FlagOption(f.name, FIELD_TYPES[f.name], f.metadata.get("help", ""), f.default)
        for f in fields(ServiceConfig)
        if FIELD_TYPES[f.name] in (str, int, float, bool) and not f.metadata.get("secret")
    ]


def secret_options() -> list[str]:
    """The fields read only from the config file or the environment, never from a flag."""
    return [f.name for f in fields(ServiceConfig) if f.metadata.get("secret")]


NOT_SERVICE_SETTINGS = {
    **{name: f.metadata["why"] for name, f in TRAINING_FIELDS.items() if not f.metadata["service"]},
    "quick": "the bench's --quick",
}
"""Training settings (core/settings.py fields flagged `service` False, and the use cases'
`quick`) the service does not read, and why: its devices run the online round (no stored data,
no inner epochs), and it has no final measurement."""


def service_settings() -> set[str]:
    """The training-setting keys the service reads (through its strategy and evaluation)."""
    return {name for name, f in TRAINING_FIELDS.items() if f.metadata["service"]} - set(FIELD_TYPES)


def check_settings(settings: dict, origin: str) -> None:
    """A ConfigError for the first key the service would ignore, naming what to use instead, or
    that is no longer supported (core.settings.REMOVED, or a removed value of a kept key); the
    values themselves are checked by core.settings.TrainingSettings when the service starts."""
    for key in sorted(settings):
        if key in REMOVED:
            raise ConfigError("%s: %s is a removed setting" % (origin, key))
        if removed_setting(key, settings[key]) is not None:
            raise ConfigError(
                "%s: %s is a removed setting value" % (origin, removed_setting(key, settings[key]))
            )
        if key in FIELD_TYPES:
            raise ConfigError(
                "%s: %s is a service option: use %s (or %s under [service] in the config file)"
                % (origin, key, flag_name(key), key)
            )
        if key in NOT_SERVICE_SETTINGS:
            raise ConfigError(
                "%s: %s is not used by the service, only by %s"
                % (origin, key, NOT_SERVICE_SETTINGS[key])
            )
        if key not in service_settings():
            raise ConfigError(
                "%s: unknown training setting %r; the service reads %s"
                % (origin, key, ", ".join(sorted(service_settings())))
            )


BOOL_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off", ""), False),
}
"""How a switch may be written in the environment (TINYMETAFED_STANDBY=1), in any case."""


def _switch(name: str, value, origin: str) -> bool:
    """A bool setting from TOML (true/false) or the environment (BOOL_WORDS)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise ConfigError("%s from %s: %r is not true or false" % (name, origin, value))


def _coerce(name: str, value, origin: str):
    kind = FIELD_TYPES[name]
    if kind is bool and value is not None:
        return _switch(name, value, origin)
    if value is None or kind not in (int, float) or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError("%s from %s: %r is not a number" % (name, origin, value)) from None


def _flatten(doc: dict) -> dict:
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key in ("service", "broker"):
            for sub, v in value.items():
                flat[("broker" if (key, sub) == ("broker", "url") else sub)] = v
        else:
            flat[key] = value
    return flat


def _check_names(cfg: ServiceConfig) -> None:
    """The use case and the algorithm exist (a typo is named here, not deep in the service)."""
    from broker_service.core.strategies import ALGORITHMS
    from broker_service.usecases.registry import USE_CASES

    if cfg.use_case not in USE_CASES:
        raise ConfigError(
            "use_case %r is unknown; known: %s" % (cfg.use_case, ", ".join(sorted(USE_CASES)))
        )
    served = sorted(name for name, s in ALGORITHMS.items() if s.federated and s.served)
    strategy = ALGORITHMS.get(cfg.algorithm)
    if strategy is not None and strategy.federated and not strategy.served:
        raise ConfigError(
            "algorithm %r cannot be served: its devices train for epochs on stored samples, "
            "while served devices stream theirs and use each once (it is a simulation baseline "
            "of `tinymetafed bench`); served: %s" % (cfg.algorithm, ", ".join(served))
        )
    if cfg.algorithm not in served:
        raise ConfigError(
            "algorithm %r cannot be served; known: %s" % (cfg.algorithm, ", ".join(served))
        )


ENV_ALIASES = {"data_dir": "TINYMETAFED_DATA"}
"""Variables read when a setting's own is unset: every command finds the data in
$TINYMETAFED_DATA, so `serve` does too."""


def load_config(
    path: str | None = None, flags: dict | None = None, env: dict | None = None
) -> ServiceConfig:
    """Merge the four layers; unknown keys in the file and training settings the service would
    ignore are errors naming them."""
    environ: Mapping[str, str] = os.environ if env is None else env
    values: dict = {}
    if path:
        try:
            doc = _flatten(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("config file %s: %s" % (path, exc)) from None
        unknown = sorted(set(doc) - set(FIELD_TYPES))
        if unknown:
            raise ConfigError("config file %s: unknown keys %s" % (path, ", ".join(unknown)))
        values.update({k: _coerce(k, v, path) for k, v in doc.items()})
        if isinstance(values.get("settings"), dict):
            check_settings(values["settings"], "config file %s [settings]" % path)
    for name in FIELD_TYPES:
        for var in (env_name(name), ENV_ALIASES.get(name)):
            if var and var in environ:
                values[name] = _coerce(name, environ[var], "$" + var)
                break
    for name, value in (flags or {}).items():
        if name == "settings" and value:
            check_settings(value, "--set")
            values["settings"] = {**values.get("settings", {}), **value}
        elif name in FIELD_TYPES and value is not None:
            values[name] = _coerce(name, value, flag_name(name))
    if not isinstance(values.get("settings", {}), dict):
        raise ConfigError("[settings] must be a table of training settings")
    cfg = ServiceConfig(**values)
    cfg.broker_address()
    if not 0 < cfg.quorum <= 1:
        raise ConfigError("quorum must be in (0, 1], got %s" % cfg.quorum)
    check_async_options(cfg)
    _check_names(cfg)
    return cfg


MODES = ("rounds", "async")
"""The session modes: invited rounds, or asynchronous buffered steps (docs/protocol.md)."""


def check_async_options(cfg: ServiceConfig) -> None:
    """A ConfigError naming the first of `mode`, `buffer`, `max_staleness`, `staleness_power`
    and `step_timeout` that cannot work."""
    if cfg.mode not in MODES:
        raise ConfigError("mode must be one of %s, got %r" % (", ".join(MODES), cfg.mode))
    if cfg.buffer is not None and cfg.buffer < 1:
        raise ConfigError("buffer must be at least 1 update, got %s" % cfg.buffer)
    if cfg.max_staleness < 0:
        raise ConfigError("max_staleness must be 0 or more versions, got %s" % cfg.max_staleness)
    if not 0 <= cfg.staleness_power <= 10:
        raise ConfigError("staleness_power must be in [0, 10], got %s" % cfg.staleness_power)
    if not 0 < cfg.step_timeout <= 1e6:
        raise ConfigError("step_timeout must be in (0, 1e6] seconds, got %s" % cfg.step_timeout)
