"""Energy estimates from documented board profiles: compute time from MACs, radio from bytes.

energy = supply_V · (I_cpu · t_compute + I_tx · t_tx + I_rx · t_rx), with
t_compute = MACs · cycles_per_mac / f_cpu and t_tx/rx = 8 · bytes / radio bit rate.

Figures and their sources:
- nrf52840 (default; the class of board TinyMetaFed was evaluated on): Nordic Semiconductor,
  "nRF52840 Product Specification" v1.7: 64 MHz Cortex-M4F; CPU running CoreMark from flash with
  cache and DC/DC at 3 V: 52 µA/MHz, i.e. 3.3 mA at 64 MHz; radio TX at 0 dBm with DC/DC: 4.8 mA;
  radio RX at 1 Mbit/s BLE with DC/DC: 4.6 mA; BLE 1 Mbit/s PHY.
- esp32: Espressif, "ESP32 Series Datasheet" v4.x: 240 MHz, modem-sleep dual-core 30-68 mA (midpoint
  49 mA used); Wi-Fi TX 802.11g 54 Mbit/s at +16 dBm: 190 mA; RX 802.11b/g/n: 95-100 mA (100 mA
  used); 3.3 V supply.
Assumptions (ours, not datasheet): 4 CPU cycles per float32 multiply-accumulate (compiled
kernel on an FPU core: two loads, one fused multiply-add, loop overhead); radio time counts the
payload bytes at the PHY bit rate, without link-layer overhead or connection idle time.
"""

PROFILES = {
    "nrf52840": {
        "supply_v": 3.0,
        "cpu_hz": 64.0e6,
        "cpu_ma": 3.3,
        "tx_ma": 4.8,
        "rx_ma": 4.6,
        "radio_bps": 1.0e6,
        "cycles_per_mac": 4.0,
    },
    "esp32": {
        "supply_v": 3.3,
        "cpu_hz": 240.0e6,
        "cpu_ma": 49.0,
        "tx_ma": 190.0,
        "rx_ma": 100.0,
        "radio_bps": 54.0e6,
        "cycles_per_mac": 4.0,
    },
}
DEFAULT_PROFILE = "nrf52840"


def profile(name=DEFAULT_PROFILE):
    """The named board profile (KeyError lists nothing; callers check names with PROFILES)."""
    return PROFILES[name]


def compute_seconds(macs, board):
    """Estimated time to execute `macs` multiply-accumulates on the board."""
    return macs * board["cycles_per_mac"] / board["cpu_hz"]


def energy_mj(macs, bytes_up, bytes_down, board):
    """Estimated energy in millijoules of computing `macs` and sending/receiving the bytes."""
    t_cpu = compute_seconds(macs, board)
    t_tx = 8.0 * bytes_up / board["radio_bps"]
    t_rx = 8.0 * bytes_down / board["radio_bps"]
    amp_s = (board["cpu_ma"] * t_cpu + board["tx_ma"] * t_tx + board["rx_ma"] * t_rx) / 1000.0
    return board["supply_v"] * amp_s * 1000.0
