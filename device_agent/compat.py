"""Runtime differences the kernels meet: the `micropython` name (the real module on MicroPython,
a stand-in on CPython) and the optional compiled kernels.

layers.py marks its kernels `@micropython.native`, which compiles a function to machine code on
ports with the native emitter (unix, esp32, rp2, nrf...); on the unix port it made training
steps faster (docs/appendix.md, the agent under MicroPython). MicroPython's compiler recognises
the decorator by name; CPython only needs the name to exist, so the stand-in's `native` returns
the function unchanged. For a port without the native emitter, `tinymetafed device bundle
--plain` strips the decorators. The other differences between the runtimes live where they are
used (clock.py, transport.py, reports.py, bench.py).

`native_kernels()` loads the compiled training kernels, the native module `tmf_kernels`
(device_agent/native/, docs/device.md "Compiled kernels"), once: a `tmf_kernels.mpy` on the
import path of a board (its root folder, /lib or a ROMFS at /rom) or of the unix port
(MICROPYPATH). A missing module, one built for another architecture or .mpy version, or one of
another interface leaves the pure-Python kernels in use; `native_status()` says which and why.
"""

from array import array

try:
    import micropython
except ImportError:

    class micropython:  # type: ignore[no-redef]  # noqa: N801 - mirrors the module's name
        """CPython stand-in: `@micropython.native` leaves the function as it is."""

        @staticmethod
        def native(f):
            return f


NATIVE_API = 2
"""The interface of tmf_kernels this agent speaks (the module's `API`; GEO_LEN 13 geometry;
since 2 the whole training step and the error-feedback residual in one call each)."""

_native = {}  # type: dict  # "module", "why" once loaded; "off" after use_native(False)


def _load_native():
    try:
        import tmf_kernels
    except (ImportError, ValueError, OSError, MemoryError) as e:
        return None, "%s: %s" % (type(e).__name__, e)
    api = getattr(tmf_kernels, "API", None)
    if api != NATIVE_API:
        return None, "tmf_kernels speaks API %r, the agent %d" % (api, NATIVE_API)
    return tmf_kernels, ""


def native_kernels():
    """The compiled kernels module, or None when it is missing, will not load, or was turned
    off with use_native(False). Imported on the first call."""
    if "module" not in _native:
        _native["module"], _native["why"] = _load_native()
    if _native.get("off"):
        return None
    return _native["module"]


def native_status():
    """("native" or "python", why the compiled kernels are not used: "" when they are)."""
    module = native_kernels()
    if module is not None:
        return "native", ""
    return "python", "turned off" if _native.get("off") else _native["why"]


def use_native(on):
    """Allow (True, the default) or forbid (False) the compiled kernels in this process: a
    Network built afterwards without `native=` and Top-P% selection follow it."""
    _native["off"] = not on


KIND_CODES = {
    "dense": 1,
    "conv2d": 2,
    "maxpool": 3,
    "avgpool": 4,
    "relu": 5,
    "tanh": 6,
    "flatten": 7,
}
"""Layer kinds as the compiled kernels number them (kernels.h)."""


def layer_geometry(layer):
    """A layer as the compiled kernels take it: array('i') of kind, c, h, w (input), f, oh, ow
    (output), kh, kw, sh, sw (window, strides), w_off, b_off (parameter offsets)."""
    c, h, w = layer.in_shape
    f, oh, ow = layer.out_shape
    dims = [KIND_CODES[layer.kind], c, h, w, f, oh, ow, layer.kh, layer.kw, layer.sh, layer.sw]
    return array("i", dims + [layer.w_off, layer.b_off])
