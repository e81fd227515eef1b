"""The typed training settings (broker_service/core/settings.py): declared once, checked once."""

from __future__ import annotations

import dataclasses

import pytest

from broker_service.core.hyperparams import COMMON, USE_CASE_SETTINGS, settings_for
from broker_service.core.settings import (
    FIELDS,
    TrainingSettings,
    field_type,
    parse_setting_value,
)
from device_agent.round import DEFAULTS


def test_every_field_has_help_a_default_and_flags():
    for name, f in FIELDS.items():
        assert f.default is not dataclasses.MISSING, name
        assert f.metadata["help"].strip() and "\n" not in f.metadata["help"], name
        assert isinstance(f.metadata["device"], bool) and isinstance(f.metadata["service"], bool)
        assert f.metadata["service"] or f.metadata["why"], name
        assert isinstance(f.default, field_type(name)), name


def test_common_is_the_dataclass_defaults_and_the_use_cases_name_only_fields():
    defaults = TrainingSettings().as_dict()
    assert {k: v for k, v in defaults.items() if not FIELDS[k].metadata["use_case"]} == COMMON
    for own in USE_CASE_SETTINGS.values():
        keys = set(own) - {"quick"}
        assert keys <= set(FIELDS) and set(own["quick"]) <= set(FIELDS)
        assert {k for k, f in FIELDS.items() if f.metadata["use_case"]} <= keys


def test_settings_for_has_every_key_in_declaration_order():
    for name in USE_CASE_SETTINGS:
        for quick in (False, True):
            assert list(settings_for(name, quick=quick)) == list(FIELDS)
    assert settings_for("sine", rounds=None)["rounds"] == USE_CASE_SETTINGS["sine"]["rounds"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"top_pp": 5.0}, "unknown training setting 'top_pp'"),
        ({"residual_decay": 0.9}, "removed setting residual_decay=0.9"),
        ({"aggregation": "median"}, "aggregation 'median' is unknown: mean"),
        ({"server_optimiser": "yogi"}, "server_optimiser 'yogi' is unknown"),
        ({"trust_probation": 0}, "trust_probation must be at least 1"),
        ({"trust_probation": 2.5}, "trust_probation must be a whole number"),
        ({"max_model_growth": 0.5}, "max_model_growth must be 0 .off. or a number of at least 1"),
        ({"model_values": "f64"}, "model_values 'f64' is unknown: f32, f16, int8"),
        ({"values": "bf16"}, "values 'bf16' is unknown"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 100\]"),
        ({"top_p": 101.0}, r"top_p must be in \(0, 100\]"),
        ({"recon_lr": 0.0}, "recon_lr must be a positive number"),
        ({"outer_lr": -1.0}, "outer_lr must be a positive number"),
        ({"joint": 1}, "joint must be true or false"),
        ({"cohort": "5"}, "cohort must be a whole number"),
        ({"server_eps": 0.0}, "server_eps must be a positive number"),
    ],
)
def test_validation_names_the_setting(change, message):
    with pytest.raises(ValueError, match=message):
        TrainingSettings().replace(**change)
    with pytest.raises(ValueError, match=message):
        TrainingSettings.from_dict(change)


def test_removed_settings_at_their_old_default_are_dropped_and_types_coerced():
    s = TrainingSettings.from_dict({"rotations": False, "cohort": 3.0, "top_p": 5})
    assert s.cohort == 3 and isinstance(s.cohort, int)
    assert s.top_p == 5.0 and isinstance(s.top_p, float)
    assert s.replace(trust_rate=0).trust_rate == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.cohort = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    "key,text,value",
    [
        ("top_p", "5", 5.0),
        ("cohort", "3", 3),
        ("trust_probation", "3.0", 3),
        ("joint", "false", False),
        ("coverage_mean", "on", True),
        ("model_values", "f16", "f16"),
        ("model_values", '"f32"', "f32"),
        ("top_pp", "5", 5),  # not a setting: read as JSON, for the caller to name
        ("rotations", "true", True),
    ],
)
def test_set_values_are_read_by_the_field_type(key, text, value):
    got = parse_setting_value(key, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "key,text", [("cohort", "2.5"), ("cohort", "many"), ("joint", "maybe"), ("top_p", "x")]
)
def test_bad_set_values_are_named(key, text):
    with pytest.raises(ValueError, match=key):
        parse_setting_value(key, text)


def test_the_agent_defaults_agree_with_the_device_settings():
    device = {k: f.default for k, f in FIELDS.items() if f.metadata["device"]}
    shared = set(device) & set(DEFAULTS)
    assert shared == set(device)  # every device setting has an agent default
    assert {k: device[k] for k in shared} == {k: DEFAULTS[k] for k in shared}


def test_service_options_share_a_name_with_a_training_setting_only_when_they_mean_it():
    """A serve option named like a training setting is one of SESSION_OPTIONS, which default to
    the use case's value (None) and reach the service's settings as overrides."""
    from dataclasses import fields as dc_fields

    from broker_service.core.settings import FIELDS
    from broker_service.server.config import SESSION_OPTIONS, ServiceConfig, session_options

    shared = {f.name for f in dc_fields(ServiceConfig)} & set(FIELDS)
    assert shared == set(SESSION_OPTIONS)
    assert all(getattr(ServiceConfig(), name) is None for name in SESSION_OPTIONS)
    assert session_options(ServiceConfig(eval_every=7, cohort=3)) == {"eval_every": 7, "cohort": 3}
