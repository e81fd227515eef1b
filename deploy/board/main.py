# TinyMetaFed agent entry point on a MicroPython board (ESP32, Raspberry Pi Pico W, ...).
# Reads config.json, joins Wi-Fi when the board has it, then runs the agent forever
# (or for config "max_rounds" rounds). Copied onto the board by `tinymetafed device bundle`.
import time

from device_agent import run
from device_agent.config import load_config

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
if network is not None and config.get("wifi"):
    join_wifi(config["wifi"])
run.run_config(config, config.get("max_rounds"))
