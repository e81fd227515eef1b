# TinyMetaFed agent entry point on a MicroPython board (ESP32, Raspberry Pi Pico W, ...).
# Reads config.json, joins Wi-Fi when the board has it, then runs the agent forever
# (or for config "max_rounds" rounds). With a "sleep" block the board instead runs one wake
# (device_agent.wake: a sensor reading, and a training wake when due, Wi-Fi joined only then)
# and deep-sleeps; the timer's reset runs this file again. Copied onto the board by
# `tinymetafed device bundle`.
import gc
import time

if hasattr(gc, "threshold"):
    gc.threshold(8192)  # collect while modules compile, as device_agent.run and .wake do

from device_agent.config import load_config  # noqa: E402

try:
    import network
except ImportError:  # the unix port (tests, simulation) has no Wi-Fi to join
    network = None


def join_wifi(wifi, timeout_ms=30000):
    """Connect the station interface; returns when connected or raises OSError."""
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(wifi["ssid"], wifi["password"])
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise OSError("wifi: could not join %s" % wifi["ssid"])
            time.sleep_ms(200)
    print("wifi", wlan.ifconfig()[0])


config = load_config("config.json")
if config.get("sleep"):
    from device_agent import wake

    join = None
    if network is not None and config.get("wifi"):
        join = lambda: join_wifi(config["wifi"])  # noqa: E731
    wake.auto_wake(config, join)
    wake.deep_sleep(1000 * config["sleep"]["sense_every_s"])
else:
    from device_agent import run

    if network is not None and config.get("wifi"):
        join_wifi(config["wifi"])
    run.run_config(config, config.get("max_rounds"))
