"""Scenario s8's work: ``n8`` calls of skewed durations, and how well a tool packs them.

Durations are lognormal (median 2 ms, sigma 1.5, capped at 0.5 s) from a fixed
seed, so every tool sleeps the same list (``_funcs.sleep_for``); a few calls
take a hundred times the median. On 2 processes no schedule ends before
``max(sum / 2, longest)``: the score is that bound as a share of the measured
makespan (from the map to the last result in the client), 100% being ideal.
"""

from __future__ import annotations

import math
import random
from typing import Any

MEDIAN, SIGMA, CAP, SEED = 0.002, 1.5, 0.5, 8


def durations(params: dict[str, Any]) -> list[float]:
    rng = random.Random(int(params.get("seed8", SEED)))
    n = int(params.get("n8", 1000))
    return [min(CAP, rng.lognormvariate(math.log(MEDIAN), SIGMA)) for _ in range(n)]


def ideal(work: list[float], processes: int = 2) -> float:
    """The lower bound of any schedule's makespan on ``processes`` processes."""
    return max(sum(work) / processes, max(work))


def check(work: list[float], out: list[Any]) -> None:
    if out != work:
        raise RuntimeError("wrong results: each call returns its duration")


def score(work: list[float], seconds: float) -> dict[str, Any]:
    """The share of the ideal (percent) and what it was computed from, for ``record``."""
    best = ideal(work)
    return {
        "value": 100 * best / seconds,
        "seconds": seconds,
        "ideal": best,
        "sum": sum(work),
        "longest": max(work),
        "calls": len(work),
    }
