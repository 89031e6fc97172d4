"""A run of calls: ``Job``, the handle a user holds, a facade over its parts.

- ``outcomes.Outcomes``: per call its state, attempt, times, host and value;
- ``logs.LogStore``: what the calls printed;
- ``monitor.EventFolder``: the monitoring stream, folded into both;
- ``rebuild``: the exceptions of failed calls, from their error records;
- ``aio``: ``await job``, awaitable futures, ``as_completed()``.

Backends fold what workers report through ``apply_segments`` / ``apply_batch``
(outcomes) and ``apply_events`` (progress and live logs); displays read. Nothing
here touches a widget or a connection, and nothing outside writes a part.

Threads: the folding thread (the transport's I/O thread, or the local pool's
threads) applies results and events; the kernel thread asks (results, futures,
describe_call ...) and cancels; the display's pusher thread reads. Every write,
and every read of more than one field, holds ``_lock``. Done callbacks (the
job's and its futures') run on the thread that gave the outcome, after it let go
of that lock: they may call the job's methods; they should not block for long
(that thread folds other results too) or write a widget.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator
from typing import Any

from .._hints import JobAdvice, missing_module
from ..errors import RemoteError
from ..protocol import (
    DONE,
    FAILED,
    STATE_CODES,
    STATE_NAMES,
    EventBatch,
    ResultBatch,
    ResultSegment,
)
from ..runner import spill
from .aio import AsCompleted, wait_job
from .futures import CallFutures, deliver
from .logs import LogStore
from .monitor import EventFolder
from .outcomes import READ_AHEAD, Outcomes, Printed, not_done
from .rebuild import rebuild_error
from .timings import Timings, timings_of

HOLD = 2.0  # seconds ``wait()`` gives a view to draw the end of a finished job
PRE_DECODE_EVERY = 0.005  # seconds between two looks of ``results()`` at values that came
PRE_DECODE_IDLE = 0.2  # seconds between looks while no new value came


def _part(part: str, name: str, doc: str) -> Any:
    """A read-only attribute of the job that is a field of one of its parts."""
    return property(lambda self: getattr(getattr(self, part), name), doc=doc)


class Job:
    """A run of ``n`` calls of one function.

    ``results()`` returns the values in input order; ``wait()``, ``done()``,
    ``cancel()`` and ``futures`` behave like concurrent.futures. ``states``
    holds one state code per call (see ``protocol.STATE_NAMES``).
    """

    states = _part("_outcomes", "states", "One state code per call (protocol.STATE_NAMES).")
    attempts = _part("_outcomes", "attempts", "The attempt of each call (1 for the first).")
    counts = _part("_outcomes", "counts", "Calls per state code.")
    final = _part("_outcomes", "final", "Calls with an outcome (done, failed, cancelled).")
    duplicates = _part("_outcomes", "duplicates", "Results that came twice and were dropped.")
    cancel_requested = _part("_outcomes", "cancel_requested", "True once cancel() was asked.")
    logs = _part("_logs", "logs", "Call -> its CallLog (calls that printed something).")
    recent = _part("_logs", "recent", "The last lines of all calls: (call, stream, text).")
    log_bytes = _part("_logs", "size", "Characters of output kept.")
    log_dropped = _part("_logs", "dropped", "Characters not kept (the job's log limit).")
    log_seq = _part("_logs", "seq", "Moves whenever a line is kept (views redraw then).")
    notes = _part("_events", "notes", "Call -> its last note (why it was retried ...).")
    event_batches = _part("_events", "batches", "Monitoring batches folded in.")

    def __init__(
        self,
        job_id: str,
        n: int,
        *,
        name: str = "",
        errors: str = "raise",
        runtime: str = "",
        backend: Any = None,
        origins: dict[str, str] | None = None,
        created: float | None = None,
        shipment: Any = None,
        spill_dir: str = "",
        reused: int = 0,
    ) -> None:
        self.job_id = job_id
        self.n = n
        self.name = name
        self.errors = errors
        self.runtime = runtime
        self.backend = backend
        # code_key -> real file of the code shipped with the function (see _origins)
        self.origins = origins or {}
        # the user's modules that travel with the function (``_ship.Shipment``; None: unknown)
        self.shipment = shipment
        excluded = shipment.excluded if shipment is not None else frozenset()
        self._advice = JobAdvice(backend, runtime, excluded)
        # inputs and results over the message limit (``runner.spill``): gone once the
        # results are read, or with the Job (its inputs once the job is over); not when
        # this process exits: the job may still run, its results wait for ``attach``
        # (its folder is swept result_ttl after no kernel follows it)
        self.spill_dir = spill_dir
        # calls whose inputs went by file (appended by the thread that publishes them)
        self.spilled_calls: list[int] = []
        if spill_dir:
            weakref.finalize(self, spill.remove, spill_dir).atexit = False
        self.created = time.time() if created is None else created
        self.finished_at: float | None = None
        self.reused = reused  # calls whose results came from the cache (resume)
        self._outcomes = Outcomes(n)
        self._outcomes.spill_dir = spill_dir
        self._logs = LogStore()
        self._events = EventFolder(self._outcomes, self._logs)
        self._version = 0
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._futures: CallFutures | None = None
        self._callbacks: list[Callable[[Job], None]] = []
        self._fold_listeners: list[Callable[[list[ResultSegment]], None]] = []
        self._linked: list[Job] = []  # cancelled with this one (see link)
        self._holds: list[threading.Event] = []
        if n == 0:
            self._finish()()

    @property
    def version(self) -> int:
        """Bumped on every change: a view redraws when it moves."""
        return self._version

    @property
    def broker_down(self) -> bool:
        """True while the backend cannot reach its broker (it reconnects meanwhile)."""
        return self.backend is not None and not self.backend.reachable()

    # -- folding (the backend's thread) ------------------------------------------------
    def apply_batch(self, batch: ResultBatch) -> None:
        self.apply_segments(batch.segments)

    def apply_segments(self, segments: list[ResultSegment]) -> None:
        """Record outcomes; the first outcome of a call wins, later ones are dropped."""
        ended = None
        with self._lock:
            applied: list[int] | None = [] if self._futures is not None else None
            printed: list[Printed] = []
            fold = self._outcomes.fold
            for seg in segments:
                if len(seg):
                    fold(seg, applied, printed)
            for i, out, err, dropped in printed:
                self._logs.settle(i, out, err, dropped)
            to_read: list = []
            if self._outcomes.to_read:  # values in spill files: read them now, aside
                applied, to_read = self._read_ahead(applied)
            settled = [self._futures.settle(i) for i in applied or ()]  # type: ignore[union-attr]
            self._version += 1
            listeners = self._fold_listeners
            if self._outcomes.final >= self.n and self.finished_at is None:
                if listeners:  # kept before the job says it is done
                    self._tell(listeners, segments)
                    listeners = []
                ended = self._finish()
        deliver(settled)  # the user's callbacks: not under the lock
        if ended is not None:
            ended()
        self._tell(listeners, segments)
        for block, then in to_read:  # after the listeners (the cache reads the files too)
            READ_AHEAD.put(block, then)

    def _read_ahead(self, applied: list[int] | None) -> tuple[list[int] | None, list]:
        """With the lock held: the blocks of values in spill files, for the read-ahead
        thread, each with what to do once read: resolve the futures of its calls (not
        here: the folding thread is the transport's); and the calls to resolve now."""
        o = self._outcomes
        later: dict[int, list[int]] = {}
        if applied:
            now = []
            for i in applied:
                block = o.unread(i)
                if block is None:
                    now.append(i)
                else:
                    later.setdefault(id(block), []).append(i)
            applied = now
        to_read = []
        for block in o.to_read:
            calls = later.get(id(block))
            to_read.append((block, functools.partial(self._resolve, calls) if calls else None))
        o.to_read = []
        return applied, to_read

    def _resolve(self, calls: list[int]) -> None:
        """Settle the futures of ``calls`` (the read-ahead thread, their values read)."""
        with self._lock:
            settled = [self._futures.settle(i) for i in calls]  # type: ignore[union-attr]
        deliver(settled)

    @staticmethod
    def _tell(listeners: list[Callable[[list[ResultSegment]], None]], segments: list) -> None:
        for fn in listeners:
            try:
                fn(segments)
            except Exception:  # noqa: BLE001 - keeping results must not break the job
                logging.getLogger("sif_magic.job").exception("a fold listener failed")

    def add_fold_listener(self, fn: Callable[[list[ResultSegment]], None]) -> None:
        """``fn(segments)`` after every fold of results, on the folding thread (the
        resume cache keeps them): it must not block for long or touch a widget."""
        with self._lock:
            self._fold_listeners.append(fn)

    def apply_events(self, batch: EventBatch) -> None:
        """Fold a monitoring batch: progress states, attempts, notes and live logs."""
        with self._lock:
            self._events.fold(batch)
            self._version += 1

    def spill_refusals(self) -> dict[str, float]:
        """Worker -> when it last handed back a chunk of this job because it cannot read
        the job's spill directory (``time.monotonic()``)."""
        with self._lock:
            return dict(self._events.spill_refused)

    def mark_lost(self, worker: str, note: str) -> int:
        """Show the calls ``worker`` was running (or retrying) as lost, with ``note``
        (it died or stopped answering; they wait to be redelivered); how many."""
        with self._lock:
            lost = self._outcomes.mark_lost(worker)
            self._events.notes.update(dict.fromkeys(lost, note))
            self._version += bool(lost)
        return len(lost)

    def mark_cancelled(self) -> None:
        """Give every call without an outcome the outcome 'cancelled' (client side)."""
        ended = None
        with self._lock:
            rest = self._outcomes.cancel_rest()
            futures = self._futures
            settled = [futures.settle(i) for i in rest] if futures is not None else []
            self._version += 1
            if self.finished_at is None:
                ended = self._finish()
        deliver(settled)
        if ended is not None:
            ended()

    def _finish(self) -> Callable[[], None]:
        """With the lock held: the job is over. Returns what the caller runs once it let
        go of the lock: the done callbacks (a view is told to draw the end), then the
        waiters are woken."""
        self.finished_at = time.time()
        spill.remove(self.spill_dir, "input")
        callbacks = list(self._callbacks)

        def ended() -> None:
            for cb in callbacks:
                try:
                    cb(self)
                except Exception:  # noqa: BLE001 - a display must not break the job
                    logging.getLogger("sif_magic.job").exception("a done callback failed")
            self._done.set()

        return ended

    # -- asking (the kernel thread) ----------------------------------------------------
    def done(self) -> bool:
        return self.finished_at is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every call has an outcome; False if ``timeout`` passed first.

        A view of the job has drawn its end by then (it is given ``HOLD`` s at most)."""
        if not self._done.wait(timeout):
            return False
        for hold in list(self._holds):
            hold.wait(HOLD if timeout is None else min(HOLD, timeout))
        return True

    def cancel(self) -> bool:
        """Drop queued calls and kill running ones on the workers."""
        if self.done():
            return False
        with self._lock:
            self._outcomes.cancel_requested = True
        if self.backend is not None:
            self.backend.cancel(self)
        for other in list(self._linked):
            other.cancel()
        return True

    def link(self, other: Job) -> None:
        """Cancelling this job cancels ``other`` too (a pipeline's upstream job)."""
        with self._lock:
            self._linked.append(other)

    def close(self) -> None:
        """Forget this job on the broker (its kept results go); cancels it if still running."""
        if not self.done():
            self.cancel()
        if self.backend is not None:
            self.backend.release(self)
        spill.remove(self.spill_dir)

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        """``fn(job)`` once the job is done (now if it is): see the module's thread rule."""
        with self._lock:
            if self.finished_at is None:
                self._callbacks.append(fn)
                return
        fn(self)

    def hold_waiters(self, drawn: threading.Event) -> None:
        """``wait()`` returns only once ``drawn`` is set (at most ``HOLD`` s after the end):
        code that waited for the job never sees a view still showing it running."""
        with self._lock:
            self._holds.append(drawn)

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.created

    def count(self, state: str) -> int:
        return self._outcomes.counts[STATE_CODES[state]]

    def state_counts(self) -> dict[str, int]:
        with self._lock:
            counts = self._outcomes.counts
            return {name: counts[code] for code, name in enumerate(STATE_NAMES)}

    def progress(self) -> tuple[float, dict[int, tuple[float, str]]]:
        """How far the job is, counting the fraction running calls reported
        (``sif_magic.report``): (calls' worth done, {call: (fraction, message)} of
        the calls without an outcome that reported). The first is ``final`` plus
        those fractions."""
        with self._lock:
            partial, running = self._events.partial()
            return self._outcomes.final + partial, running

    def state(self, i: int) -> str:
        return STATE_NAMES[self._outcomes.states[i]]

    @property
    def failed(self) -> list[int]:
        with self._lock:
            return self._outcomes.of_state(FAILED)

    def describe_call(self, i: int) -> dict[str, Any]:
        with self._lock:
            d = self._outcomes.describe(i)
            d["note"] = self._events.notes.get(i, "")
            fraction, message = self._events.progress.get(i, (None, ""))
            d["progress"], d["message"] = fraction, message
            return d

    def timings(self) -> Timings:
        """Per call its start, end, slot, state and attempt: a copy, for pictures."""
        with self._lock:
            return timings_of(self._outcomes, self.created, self.finished_at)

    def plot(self, **kwargs: Any) -> Any:
        """A matplotlib figure of the run: a timeline (a row per worker slot) and the
        histogram of call durations; needs ``pip install "sif_magic[plots]"``."""
        from ..display.plots import plot_job

        return plot_job(self, **kwargs)

    def call_logs(self, i: int) -> tuple[list[tuple[int, str]], int]:
        """(entries, dropped bytes) of call ``i``'s output so far."""
        with self._lock:
            return self._logs.entries(i)

    def output(self, i: int) -> str:
        """Everything call ``i`` printed (stdout and stderr) as one string."""
        return "".join(text for _, text in self.call_logs(i)[0])

    def error(self, i: int) -> BaseException | None:
        """The exception of call ``i`` if it failed (a RemoteError, a timeout, ...)."""
        decoded = self._outcomes.decoded
        if decoded is not None:
            value = decoded[i]
            done = self._outcomes.states[i] == DONE
            return value if isinstance(value, BaseException) and not done else None
        with self._lock:
            o = self._outcomes
            state, info, raw = o.states[i], o.errors.get(i), o.raw(i)
            worker, host, _ = o.hosts[o.where[i]]
        err = rebuild_error(i, state, info, raw, worker, host, self.origins)
        if isinstance(err, RemoteError) and err.ename == "ModuleNotFoundError" and info:
            with self._lock:
                self._advice.fold(self._outcomes.errors)
            err.hint = self._advice.message(missing_module(info) or "?")
        return err

    def hints(self) -> list[str]:
        """One message per module the workers could not import: which, whether this
        kernel has it, where the calls ran, the command that adds it (``_hints``)."""
        with self._lock:
            self._advice.fold(self._outcomes.errors)
        return self._advice.messages()

    def results(self, timeout: float | None = None, *, errors: str | None = None) -> list[Any]:
        """The values in input order; raises the first failure unless errors='collect'
        (the job's own setting unless ``errors`` says otherwise)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._decode_while_running(deadline)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.wait(left):
            raise TimeoutError(f"job {self.job_id} not done after {timeout} s")
        values = self._decode()
        if (errors or self.errors) == "raise":
            for i in not_done(self._outcomes.states):
                raise values[i]
        return values

    def _decode_while_running(self, deadline: float | None) -> None:
        """While the job runs, unpickle the values that came (this thread would only
        wait): at its end only the last ones are left, as ProcessPoolExecutor's
        result thread does it. Not when futures were asked for (they may unpickle a
        block too: a value is one object) nor for values in spill files; a value that
        cannot be unpickled here stops it (``_decode`` raises it once the job is over,
        as before)."""
        seen, pause = 0, PRE_DECODE_EVERY
        while not self._done.wait(pause):
            if deadline is not None and time.monotonic() > deadline:
                return
            with self._lock:
                blocks = self._outcomes.blocks_since(seen)
            # nothing new (long calls): look less often, up to PRE_DECODE_IDLE apart
            pause = PRE_DECODE_EVERY if blocks else min(PRE_DECODE_IDLE, pause * 2)
            for block in blocks:
                with self._lock:  # one block at a time: the folds go on between them
                    if self._futures is not None or self._outcomes.decoded is not None:
                        return
                    if not block.spilled:
                        try:
                            block.decoded()
                        except Exception:  # noqa: BLE001 - raised by _decode, once it is over
                            return
                seen += 1

    def _decode(self) -> list[Any]:
        with self._lock:
            values = self._outcomes.decode(self.error)
        spill.remove(self.spill_dir)  # read: the spilled results are not needed any more
        return values

    # -- futures -----------------------------------------------------------------------
    @property
    def futures(self) -> list[concurrent.futures.Future]:
        """One concurrent.futures.Future per call (made on first use)."""
        with self._lock:
            if self._futures is None:
                self._futures = CallFutures(self._outcomes, self.error)
            return self._futures.futures

    # -- awaiting (aio) ------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, list[Any]]:
        """``await job``: the results (as ``results()``) without blocking the event loop."""
        return wait_job(self).__await__()

    def as_completed(self) -> AsCompleted:
        """``(index, value)`` per call as outcomes come: ``async for`` or ``for``."""
        return AsCompleted(self)

    # -- showing -----------------------------------------------------------------------
    def summary(self) -> str:
        return summary(self)

    def __repr__(self) -> str:
        return f"<{self.summary()}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..display import job_mimebundle

        return job_mimebundle(self)


def summary(job: Job) -> str:
    """One line: the job, its size, and calls per state."""
    c = job.state_counts()
    parts = [f"{c['done']} done" + (f" ({job.reused} from the cache)" if job.reused else "")]
    for name in ("failed", "cancelled", "finishing", "running", "retrying", "queued", "lost"):
        if c[name]:
            parts.append(f"{c[name]} {name}")
    status = "finished" if job.done() else "running"
    return (
        f"sif_magic job {job.job_id} ({job.n} calls, {status} in {job.elapsed:.1f} s): "
        + ", ".join(parts)
    )
