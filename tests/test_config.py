"""Service configuration: defaults < TOML file < environment < flags, with clear errors."""

import pytest

from broker_service.server.config import ConfigError, load_config


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[broker]\nurl = "mqtt://file:1000"\n[service]\nrounds = 7\ncohort = 2\n'
        'fleet = "from-file"\n[settings]\ntop_p = 5.0\n'
    )
    env = {"TINYMETAFED_ROUNDS": "9", "TINYMETAFED_FLEET": "from-env"}
    cfg = load_config(str(path), {"fleet": "from-flag", "settings": {"recon_lr": 0.1}}, env)
    assert cfg.broker == "mqtt://file:1000" and cfg.cohort == 2
    assert cfg.rounds == 9 and cfg.fleet == "from-flag"
    assert cfg.settings == {"top_p": 5.0, "recon_lr": 0.1}
    assert load_config(None, None, {}).broker == "mqtt://127.0.0.1:1883"


@pytest.mark.parametrize(
    "text,env,message",
    [
        ("colour = 1\n", {}, "unknown keys colour"),
        ("rounds = \n", {}, "config file"),
        ("", {"TINYMETAFED_ROUNDS": "many"}, "not a number"),
        ('broker = "http://x"\n', {}, "mqtt://host:port"),
        ("quorum = 1.5\n", {}, "quorum"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, env, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path), None, env)
