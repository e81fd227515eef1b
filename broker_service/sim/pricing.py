"""The price a learning benchmark's energy figures were computed at, recorded in its document.

A simulated device update costs compute(MACs) + radio(its MQTT messages) (sim.simulation):
compute is linear in the MACs, so an energy figure re-priced with another compute model moves by
its MACs × the change in the energy of a MAC, while its radio part, counted from the payloads the
run really sent, stays. A bench document records in "energy_model" the board, the kernel, the
millijoules of a MAC it was priced at and a radio check (the radio model's energy of three
reference exchanges): benchmarks/reprice.py re-prices the compute part when device_agent/energy.py
is recalibrated, and refuses when the radio model moved, which only a re-run re-prices.
"""

from __future__ import annotations

from device_agent import energy

RADIO_REFERENCE = ((100, 0), (0, 5000), (1500, 1500))
"""(payload bytes up, payload bytes down) of the radio check's exchanges (energy.radio_mj with
the default messages: one update up; the model, or the model and the command, down)."""

LEGACY = {
    "board": "nrf52840",
    "kernel": "micropython",
    "cycles_per_mac": 4300.0,
    "mj_per_mac": 0.00066515625,
    "radio_reference_mj": [0.0631776, 0.8299055999999999, 0.5974704],
}
"""The price of a document without an "energy_model": the model before the instruction counts
(device_agent/energy.py until commit a2694df), 4300 cycles per MAC of the MicroPython agent on
the nRF52840 (64 MHz, 3.3 mA at 3.0 V: 3.0 · 3.3 · 4300 / 64e6 mJ a MAC), with the radio model
that is still today's (the same three reference exchanges to the last bit)."""


def radio_reference(board: str) -> list[float]:
    """The radio model's energy (mJ) of the RADIO_REFERENCE exchanges on the board."""
    profile = energy.profile(board)
    return [energy.radio_mj(up, down, profile) for up, down in RADIO_REFERENCE]


def energy_model(board: str = energy.DEFAULT_PROFILE, kernel: str = energy.DEFAULT_KERNEL) -> dict:
    """The record of the price device_agent/energy.py sets now for a device update's work on the
    board with the kernel."""
    profile = energy.profile(board)
    return {
        "board": board,
        "kernel": kernel,
        "cycles_per_mac": energy.cycles_per_mac(profile, kernel),
        "mj_per_mac": energy.compute_mj(1, profile, kernel),
        "radio_reference_mj": radio_reference(board),
    }


def recorded(doc: dict) -> dict:
    """The price a document's energy figures carry: its "energy_model", else LEGACY."""
    return doc.get("energy_model") or LEGACY
