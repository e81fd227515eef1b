"""The training settings as one typed object: `TrainingSettings`, the one place that declares
each setting (its type, default and help) and checks it.

Each field's `metadata` holds `help` (one line: what it is, its unit), `device` (sent to the
devices in the round command; the agent's `device_agent.round.DEFAULTS` says what a command
that omits it means), `service` (read by the service; False with a `why` naming what reads it)
and `use_case` (each use case sets its own value, see core/hyperparams.py `USE_CASE_SETTINGS`;
the default here is the sine use case's, which is also the agent's).

`REMOVED` / `REMOVED_VALUES` name the settings (and setting values) that are no longer
supported: see `removed_setting` and `drop_removed`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from broker_service.core.serveropt import ServerOptimiser

VALUE_ENCODINGS = ("f32", "f16", "int8")
"""The value encodings of an upload (`values`) and of θ_g sent to the devices (`model_values`)."""

LOCAL_INITS = ("zeros", "glorot")
"""How a round re-initialises θ_l (`local_init`), as device_agent.round.LOCAL_INITS."""

AGGREGATIONS = ("mean",)
"""The aggregations left (core/aggregate.py)."""

REMOVED: dict[str, object] = {
    "residual_decay": 1.0,
    "residual_max_away": 0,
    "head_init": "sgd",
    "head_ridge": 1.0,
    "clip_norm": 0.0,
    "clip_scale": 0.0,
    "trim": 0.2,
    "rotations": False,
}
"""Settings that are no longer supported, each with its old default: a run (or a checkpoint)
that names one at that value behaves as before, any other value is refused."""

REMOVED_VALUES: dict[str, tuple[str, ...]] = {
    "aggregation": ("trimmed_mean", "median"),
    "server_optimiser": ("momentum", "yogi"),
}
"""Values of kept settings that are no longer supported."""


def removed_setting(key: str, value: object) -> str | None:
    """`key=value` when that setting (or that value of it) is no longer supported and changes
    what a run does; None when it is supported, or a removed setting at its old default."""
    if key in REMOVED:
        old = REMOVED[key]
        same = value == old and isinstance(value, bool) == isinstance(old, bool)
        return None if same else "%s=%s" % (key, value)
    if key in REMOVED_VALUES and value in REMOVED_VALUES[key]:
        return "%s=%s" % (key, value)
    return None


def drop_removed(settings: Mapping[str, object]) -> dict:
    """The settings without the removed keys left at their old defaults; ValueError naming the
    first removed setting (or value) that would change the run."""
    for key in sorted(settings):
        bad = removed_setting(key, settings[key])
        if bad is not None:
            raise ValueError("removed setting %s" % bad)
    return {k: v for k, v in settings.items() if k not in REMOVED}


def setting(
    default: object,
    help: str,
    device: bool = False,
    service: bool = True,
    why: str = "",
    use_case: bool = False,
):
    """A TrainingSettings field: its default and metadata (module docstring)."""
    meta = {"help": help, "device": device, "service": service, "why": why, "use_case": use_case}
    return field(default=default, metadata=meta)


BENCH_DEVICES = "the bench's simulated Reptile/FedAvg devices"


@dataclass(frozen=True)
class TrainingSettings:
    """Every training setting with its default; built through `from_dict` or `replace`, which
    refuse unknown and removed keys, and checked (types and ranges) on construction."""

    cohort: int = setting(5, "devices asked to train each round (TinyReptile always uses 1)")
    top_p: float = setting(10.0, "per cent of an update's entries a device uploads (0, 100]", True)
    values: str = setting("f16", "upload value encoding: f32, f16 or int8", True)
    # θ_g sent as int8 with a scale: chosen on validation devices (benchmarks/downlink_codec.py)
    model_values: str = setting(
        "int8", "encoding of θ_g sent to devices: f32, f16 or int8 (TinyReptile: f32)"
    )
    error_feedback: bool = setting(
        True, "devices keep the entries not uploaded as a residual (device_agent.round)", True
    )
    # θ_l keeps training (at adapt_lr) during adaptation (the brief's `joint` setting)
    joint: bool = setting(True, "θ_l keeps training during the adaptation steps", True)
    local_init: str = setting("zeros", "how a round re-initialises θ_l: zeros or glorot", True)
    outer_lr: float = setting(1.0, "the server's outer step size β_0 (decays linearly), > 0")
    inner_epochs: int = setting(
        5, "Reptile/FedAvg epochs over a device's stored samples", service=False, why=BENCH_DEVICES
    )
    inner_batch: int = setting(
        10, "Reptile/FedAvg mini-batch size, in samples", service=False, why=BENCH_DEVICES
    )
    eval_every: int = setting(10, "rounds between two points of the learning curve")
    eval_devices: int = setting(20, "validation devices of the learning curve")
    final_devices: int = setting(
        100,
        "test devices of the final figures",
        service=False,
        why="the bench's final measurement (tinymetafed evaluate --devices)",
    )
    # new devices adapt online: one pass over the support set, batch 1; with the split on, the
    # first half of the pass fits the fresh head alone (as a round's reconstruction does)
    eval_epochs: int = setting(1, "passes over a new device's support set when it adapts")
    eval_head_epochs: float = setting(
        0.5, "passes (of the support set) fitting a new device's fresh head alone first"
    )
    # the sample-weighted mean; each update clipped first (clip_recent, device trust), which is
    # the default robust aggregation (benchmarks/hostile.py, docs/trust.md)
    aggregation: str = setting("mean", "how updates are aggregated: mean (sample-weighted)")
    clip_recent: float = setting(
        2.0, "updates clipped to this multiple of the recent median update norm (0: off)"
    )
    # θ_g's length kept within this multiple of its length at the start (bounds.py; 0: off)
    max_model_growth: float = setting(
        3.0, "θ_g's length kept within this multiple of its starting length (0: off, else ≥ 1)"
    )
    # experimental, off by default: each coordinate's mean over the devices that sent it
    # (core/aggregate.py sparse_coverage_mean; server only)
    coverage_mean: bool = setting(
        False, "experimental: each coordinate's mean over the devices that sent it"
    )
    # the server's outer step (core/serveropt.py, docs/algorithm.md): sgd or adam
    server_optimiser: str = setting("sgd", "how the aggregated delta moves θ_g: sgd or adam")
    server_beta1: float = setting(0.9, "adam's first-moment decay, in [0, 1)")
    server_beta2: float = setting(0.99, "adam's second-moment decay, in [0, 1)")
    server_eps: float = setting(1e-3, "adam's denominator floor, > 0")
    # > 0: each clipped update weighed by its device's trust (core/trust.py, docs/trust.md
    # "Device trust"); 0 turns it off
    trust_rate: float = setting(0.02, "device trust's learning rate per update (0: trust off)")
    trust_full: float = setting(0.2, "agreement at which a device earns full trust")
    # a device's k-th update counts min(1, k / trust_probation) of its weight; an update of
    # weight w < 1 is clipped to w × the clip bound with trust_clip (bounds.py)
    trust_probation: int = setting(3, "updates a newcomer needs for full weight (whole, ≥ 1)")
    trust_clip: bool = setting(True, "an update of trust weight w < 1 clipped to w × the bound")
    rounds: int = setting(1000, "rounds of a session", use_case=True)
    recon_samples: int = setting(
        10, "samples a device streams to reconstruct θ_l each round", True, use_case=True
    )
    adapt_samples: int = setting(
        20, "samples a device streams for the adaptation steps each round", True, use_case=True
    )
    recon_lr: float = setting(
        0.05, "per-sample rate of θ_l's reconstruction (and a new head's), > 0", True, use_case=True
    )
    adapt_lr: float = setting(
        0.01, "per-sample rate of the adaptation steps, > 0", True, use_case=True
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))
        self._check()

    def _check(self) -> None:
        """ValueError naming the first setting out of its range."""
        _probation(self.trust_probation)
        growth = self.max_model_growth
        if not (growth == 0 or 1 <= growth < math.inf):
            raise ValueError(
                "max_model_growth must be 0 (off) or a number of at least 1, got %g" % growth
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                "aggregation %r is unknown: %s" % (self.aggregation, ", ".join(AGGREGATIONS))
            )
        for key in ("values", "model_values"):
            if getattr(self, key) not in VALUE_ENCODINGS:
                raise ValueError(
                    "%s %r is unknown: %s" % (key, getattr(self, key), ", ".join(VALUE_ENCODINGS))
                )
        if self.local_init not in LOCAL_INITS:
            raise ValueError(
                "local_init %r is unknown: %s" % (self.local_init, ", ".join(LOCAL_INITS))
            )
        if not 0 < self.top_p <= 100:
            raise ValueError("top_p must be in (0, 100], got %g" % self.top_p)
        for key in ("outer_lr", "recon_lr", "adapt_lr"):
            rate = getattr(self, key)
            if not (0 < rate < math.inf):
                raise ValueError("%s must be a positive number, got %g" % (key, rate))
        ServerOptimiser(
            self.server_optimiser, self.server_beta1, self.server_beta2, self.server_eps
        ).check()

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TrainingSettings:
        """Settings from a mapping over the defaults: ValueError naming an unknown key, a
        removed setting away from its old default ("removed setting key=value", as
        drop_removed), or a value of the wrong type or out of range (a removed value of a kept
        setting, REMOVED_VALUES, is named as unknown by its range check); removed settings at
        their old defaults are dropped."""
        kept = drop_removed({k: v for k, v in d.items() if k not in REMOVED_VALUES})
        kept.update({k: v for k, v in d.items() if k in REMOVED_VALUES})
        for key in sorted(kept):
            if key not in FIELDS:
                raise ValueError(
                    "unknown training setting %r; known: %s" % (key, ", ".join(sorted(FIELDS)))
                )
        return cls(**kept)

    def replace(self, **changes: object) -> TrainingSettings:
        """A copy with `changes`, checked as `from_dict` does."""
        return self.from_dict({**self.as_dict(), **changes})

    def as_dict(self) -> dict:
        """Every setting by name, in declaration order (what dict-based code reads)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = {f.name: f for f in fields(TrainingSettings)}
