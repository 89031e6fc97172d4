"""The functions every tool runs. Shipped by value (like a notebook's functions)."""

from __future__ import annotations

import time


def inc(x: int) -> int:
    return x + 1


def nap(x: int) -> int:
    time.sleep(0.01)
    return x


def plus_one(a):  # noqa: ANN001, ANN201 - a NumPy array (NumPy is not imported here)
    return a + 1


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
