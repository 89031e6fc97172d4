"""A concurrent.futures.Future per call of a job, resolved as outcomes come.

Threads: made by whichever thread first asks for ``Job.futures`` and resolved
by the thread that folds results (or cancels), or, for values in spill files,
by the read-ahead thread once it read them (``outcomes.ReadAhead``): the
outcome is taken under the owning Job's lock (``settle``), the future is set
after that lock is released (``deliver``), so the user's done callbacks, which
run inside ``set_result``, never run under it (one that calls the job's methods,
or waits for a thread that does, cannot deadlock). A Future itself is safe to
wait on from any thread. Owner: the ``Job``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from ..protocol import DONE, TERMINAL
from .aio import CallFuture
from .outcomes import Outcomes

Settled = tuple[concurrent.futures.Future, bool, Any]  # (future, ok, value or exception)


class CallFutures:
    """``futures[i]`` resolves to call ``i``'s value, or fails with its exception
    (awaitable too: ``aio.CallFuture``)."""

    def __init__(self, outcomes: Outcomes, error_of: Callable[[int], BaseException | None]) -> None:
        self.outcomes = outcomes
        self.error_of = error_of
        self.futures: list[concurrent.futures.Future] = [CallFuture() for _ in range(outcomes.n)]
        for f in self.futures:
            f.set_running_or_notify_cancel()
        self._taken = bytearray(outcomes.n)  # 1: its outcome was taken (set once)
        states, have = outcomes.states, outcomes.have
        ready = [self.settle(i) for i in range(outcomes.n) if states[i] in TERMINAL and have[i]]
        deliver(ready)  # (no callback can be on them yet)

    def settle(self, i: int) -> Settled | None:
        """With the Job's lock held: call ``i``'s outcome for its future, once (None if
        taken before); ``deliver`` sets it, after the lock is released."""
        if self._taken[i]:
            return None
        self._taken[i] = 1
        o, fut = self.outcomes, self.futures[i]
        if o.states[i] == DONE:
            try:
                return fut, True, o.decoded[i] if o.decoded is not None else o.value(i)
            except Exception as e:  # noqa: BLE001 - a value that cannot be unpickled here
                return fut, False, e
        return fut, False, self.error_of(i)


def deliver(settled: list[Settled | None]) -> None:
    """Set the futures ``settle`` gave outcomes to (without the Job's lock: their done
    callbacks are the user's code)."""
    for s in settled:
        if s is None:
            continue
        fut, ok, value = s
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
