"""A sleeping device's config blocks, "sleep" and "battery" (device_agent.config documents
them), merged over their defaults and checked. Loaded by device_agent.config only for a config
that has one of them: an always-on agent's heap never holds this module."""

SLEEP_DEFAULTS = {
    "train_every_s": 3600,
    "sense_every_s": 60,
    "ring": 32,
    "state": "tmf_state.bin",
    "ring_file": "tmf_ring.bin",
    "order_ms": 5000,
    "receipt_ms": 2000,
    "halt_after_write": False,
}
MAX_RING = 4096
"""The most samples a sensor ring keeps (its file is `ring` fixed-size records)."""

BATTERY_DEFAULTS = {"mah": 2000, "volts": 3.7, "usable": 0.8}


def check_wake_config(cfg):
    """Replace cfg's "sleep" and "battery" blocks (when not None) by their checked, complete
    versions; ValueError names the key at fault."""
    if cfg.get("sleep") is not None:
        cfg["sleep"] = check_sleep(cfg["sleep"])
    if cfg.get("battery") is not None:
        cfg["battery"] = check_battery(cfg["battery"])


def _whole(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_sleep(values):
    """The "sleep" block merged over SLEEP_DEFAULTS and checked: whole seconds and milliseconds
    of at least 1, a ring of 1 to MAX_RING samples, file names as strings."""
    if not isinstance(values, dict):
        raise ValueError("sleep must be an object")
    sleep = dict(SLEEP_DEFAULTS)
    sleep.update(values)
    for key in ("train_every_s", "sense_every_s", "order_ms", "receipt_ms"):
        if not _whole(sleep[key], 1, 0xFFFFFFFF):
            raise ValueError("sleep.%s must be a whole number of at least 1" % key)
    if not _whole(sleep["ring"], 1, MAX_RING):
        raise ValueError("sleep.ring must be a whole number in [1, %d]" % MAX_RING)
    for key in ("state", "ring_file"):
        if not isinstance(sleep[key], str) or not sleep[key]:
            raise ValueError("sleep.%s must be a file name" % key)
    if not isinstance(sleep["halt_after_write"], bool):
        raise ValueError("sleep.halt_after_write must be true or false")
    return sleep


def check_battery(values):
    """The "battery" block merged over BATTERY_DEFAULTS: a capacity (mAh) and a voltage above 0,
    a usable fraction in (0, 1]."""
    if not isinstance(values, dict):
        raise ValueError("battery must be an object")
    battery = dict(BATTERY_DEFAULTS)
    battery.update(values)
    for key in ("mah", "volts", "usable"):
        value = battery[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e9:
            raise ValueError("battery.%s must be a number above 0" % key)
    if battery["usable"] > 1:
        raise ValueError("battery.usable must be a fraction in (0, 1]")
    return battery
