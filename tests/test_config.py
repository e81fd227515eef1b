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


def test_the_asynchronous_options_and_their_defaults():
    cfg = load_config(None, None, {})
    assert (cfg.mode, cfg.buffer, cfg.max_staleness) == ("rounds", None, 8)
    assert (cfg.staleness_power, cfg.step_timeout) == (0.5, 60.0)
    env = {"TINYMETAFED_MODE": "async", "TINYMETAFED_BUFFER": "8"}
    cfg = load_config(None, {"max_staleness": 3, "staleness_power": 1.0}, env)
    assert (cfg.mode, cfg.buffer, cfg.max_staleness, cfg.staleness_power) == ("async", 8, 3, 1.0)


@pytest.mark.parametrize(
    "text,env,message",
    [
        ("colour = 1\n", {}, "unknown keys colour"),
        ("rounds = \n", {}, "config file"),
        ("", {"TINYMETAFED_ROUNDS": "many"}, "not a number"),
        ('broker = "http://x"\n', {}, "mqtt://host:port"),
        ("quorum = 1.5\n", {}, "quorum"),
        ('mode = "sync"\n', {}, "mode must be one of rounds, async, got 'sync'"),
        ("buffer = 0\n", {}, "buffer must be at least 1"),
        ("", {"TINYMETAFED_MAX_STALENESS": "-1"}, "max_staleness must be 0 or more"),
        ("staleness_power = -0.5\n", {}, "staleness_power must be in"),
        ("", {"TINYMETAFED_STALENESS_POWER": "nan"}, "staleness_power must be in"),
        ("step_timeout = 0\n", {}, "step_timeout must be in"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, env, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path), None, env)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"eval_every": 3}, "eval_every is a service option: use --eval-every"),
        ({"rounds": 3}, "rounds is a service option: use --rounds"),
        ({"cohort": 2}, "cohort is a service option: use --cohort"),
        ({"seed": 1}, "seed is a service option: use --seed"),
        ({"final_devices": 50}, "final_devices is not used by the service"),
        ({"inner_epochs": 2}, "inner_epochs is not used by the service"),
        ({"top_pp": 5}, "unknown training setting 'top_pp'"),
    ],
)
def test_a_setting_the_service_would_ignore_is_named(tmp_path, settings, message):
    with pytest.raises(ConfigError, match="--set: " + message):
        load_config(None, {"settings": settings}, {})
    key, value = next(iter(settings.items()))
    path = tmp_path / "c.toml"
    path.write_text("[settings]\n%s = %s\n" % (key, value))
    with pytest.raises(ConfigError, match=r"\[settings\]: " + message):
        load_config(str(path), None, {})


def test_the_service_settings_are_those_its_strategies_send_and_read():
    from broker_service.core.hyperparams import settings_for
    from broker_service.core.strategies import TinyMetaFed
    from broker_service.server.config import service_settings

    command = TinyMetaFed(settings_for("sine")).round_command(0, 0)
    sent = set(command) - {"round", "version", "split", "seed"}
    read_elsewhere = {"outer_lr", "aggregation"}
    read_elsewhere |= {"clip_recent", "max_model_growth"}  # the influence bounds (bounds.py)
    read_elsewhere |= {"trust_rate", "trust_full", "trust_probation", "trust_clip"}  # trust
    read_elsewhere |= {"eval_epochs", "eval_head_epochs"}  # the few-shot evaluation
    read_elsewhere |= {"model_values"}  # the encoding of the MODEL it publishes
    # the server's outer step (core/serveropt.py, core/aggregate.py)
    read_elsewhere |= {"coverage_mean", "server_optimiser", "server_beta1", "server_beta2"}
    read_elsewhere |= {"server_eps"}
    assert service_settings() == sent | read_elsewhere
    cfg = load_config(None, {"settings": {"top_p": 5, "clip_recent": 3.0}}, {})
    assert cfg.settings == {"top_p": 5, "clip_recent": 3.0}


@pytest.mark.parametrize(
    "settings,named",
    [
        ({"residual_decay": 0.9}, "residual_decay is a removed setting"),
        ({"head_init": "sgd"}, "head_init is a removed setting"),
        ({"rotations": True}, "rotations is a removed setting"),
        ({"aggregation": "median"}, "aggregation=median is a removed setting value"),
        ({"server_optimiser": "yogi"}, "server_optimiser=yogi is a removed setting value"),
    ],
)
def test_a_removed_setting_is_refused_naming_it(settings, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, {"settings": settings}, {})


def test_types_come_from_the_annotations(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("quorum = 1\nmax_update_norm = 2\n")
    cfg = load_config(str(path), None, {"TINYMETAFED_ROUNDS": "12", "TINYMETAFED_SEED": "3"})
    assert (cfg.quorum, cfg.max_update_norm, cfg.rounds, cfg.seed) == (1.0, 2.0, 12, 3)
    assert isinstance(cfg.quorum, float) and isinstance(cfg.rounds, int)


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"use_case": "sinus"}, "use_case 'sinus' is unknown"),
        ({"algorithm": "fedsgd"}, "algorithm 'fedsgd' cannot be served"),
        ({"algorithm": "no_federation"}, "algorithm 'no_federation' cannot be served"),
        ({"algorithm": "reptile"}, "algorithm 'reptile' cannot be served: its devices train"),
        ({"algorithm": "fedavg"}, "algorithm 'fedavg' cannot be served: its devices train"),
    ],
)
def test_unknown_names_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, flags, {})


def test_data_dir_comes_from_the_variable_every_command_reads():
    assert load_config(env={"TINYMETAFED_DATA": "/data/a"}).data_dir == "/data/a"
    both = {"TINYMETAFED_DATA": "/data/a", "TINYMETAFED_DATA_DIR": "/data/b"}
    assert load_config(env=both).data_dir == "/data/b"
    assert load_config(flags={"data_dir": "/data/c"}, env=both).data_dir == "/data/c"
