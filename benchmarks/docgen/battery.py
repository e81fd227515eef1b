"""Battery life of a device that sleeps (benchmarks/battery.py): days per board, use case and
kernel against the always-connected baselines, what a day's energy goes to, and the flash's
wear."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, figure

BOARD_NAMES = {"nrf52840": "nRF52840", "esp32": "ESP32", "rp2040": "Pico W"}
KERNEL_NAMES = {"micropython": "Python", "compiled": "native"}
PART_NAMES = {
    "sleep": "asleep",
    "sensor": "sensor wakes",
    "wake": "boot",
    "associate": "radio up, associate",
    "connect": "TCP, TLS, MQTT connect",
    "fetch": "model fetch",
    "compute": "round's compute",
    "flash": "state to flash",
    "uplink": "update",
    "receipt": "receipt, status",
    "disconnect": "disconnect",
}


def _days(x: float) -> str:
    return figure(x)


def _years(x: float | None) -> str:
    return NONE if x is None else figure(x)


def battery(doc: dict) -> str:
    """Days on the battery per board, use case and kernel at each wake rate (TLS on), against
    staying connected; the goal; the shares of the goal's day; the flash's wear."""
    rows = [r for r in doc["rows"] if r["tls"]]
    wakes = sorted({r["wakes_per_day"] for r in rows})
    keys = list(dict.fromkeys((r["board"], r["use_case"], r["kernel"]) for r in rows))
    header = ["board", "use case", "kernel"]
    header += ["%d wake%s a day" % (n, "" if n == 1 else "s") for n in wakes]
    header += ["connected (%d round a day)" % wakes[0], "connected, power save"]
    table = []
    for key in keys:
        mine = {
            r["wakes_per_day"]: r for r in rows if (r["board"], r["use_case"], r["kernel"]) == key
        }
        first = mine[wakes[0]]
        table.append(
            [BOARD_NAMES.get(key[0], key[0]), key[1], KERNEL_NAMES.get(key[2], key[2])]
            + [_days(mine[n]["days"]) for n in wakes]
            + [_days(first["connected_days"]), _days(first["power_save_days"])]
        )
    b = doc["battery"]
    g = doc["goal"]
    shares = sorted(g["tls"]["shares"].items(), key=lambda kv: -kv[1])
    goal_line = (
        "The goal: an %s on the battery with one %s round a day and the %s kernels lasts at "
        "least %d days. Modelled: %s days with TLS (%s), %s without; with a self-discharge of "
        "%g %% a month, %s days. Its day with TLS goes to: %s."
        % (
            BOARD_NAMES.get(g["board"], g["board"]),
            g["use_case"],
            KERNEL_NAMES.get(g["kernel"], g["kernel"]).lower().replace("python", "pure-Python"),
            g["days"],
            _days(g["tls"]["days"]),
            "met" if g["tls"]["met"] else "not met",
            _days(g["plain"]["days"]),
            100 * b["self_discharge_per_month"],
            _days(g["tls"]["days_self_discharge"]),
            ", ".join(
                "%s %.0f %%" % (PART_NAMES.get(k, k), 100 * v) for k, v in shares if v >= 0.005
            ),
        )
    )
    top = max(wakes)
    wear = []
    for r in rows:
        if r["wakes_per_day"] != top or r["kernel"] != "micropython":
            continue
        wear.append(
            [
                BOARD_NAMES.get(r["board"], r["board"]),
                r["use_case"],
                "flash" if r["ring_in_flash"] else "memory kept asleep",
                "%d" % r["flash_writes_per_day"],
                "%.1f" % r["flash_erases_per_day"],
                _years(r["flash_wear_years"]),
            ]
        )
    wear_table = markdown_table(
        [
            "board",
            "use case",
            "sample ring in",
            "flash writes a day",
            "blocks erased a day",
            "years to wear out",
        ],
        wear,
    )
    return "\n\n".join(
        [
            markdown_table(header, table),
            "Days on a %g mAh battery at %g V, %.0f %% usable, by `device_agent/battery.py`; TLS "
            "on; %d sensor wakes per training wake (one per sample of a round of %d "
            "reconstruction and %d adaptation samples); every training wake fetches the model. "
            "Always connected: the board's idle current and keepalive pings for the day, with "
            "the same rounds."
            % (
                b["capacity_mah"],
                b["volts"],
                100 * b["usable"],
                doc["round"]["recon_samples"] + doc["round"]["adapt_samples"],
                doc["round"]["recon_samples"],
                doc["round"]["adapt_samples"],
            ),
            goal_line,
            "Flash at %d training wakes a day (pure-Python kernels): the state written once a "
            "training wake, one append a sensor wake when the ring is in flash; years until "
            "littlefs's wear levelling has taken every free block to the flash's endurance "
            "(100,000 erase cycles for the SPI NOR flash of the ESP32 module and the Pico W, "
            "10,000 for the nRF52840's own flash)." % top,
            wear_table,
        ]
    )


BLOCKS = [Block("battery", "Battery life of a device that sleeps", ("battery.json",), battery)]
