"""The `micropython` name for code that runs on both runtimes: the real module on MicroPython, a
stand-in on CPython.

layers.py marks its kernels `@micropython.native`, which compiles a function to machine code on
ports with the native emitter (unix, esp32, rp2, nrf...); on the unix port it made training
steps faster (docs/appendix.md, the agent under MicroPython). MicroPython's compiler recognises
the decorator by name; CPython only needs the name to exist, so the stand-in's `native` returns
the function unchanged. For a port without the native emitter, `tinymetafed device bundle
--plain` strips the decorators. The other differences between the runtimes live where they are
used (clock.py, transport.py, reports.py, bench.py).
"""

try:
    import micropython
except ImportError:

    class micropython:  # type: ignore[no-redef]  # noqa: N801 - mirrors the module's name
        """CPython stand-in: `@micropython.native` leaves the function as it is."""

        @staticmethod
        def native(f):
            return f
