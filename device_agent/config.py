"""The agent's configuration: a JSON file on the board (or a dict), merged over defaults.

{"device_id": "esp32-kitchen-1",            required; also the broker user name
 "fleet": "default", "prefix": "tinymetafed",
 "broker": {"host": "192.0.2.10", "port": 1883, "user": null, "password": null,
            "keepalive": 30, "ssl": false},
 "use_case": "sine",                          picks the default model (device_agent.specs)
 "spec": null,                                or an explicit model spec
 "data": {"kind": "file", "path": "samples.csv"},   or {"kind": "synthetic", "seed": 1}
 "board": "esp32", "energy_profile": "nrf52840",
 "max_model_bytes": 65536,
 "hmac_key": null,                            hex; signs updates (HMAC-SHA256), optional
 "wifi": {"ssid": "...", "password": "..."}}   boards only (deploy/board/main.py)
"""

import json

from device_agent.topics import check_name

DEFAULTS = {
    "fleet": "default",
    "prefix": "tinymetafed",
    "use_case": "sine",
    "spec": None,
    "data": {"kind": "synthetic", "seed": 1},
    "board": None,
    "energy_profile": "nrf52840",
    "max_model_bytes": 65536,
    "max_rounds": None,
    "hmac_key": None,
    "wifi": None,
}
BROKER_DEFAULTS = {
    "host": "127.0.0.1",
    "port": 1883,
    "user": None,
    "password": None,
    "keepalive": 30,
    "ssl": False,
}


class AgentConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


def make_config(values):
    """Defaults merged with `values` (a dict), checked; returns a new dict."""
    cfg = dict(DEFAULTS)
    cfg.update(values)
    broker = dict(BROKER_DEFAULTS)
    broker.update(values.get("broker") or {})
    cfg["broker"] = broker
    if not cfg.get("device_id"):
        raise AgentConfigError("device_id is required")
    try:
        check_name("device_id", cfg["device_id"])
        check_name("fleet", cfg["fleet"])
    except ValueError as exc:
        raise AgentConfigError(str(exc)) from None
    if not isinstance(broker["port"], int) or not 0 < broker["port"] < 65536:
        raise AgentConfigError("broker.port must be an integer port")
    return cfg


def load_config(path):
    """Read a JSON config file and check it."""
    with open(path) as f:
        try:
            values = json.load(f)
        except ValueError:
            raise AgentConfigError("%s is not valid JSON" % path) from None
    return make_config(values)
