"""What differs between MicroPython and CPython, in one place.

`micropython.native` compiles a function to machine code on ports with the native emitter
(unix, esp32, rp2, nrf...): about 20 % faster convolution steps on the unix port. MicroPython's
compiler recognises the decorator by name, so on CPython a stand-in with a no-op `native` keeps
the same source importable. For a port without the native emitter, `tinymetafed device bundle
--plain` strips the decorators.
"""

try:
    import micropython
except ImportError:

    class micropython:  # type: ignore[no-redef]  # noqa: N801 - mirrors the module's name
        """CPython stand-in: `@micropython.native` leaves the function as it is."""

        @staticmethod
        def native(f):
            return f
