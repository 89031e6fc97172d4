"""Chunks of calls, and the pieces of them a pool hands to its slots.

A ``Chunk`` is what one task message asks for: some calls of one job, their
pickled function and inputs (bytes: the pool never unpickles user data), the
limits that apply to them and the delivery they came in (``tag``, opaque to
the pool). ``Chunk.from_task`` is the one way to build one, from a
``protocol.Task``: the RabbitMQ worker builds it from the message it received,
the local backend from the task it would have published.

Threads: a chunk is built by the thread that receives the work (the worker's
I/O thread, the kernel thread of the local backend) and handed to the pool;
from then on only the pool's dispatcher thread writes it (``remaining``,
``started``) and
the pieces made of it (``done``).
"""

from __future__ import annotations

import functools
from array import array
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Task
from . import spill
from .resources import Need, need_of


@dataclass(eq=False)
class Chunk:
    """A chunk of calls of one job, as one task message delivered it."""

    job_id: str
    chunk: int
    calls: list[int] | range  # job indices, one per item of ``args``
    func_hash: str
    func: bytes
    args: bytes
    star: bool = False
    timeout: float | None = None
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    tag: Any = None  # the delivery this chunk came from (for the transport)
    attempt_base: int = 1  # first attempt number (a redelivered chunk starts higher)
    only: list[int] | range | None = None  # positions to run (a split chunk); None: all
    remaining: int = -1  # calls without a final result yet
    need: Need | None = None  # what each call asks for (resources.py); None: nothing
    started: bool = False  # a piece of it went to a slot
    buffers: list[Any] | tuple = ()  # the out-of-band buffers of ``args`` (oob.py)

    def __post_init__(self) -> None:
        if self.only is None:
            self.only = range(len(self.calls))
        if self.remaining < 0:
            self.remaining = len(self.only)

    @classmethod
    def from_task(cls, task: Task, tag: Any = None) -> Chunk:
        """The chunk a task asks for: the calls at ``task.only`` (all if None); a
        task that lost its worker ``task.lost`` times starts at that attempt + 1."""
        return cls(
            job_id=task.job_id,
            chunk=task.chunk,
            calls=task.calls,
            func_hash=task.func_hash,
            func=task.func,
            args=task.args,
            star=task.star,
            timeout=task.timeout,
            retries=task.retries,
            env=task.env,
            tag=tag,
            attempt_base=1 + task.lost,
            only=list(task.only) if task.only is not None else None,
            need=need_of(task.resources),
            buffers=task.buffers,
        )

    @functools.cached_property
    def nbytes(self) -> int:
        """Bytes a slot is sent to run it: function, inputs and their buffers (counted
        once: the pool asks at every dispatch, for each piece sent ahead)."""
        # (inputs in a spill file count their file: each slot given a piece reads it)
        args = spill.size_of(self.args)
        return len(self.func) + args + sum(memoryview(b).nbytes for b in self.buffers)

    @functools.cached_property
    def call_array(self) -> array:
        """``calls`` as an ``array('q')`` (a piece's indices are slices of it)."""
        calls = self.calls
        if type(calls) is range and calls.step == 1:
            return _counting(calls.start, len(calls))
        return array("q", calls)

    @functools.cached_property
    def first(self) -> int:
        """``calls[0]`` if the calls are consecutive (``a, a+1, ...``: a chunk of a
        job, as the client cuts them), else -1."""
        calls = self.calls
        if type(calls) is range:
            return calls.start if calls.step == 1 and len(calls) else -1
        a, n = self.call_array, len(calls)
        if n and a[-1] - a[0] == n - 1 and a == _counting(a[0], n):
            return a[0]
        return -1


@dataclass(eq=False)
class Piece:
    """Some positions of a chunk sent to one slot in one request."""

    chunk: Chunk
    positions: list[int] | range
    attempts: list[int]
    done: int = 0  # positions reported so far (a slot runs them in order)

    def indices(self, k0: int = 0, k1: int | None = None) -> array:
        """Job indices of positions ``k0:k1`` of this piece."""
        positions = self.positions[k0:k1]
        if type(positions) is range and positions.step == 1:
            return self.chunk.call_array[positions.start : positions.stop]
        calls = self.chunk.calls
        return array("q", [calls[p] for p in positions])

    def span(self, k0: int = 0, k1: int | None = None) -> tuple[int, int] | None:
        """``(a, b)`` if the job indices of positions ``k0:k1`` are ``a, ..., b - 1``
        (a range of positions of a chunk of consecutive calls), else None."""
        positions, first = self.positions[k0:k1], self.chunk.first
        if first < 0 or type(positions) is not range or positions.step != 1:
            return None
        return first + positions.start, first + positions.stop


_IOTA = array("q")  # 0, 1, 2, ... (grown on demand, up to _IOTA_MAX)
_IOTA_MAX = 1 << 20


def _counting(a: int, n: int) -> array:
    """``array('q', range(a, a + n))``, a slice of a table when it fits in one (a copy
    of memory: the chunk's check costs a comparison of bytes, not an int per call)."""
    global _IOTA
    if a < 0 or a + n > _IOTA_MAX:
        return array("q", range(a, a + n))
    if a + n > len(_IOTA):  # (another thread may grow it too: both tables are right)
        _IOTA = array("q", range(min(_IOTA_MAX, max(a + n, 2 * len(_IOTA), 4096))))
    return _IOTA[a : a + n]
