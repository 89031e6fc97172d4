"""Waiting for a job without blocking: ``await job``, ``await future``,
``async for index, value in job.as_completed()`` (and the same loop without ``async``).

A notebook cell that awaits a job leaves the kernel's event loop free: tasks
other cells started (``asyncio.create_task``) run meanwhile; ``asyncio.run``
works the same way outside a kernel.

Threads: the calls settle on the thread that folds the job's results (see
``job``); their futures' done callbacks only append an index to a deque and,
when the waiter is not already woken, post one wake-up to the waiter's event
loop (``call_soon_threadsafe``) or condition: a job of 100,000 quick calls
wakes the loop a few times per batch of results, not once per call. Everything
else runs on the waiting thread (the event loop's, or the caller's).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Job


class CallFuture(concurrent.futures.Future):
    """A concurrent.futures.Future that can also be awaited (``await future``)."""

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


async def wait_job(job: Job) -> list[Any]:
    """The job's results once every call has its outcome, awaited (``await job``)."""
    if not job.done():
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def wake(_job: Job) -> None:  # on the folding thread: only hand over
            loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))

        job.add_done_callback(wake)
        await ended
    # the job has ended; a view gets its short hold off the event loop
    await asyncio.get_running_loop().run_in_executor(None, job.wait)
    return job.results()


class AsCompleted:
    """``(index, value)`` of each call as it gets its outcome, in the order they come.

    A failed call raises its exception when the job's ``errors`` is "raise"
    (as ``results()`` does), and is yielded as ``(index, exception)`` with
    "collect". Iterate it with ``async for`` in a coroutine or ``for`` elsewhere.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self._ready: collections.deque[int] = collections.deque()
        self._cond = threading.Condition()
        self._wake_loop: Any = None  # set by __aiter__: () -> None, thread-safe
        self._woken = False
        self._left = job.n
        self._futures = job.futures
        for i, fut in enumerate(self._futures):
            fut.add_done_callback(lambda _f, i=i: self._settled(i))

    def _settled(self, i: int) -> None:  # the folding thread
        with self._cond:
            self._ready.append(i)
            if self._woken:
                return
            self._woken = True
            wake = self._wake_loop
            self._cond.notify_all()
        if wake is not None:
            wake()

    def _take(self) -> list[int]:
        with self._cond:
            ready = list(self._ready)
            self._ready.clear()
            self._woken = False
            return ready

    def _pair(self, i: int) -> tuple[int, Any]:
        fut = self._futures[i]
        error = fut.exception()
        if error is None:
            return i, fut.result()
        if self.job.errors == "raise":
            raise error
        return i, error

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while self._left:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._ready))
            for i in self._take():
                self._left -= 1
                yield self._pair(i)

    async def _aiter(self) -> AsyncIterator[tuple[int, Any]]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._wake_loop = lambda: loop.call_soon_threadsafe(event.set)
        with self._cond:
            if self._ready:
                event.set()
        while self._left:
            await event.wait()
            event.clear()
            for i in self._take():
                self._left -= 1
                yield self._pair(i)

    def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        return self._aiter()
