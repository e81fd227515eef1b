"""Milliseconds and sleeping on every port: MicroPython's ticks API, CPython's monotonic clock."""

import time

_MICRO = hasattr(time, "ticks_ms")


def ticks_ms():
    """Milliseconds from a monotonic clock (wraps on MicroPython; compare with ticks_since)."""
    if _MICRO:
        return time.ticks_ms()
    return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # CPython


def ticks_us():
    """Microseconds from a monotonic clock (wraps on MicroPython; compare with us_since)."""
    if _MICRO:
        return time.ticks_us()
    return int(time.perf_counter() * 1000000)  # type: ignore[attr-defined]  # CPython


def ticks_since(start):
    """Milliseconds elapsed since `start` (a ticks_ms value)."""
    if _MICRO:
        return time.ticks_diff(time.ticks_ms(), start)
    return ticks_ms() - start


def us_since(start):
    """Microseconds elapsed since `start` (a ticks_us value)."""
    if _MICRO:
        return time.ticks_diff(time.ticks_us(), start)
    return ticks_us() - start


def sleep_ms(ms):
    """Sleep for ms milliseconds."""
    if _MICRO:
        time.sleep_ms(ms)
    else:
        time.sleep(ms / 1000.0)
