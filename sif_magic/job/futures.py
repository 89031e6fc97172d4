"""A concurrent.futures.Future per call of a job, resolved as outcomes come.

Threads: made by whichever thread first asks for ``Job.futures`` and resolved
by the thread that folds results (or cancels), or, for values in spill files,
by the read-ahead thread once it read them (``outcomes.ReadAhead``), always
under the owning Job's lock; a Future itself is safe to wait on from any
thread. Owner: the ``Job``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from ..protocol import DONE, TERMINAL
from .aio import CallFuture
from .outcomes import Outcomes


class CallFutures:
    """``futures[i]`` resolves to call ``i``'s value, or fails with its exception
    (awaitable too: ``aio.CallFuture``)."""

    def __init__(self, outcomes: Outcomes, error_of: Callable[[int], BaseException | None]) -> None:
        self.outcomes = outcomes
        self.error_of = error_of
        self.futures: list[concurrent.futures.Future] = [CallFuture() for _ in range(outcomes.n)]
        for f in self.futures:
            f.set_running_or_notify_cancel()
        states, have = outcomes.states, outcomes.have
        for i in range(outcomes.n):
            if states[i] in TERMINAL and have[i]:
                self.resolve(i)

    def resolve(self, i: int) -> None:
        """Call ``i`` has its outcome: settle its future (once)."""
        fut = self.futures[i]
        if fut.done():
            return
        o = self.outcomes
        if o.states[i] == DONE:
            try:
                fut.set_result(o.decoded[i] if o.decoded is not None else o.value(i))
            except Exception as e:  # noqa: BLE001 - a value that cannot be unpickled here
                fut.set_exception(e)
        else:
            fut.set_exception(self.error_of(i))  # type: ignore[arg-type]
