"""What a device publishes about itself, as JSON: its presence and its per-round telemetry.

Presence is the retained document on the device's status topic: `birth` ("online", with the
capabilities the service plans with) once a session is open, `offline` as the session's last
will and as the goodbye. Telemetry is one document a round on the telemetry topic: what the round
measured, or why the round was refused or abandoned; `telemetry` stamps the device id on it.
"""

import gc
import json
import sys

from device_agent import codec


def heap_free():
    """Free heap bytes where the port reports it (MicroPython), else None."""
    return gc.mem_free() if hasattr(gc, "mem_free") else None


def heap_used():
    """Allocated heap bytes where the port reports it (MicroPython), else None."""
    return gc.mem_alloc() if hasattr(gc, "mem_alloc") else None


def birth(device_id, board, use_case, plan, model_version, battery=None, energy_profile=None):
    """The "online" presence with this device's capabilities (board None: the platform name);
    a device on a battery (its config's "battery" block) adds it and its energy profile, which
    the service projects its battery life with (docs/metrics.md, "Battery life")."""
    doc = {
        "state": "online",
        "device": device_id,
        "board": board or sys.platform,
        "firmware": "%s %s"
        % (
            sys.implementation.name,
            ".".join(str(v) for v in sys.implementation.version[:3]),
        ),
        "free_heap": heap_free(),
        "use_case": use_case,
        "params": plan.n_params,
        "global_params": plan.n_global,
        "codec": codec.FORMAT_VERSION,
        "values": list(codec.VALUE_NAMES),
        "indices": ["all", "varint", "bitmap"],
        "model_version": model_version,
    }
    if battery is not None:
        doc["energy_profile"] = energy_profile
        doc["battery"] = {
            "mah": battery["mah"],
            "volts": battery["volts"],
            "usable": battery["usable"],
        }
    return json.dumps(doc)


def offline(device_id):
    """The "offline" presence: the last will, and the goodbye of a device that leaves."""
    return json.dumps({"state": "offline", "device": device_id})


def round_status(cmd, key, value):
    """A round's short telemetry: refused (key "error") or abandoned (key "aborted") and why."""
    return {"round": cmd["round"], "version": cmd["version"], key: value}


ENERGY_KERNELS = {"native": "compiled", "python": "micropython"}
"""The energy model's kernel (device_agent.energy.KERNELS) for a Network's `kernels`: the
native module tmf_kernels is priced as "compiled", the Python kernels as "micropython"."""


def energy_kernel(kernels=None):
    """The energy model's name for the kernels a round ran: `kernels` is a Network's ("native"
    or "python"); None takes this process's (device_agent.network.KERNELS), which the agent's
    network uses."""
    if kernels is None:
        from device_agent.network import KERNELS

        kernels = KERNELS
    return ENERGY_KERNELS[kernels]


def round_done(
    cmd, result, compute_ms, heap_peak, bytes_down, energy_profile, rejected, kernels=None
):
    """The telemetry of a finished round; on MicroPython it collects garbage first so heap_free
    is the live heap (CPython reports no heap, and a full collection there would stall every
    thread of a simulated fleet for nothing).

    `result` is a round.RoundResult, `heap_peak` the highest heap seen between samples,
    `bytes_down` the model and command bytes the round needed, `rejected` the agent's counts,
    `kernels` the network's kernels (see energy_kernel). The round's energy is priced with the
    kernels that ran, which the document names ("kernels": "compiled" or "micropython").
    """
    # imported here, once the round's buffers are in place: loading the energy model at start-up
    # fragments the heap that a CNN's buffers need in one piece on a 256 KB board
    from device_agent.energy import energy_mj, profile

    kernel = energy_kernel(kernels)
    up = len(result.payload)
    if hasattr(gc, "mem_free"):
        gc.collect()
    board = profile(energy_profile)
    return {
        "round": cmd["round"],
        "version": cmd["version"],
        "compute_ms": compute_ms,
        "samples": result.samples,
        "macs": result.macs,
        "nnz": result.nnz,
        "loss_before": result.recon_loss if result.recon_loss else result.adapt_loss_first,
        "loss_after": result.adapt_loss_last,
        "adapt_loss": result.adapt_loss,
        "heap_free": heap_free(),
        "heap_peak": heap_peak,
        "bytes_sent": up,
        "bytes_received": bytes_down,
        "energy_mj": energy_mj(result.macs, up, bytes_down, board, kernel),
        "kernels": kernel,
        "rejected": rejected,
    }


def telemetry(device_id, doc):
    """The JSON text of a telemetry document, stamped with its device."""
    doc["device"] = device_id
    return json.dumps(doc)