"""The TrainingSettings fields by name."""

TYPES: dict[str, type] = {
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
}


DEVICE_SETTINGS = tuple(name for name, f in FIELDS.items() if f.metadata.get("device"))
"""The settings every round command carries to the devices (the fields flagged `device`), in
their declared order: `Strategy.round_command` is built from this list."""


def field_type(key: str) -> type:
    """The type (bool, int, float or str) of setting `key`."""
    return TYPES[str(FIELDS[key].type)]


def defaults() -> dict:
    """Every setting at its default."""
    return TrainingSettings().as_dict()


def _probation(value: object) -> int:
    """`trust_probation` checked: a whole number of at least 1 (ValueError otherwise)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ValueError("trust_probation must be a whole number of updates, got %r" % (value,))
    if value < 1:
        raise ValueError("trust_probation must be at least 1 (1: none), got %r" % (value,))
    return int(value)


def _coerce(key: str, value: object) -> object:
    """`value` as setting `key`'s type: a bool stays a bool, a whole number becomes an int, a
    number a float; ValueError naming the setting otherwise (text goes through
    parse_setting_value)."""
    kind = field_type(key)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("%s must be true or false, got %r" % (key, value))
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError("%s must be a name, got %r" % (key, value))
    if kind is int and key == "trust_probation":
        return _probation(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        if number and math.isfinite(value) and value == int(value):
            return int(value)
        raise ValueError("%s must be a whole number, got %r" % (key, value))
    if number:
        return float(value)
    raise ValueError("%s must be a number, got %r" % (key, value))


BOOL_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}
"""How a switch may be written after `--set KEY=` (in any case)."""


def parse_setting_value(key: str, text: str) -> object:
    """The value of `--set KEY=TEXT` read by the setting's type (bool from BOOL_WORDS, int,
    float, str); ValueError naming the setting when TEXT is not one. A key that is not a
    setting (unknown, or removed) is read as JSON when it parses, else kept as text, so that
    the caller's check names it."""
    if key not in FIELDS:
        try:
            return json.loads(text)
        except ValueError:
            return text
    kind = field_type(key)
    if kind is bool:
        word = text.strip().lower()
        if word in BOOL_WORDS:
            return BOOL_WORDS[word]
        raise ValueError("%s must be true or false, got %r" % (key, text))
    if kind is str:
        try:
            quoted = json.loads(text)
        except ValueError:
            return text
        return quoted if isinstance(quoted, str) else text
    try:
        number = float(text)
    except ValueError:
        raise ValueError("%s must be a number, got %r" % (key, text)) from None
    if kind is int:
        if not (math.isfinite(number) and number == int(number)):
            raise ValueError("%s must be a whole number, got %r" % (key, text))
        return int(number)
    return number


def check_settings(settings: Mapping[str, object]) -> TrainingSettings:
    """The TrainingSettings of the known keys of a settings dict (others left to the caller),
    checked (ValueError naming the first bad one): what code handed a dict checks it with."""
    return TrainingSettings.from_dict({k: v for k, v in settings.items() if k in FIELDS})
