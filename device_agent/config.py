"""The agent's configuration: a JSON file on the board (or a dict), merged over defaults.

{"device_id": "esp32-kitchen-1",            required; also the broker user name
 "fleet": "default", "prefix": "tinymetafed",
 "broker": {"host": "192.0.2.10", "port": 1883, "user": null, "password": null,
            "keepalive": 30, "ssl": false,
            "ca_file": null},                 the broker's CA (PEM or DER file): with "ssl" the
                                              broker's certificate and name are verified; a
                                              board (MicroPython) needs it to use TLS
 "use_case": "sine",                          picks the default model (device_agent.specs)
 "spec": null,                                or an explicit model spec
 "data": {"kind": "file", "path": "samples.csv"},   or {"kind": "synthetic", "seed": 1}
 "board": "esp32", "energy_profile": "nrf52840",
 "max_model_bytes": 65536,
 "telemetry_every": 1,                        a finished round's telemetry every this many
                                              rounds (0: none); ~0.4 KB on the radio each
 "hmac_key": null,                            hex; signs updates (HMAC-SHA256) and, once set,
                                              requires the service's signature on commands
 "wifi": {"ssid": "...", "password": "..."},   boards only (deploy/board/main.py)
 "sleep": null,                               a device that deep-sleeps between wakes
                                              (device_agent.wake, docs/device.md "Sleeping
                                              between wakes"), e.g.
          {"train_every_s": 3600,             a training wake this often (connects, trains)
           "sense_every_s": 60,               a sensor wake this often (one sample, no radio)
           "ring": 32,                        samples kept between training wakes (1..4096)
           "state": "tmf_state.bin",          the flash state file (rewritten atomically)
           "ring_file": "tmf_ring.bin",       the sensor ring's file
           "order_ms": 5000,                  how long a training wake waits for its work order
           "receipt_ms": 2000,                ... and, after its upload, for the receipt
           "halt_after_write": false},        tests only: stop right after the state write
 "battery": null}                             e.g. {"mah": 2000, "volts": 3.7, "usable": 0.8}:
                                              the device's cell (capacity, nominal voltage,
                                              usable fraction), stated in its birth: the
                                              service projects its battery life from it
"""

import json
import sys

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
    "telemetry_every": 1,
    "hmac_key": None,
    "wifi": None,
}
MIN_KEY_BYTES = 16
"""The shortest `hmac_key` accepted, in bytes (32 random bytes, 64 hex digits, are usual)."""

BROKER_DEFAULTS = {
    "host": "127.0.0.1",
    "port": 1883,
    "user": None,
    "password": None,
    "keepalive": 30,
    "ssl": False,
    "ca_file": None,
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
    every = cfg["telemetry_every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise AgentConfigError("telemetry_every must be a whole number of rounds (0: none)")
    check_security(cfg, sys.implementation.name)
    if cfg.get("sleep") is not None or cfg.get("battery") is not None:
        # a sleeping device's blocks, checked by a module an always-on agent never loads
        from device_agent.wakeconfig import check_wake_config

        try:
            check_wake_config(cfg)
        except ValueError as exc:
            raise AgentConfigError(str(exc)) from None
    return cfg


def check_security(cfg, implementation):
    """Refuse TLS that could not verify the broker, and a key that is not hex or too short.

    On MicroPython (`implementation`) there is no system CA store: "ssl" needs "ca_file". CPython
    without one verifies against the system's CAs.
    """
    broker = cfg["broker"]
    if broker["ssl"] and not broker["ca_file"] and implementation == "micropython":
        raise AgentConfigError("broker.ssl needs broker.ca_file (the CA of the broker's cert)")
    key = cfg["hmac_key"]
    if key is None:
        return
    try:
        size = len(bytes.fromhex(key))
    except (TypeError, ValueError):
        raise AgentConfigError("hmac_key must be hex") from None
    if size < MIN_KEY_BYTES:
        raise AgentConfigError("hmac_key must be at least %d bytes" % MIN_KEY_BYTES)


def load_config(path):
    """Read a JSON config file and check it."""
    with open(path) as f:
        try:
            values = json.load(f)
        except ValueError:
            raise AgentConfigError("%s is not valid JSON" % path) from None
    return make_config(values)
