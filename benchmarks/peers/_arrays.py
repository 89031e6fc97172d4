"""Scenario s9's data: ``n9`` NumPy arrays of ``mb9`` MB (float64) in, as many out.

Every tool maps ``_funcs.plus_one`` over the same arrays (array ``i`` is all
``i``) and is checked the same way; throughput is the bytes moved, in and out,
per second of the whole map (MB = 2**20 bytes).
"""

from __future__ import annotations

from typing import Any

MB = 1 << 20


def make(params: dict[str, Any]) -> list[Any]:
    import numpy as np

    n, mb = int(params.get("n9", 40)), float(params.get("mb9", 8))
    return [np.full(int(mb * MB) // 8, float(i)) for i in range(n)]


def check(arrays: list[Any], out: list[Any]) -> None:
    if len(out) != len(arrays):
        raise RuntimeError(f"{len(out)} results for {len(arrays)} arrays")
    for i, (a, b) in enumerate(zip(arrays, out)):
        if b.shape != a.shape or b.dtype != a.dtype or b[0] != i + 1 or b[-1] != i + 1:
            raise RuntimeError(f"wrong result for array {i}")


def moved_mb(arrays: list[Any]) -> float:
    """MB in and out of one map over ``arrays``."""
    return 2 * sum(a.nbytes for a in arrays) / MB
