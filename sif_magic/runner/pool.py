"""A pool of warm slot processes that run chunks of calls (worker side).

The pool owns its slots (``slotproc.py``, ``slot.py``): it hands each idle slot
the next piece of work (and a busy slot its next pieces ahead of time, in one
request, when they are of the same job and quick, so the slot never waits for us);
when nothing is queued and a slot is idle (it finished a piece, or was idle
at the previous tick), a busy slot gives it half of the calls of its piece it
has not started (``scheduler.split_share``: skewed calls, one slow call among
quick ones, no longer hold the quick ones behind it),
reads what the slot reports, enforces per-call time limits, notices a slot
that died under a call, retries failed calls, tails the slots' output files
for live logs, and cancels. It never unpickles user data: the function and
inputs stay bytes here, only slots load them. What happens is told to a
``Reporter`` (``reporter.py``). With GPUs (``devices``) or calls that ask for
GPUs and CPUs, a slot is a process with devices of its own, and the pool
re-shapes its slots as the queue needs: ``placement.py`` says how.

Threads, and who owns what (one writer, as in dramatiq's worker):

- the dispatcher thread (``sif-pool``) is the only writer of the pool's state:
  the queue of pieces, the slots and what each runs and holds (``placement``),
  the outcomes (counters,
  chunks' ``remaining``, pieces' ``done``: ``outcomes.py``) and the call times.
  It watches every slot's response pipe (``dispatcher.py``): it reads and
  unpickles what slots send (``SlotProc.receive``), runs what callers posted,
  and every TICK seconds enforces time limits, announces calls that run for a
  while and tails their output. It is the only thread that sends work to
  slots, kills them (but for the last resort of ``close``) and calls the
  Reporter.
- callers (the worker's I/O thread, the kernel, tests) call ``submit``,
  ``cancel``, ``drop_queued``, which post to the dispatcher; they read
  ``busy``, ``queued``, ``pids``, ``slot_devices``, ``done_calls``, ``failed_calls``, ``seconds_per_call``:
  values the dispatcher replaces whole. ``cancels`` has its own lock.

Why no reader thread per slot that forwards to the dispatcher: that costs a
thread hand-off (a wake-up and a GIL switch) per message; with one call per
message (benchmark s1) it measured ~10% more worker CPU per call and 1.5 more
context switches per call than reading in the dispatcher. A slot's messages
are handled in the order it sent them, a caller's in the order it posted them.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from .cancels import CancelSet
from .chunk import Chunk, Piece
from .dispatcher import Dispatcher
from .outcomes import LOST_ERROR, Outcomes, error
from .placement import RESHAPE, Placement
from .reporter import Reporter
from .resources import Need, unsatisfiable
from .scheduler import SPLIT_ABOVE, CallTimes, send_ahead, split_share
from .slotproc import SlotProc, Tail

log = logging.getLogger("sif_magic.pool")

TICK = 0.05  # seconds between two looks at running calls (time limits, live logs)
MAX_AHEAD = 32  # pieces sent ahead to one slot at most


def usable_cpus() -> int:
    """CPUs this process may use: affinity mask, then SLURM's allocation, then the machine."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    if slurm and slurm.isdigit():
        n = min(n, int(slurm))
    return max(1, n)


class Pool:
    def __init__(
        self,
        processes: int,
        reporter: Reporter,
        *,
        workdir: str | None = None,
        cwd: str | None = None,
        worker: str = "",
        host: str = "",
        devices: list[str] | None = None,
        cpus: int = 0,
    ) -> None:
        """``devices``: the GPU ids its slots hand out (one each by default);
        ``cpus``: the CPUs calls that ask for some share (0: ``usable_cpus()``)."""
        if processes < 1:
            raise ValueError("a pool needs at least one process")
        self.processes = processes
        self.placement = Placement(processes, devices or [], cpus or usable_cpus())
        self.reporter = reporter
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="sif_magic-slots-")
        self.cwd = cwd or os.getcwd()
        self.cancels = CancelSet()  # also asked by the worker in front of the pool
        self.call_times = CallTimes()
        self.outcomes = Outcomes(reporter, self.call_times, worker, host)
        self._loop = Dispatcher("sif-pool", TICK, self._tick, self._finished)
        # the dispatcher's (before start: the starting thread's)
        self.queue: collections.deque[Piece] = collections.deque()
        self.slots: tuple[SlotProc, ...] = ()
        self.closed = False
        self._spawned = 0
        self._idle: set[int] = set()  # slots idle at the last tick

    # -- any thread -------------------------------------------------------------
    def start(self, wait: bool = True) -> Pool:
        for need in self.placement.initial():
            self._spawn(need)
        self._loop.start()
        if wait:
            for s in self.slots:
                s.ready.wait(30)
        return self

    def close(self) -> None:
        """Kill every slot (calls running die unreported), wait for them, clean up."""
        if self._loop.started:
            slots = self.slots
            self._loop.post(self._on_close)
            if not self._loop.join(10):  # pragma: no cover - a Reporter that hangs
                log.warning("the slot pool's dispatcher did not stop; killing its slots")
                for s in slots:
                    s.signal_kill()
                return
        self._loop.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def busy(self) -> int:
        return sum(1 for s in self.slots if s.piece is not None)

    @property
    def queued(self) -> int:
        """Pieces waiting for a slot."""
        return len(self.queue)

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.slots]

    @property
    def slot_devices(self) -> list[str]:
        """Each slot's devices ("0,1"; "" none), as the workers table shows them."""
        return [s.devices for s in self.slots if s.killed_for != RESHAPE]

    def can_run(self, need: Need | None) -> bool:
        """Whether a call asking for ``need`` could ever run here (any thread)."""
        return need is None or self.placement.possible(need)

    @property
    def done_calls(self) -> int:
        return self.outcomes.done_calls

    @property
    def failed_calls(self) -> int:
        return self.outcomes.failed_calls

    def seconds_per_call(self, func_hash: str) -> float:
        """How long a call of that function took lately, overhead included (1.0 if unknown)."""
        return self.call_times.get(func_hash)

    def submit(self, chunk: Chunk, front: bool = False) -> None:
        """Queue ``chunk``'s calls (``front``: before everything queued, e.g. a retry)."""
        self._loop.post(self._on_submit, chunk, front)

    def submit_many(self, chunks: list[tuple[Chunk, bool]]) -> None:
        """``submit`` each ``(chunk, front)``, in order, with one hand-over to the
        dispatcher (a worker's burst of one-call chunks: one wake-up, not one each)."""
        self._loop.post(self._on_submit_many, chunks)

    def cancel(self, job_id: str) -> None:
        """Drop queued calls of ``job_id``, kill its running calls (others untouched)."""
        self.cancels.add(job_id)
        self._loop.post(self._on_cancel, job_id)

    def drop_queued(
        self,
        predicate: Callable[[Chunk], bool],
        then: Callable[[list[Chunk]], None] | None = None,
    ) -> None:
        """Forget queued pieces whose chunk matches ``predicate``, reporting nothing:
        deliveries of a dead broker connection (the broker hands them out again), or
        chunks a worker hands back (``not c.started`` in the predicate: none of it
        ran). ``then`` gets the chunks dropped (in the dispatcher thread)."""
        self._loop.post(self._on_drop, predicate, then)

    # -- the dispatcher thread ----------------------------------------------------
    def _finished(self) -> bool:
        return self.closed and not self.slots

    def _receive(self, s: SlotProc) -> None:
        msgs = s.receive()
        if msgs is None:  # it died (or was killed)
            self._loop.unwatch(s.resp_r)
            s.proc.wait()
            self._on_exit(s)
            return
        for msg in msgs:
            self._loop.safely(self._on_message, s, msg)

    def _spawn(self, need: Need) -> None:
        held, devices, env = self.placement.take(need)
        s = SlotProc(self._spawned, self.workdir, self.cwd, need, held, devices, env)
        self._spawned += 1
        self.slots = (*self.slots, s)
        self._loop.watch(s.resp_r, self._receive, s)

    def _on_submit_many(self, chunks: list[tuple[Chunk, bool]]) -> None:
        if self.closed:
            return
        for chunk, front in chunks:
            self._loop.safely(self._on_submit, chunk, front, False)
        self._dispatch(split=False)  # more of the job's chunks may follow

    def _on_submit(self, chunk: Chunk, front: bool, dispatch: bool = True) -> None:
        if self.closed:  # shutting down: the worker hands back what it holds
            return
        positions = chunk.only if chunk.only is not None else range(len(chunk.calls))
        if chunk.job_id in self.cancels:
            self.outcomes.cancelled(chunk, positions)
            return
        if not self.can_run(chunk.need):  # it would wait for ever: say why at once
            why = unsatisfiable(self.placement.need(chunk), "this pool", [self._row()])
            self.outcomes.failed(
                chunk, positions, [chunk.attempt_base] * len(positions),
                error("sif_magic.errors.ResourcesError", why),
            )  # fmt: skip
            return
        piece = Piece(chunk, positions, [chunk.attempt_base] * len(positions))
        if front:
            self.queue.appendleft(piece)
        else:
            self.queue.append(piece)
        if dispatch:  # no split now: the caller is likely submitting the job's other chunks
            self._dispatch(split=False)

    def _on_cancel(self, job_id: str) -> None:
        keep: collections.deque[Piece] = collections.deque()
        for piece in self.queue:
            if piece.chunk.job_id == job_id:
                self.outcomes.cancelled(piece.chunk, piece.positions)
            else:
                keep.append(piece)
        self.queue = keep
        for s in self.slots:
            if s.piece is not None and s.piece.chunk.job_id == job_id:
                s.kill("cancel")

    def _on_drop(self, predicate: Callable[[Chunk], bool], then: Callable | None) -> None:
        keep: collections.deque[Piece] = collections.deque()
        dropped: dict[int, Chunk] = {}
        for p in self.queue:
            if predicate(p.chunk):
                dropped[id(p.chunk)] = p.chunk
            else:
                keep.append(p)
        self.queue = keep
        if then is not None:
            then(list(dropped.values()))

    def _on_close(self) -> None:
        self.closed = True
        self.queue.clear()
        for s in self.slots:
            s.kill("shutdown")

    def _row(self) -> dict:
        p = self.placement
        return {"worker": self.outcomes.worker or "local", "gpus": p.devices, "cpus": p.cpus}

    def _dispatch(self, split: bool = True) -> None:
        """Hand queued pieces to slots (``split``: then, if nothing is queued, have
        idle slots take calls of busy ones)."""
        queue = self.queue
        if not queue:
            if split:
                self._split()
            return
        self.placement.place(queue, lambda: self.slots, self._spawn)
        # quick pieces of the job a slot runs go ahead of time: the slot starts
        # them without waiting for this process to read its results. Several go in
        # one request (a burst of one-call chunks: one write here, one read there),
        # up to send_ahead's limits for them all, the queue shared among the slots
        # of that job
        busy = sum(1 for s in self.slots if s.piece is not None)
        share = -(-len(queue) // max(1, busy))
        for s in self.slots:
            if not queue:
                break
            if s.piece is None or s.killed_for or s.giving_back:
                continue
            job = s.piece.chunk.job_id
            if queue[0].chunk.job_id != job:
                continue
            calls, nbytes = s.ahead_load()
            batch: list[Piece] = []
            while queue and len(batch) < min(share, MAX_AHEAD - len(s.ahead)):
                c = queue[0].chunk
                n = len(queue[0].positions)
                if c.job_id != job or not send_ahead(
                    calls + n, self.call_times.get(c.func_hash), nbytes + c.nbytes, s.room
                ):
                    break
                calls, nbytes = calls + n, nbytes + c.nbytes
                c.started = True
                batch.append(queue.popleft())
            if batch:
                s.send_ahead(batch)
        if not queue and split:
            self._split()

    def _split(self) -> None:
        """Nothing queued: slots that are idle get calls a busy slot of their shape
        has not started (each busy slot, the one with the most work left first, is
        asked for a share of its piece: its answer, ``_on_split``, queues them)."""
        idle: collections.Counter = collections.Counter(
            s.need for s in self.slots if s.up and s.piece is None and not s.killed_for
        )
        if not idle:
            return
        busy = []
        now = time.time()
        for s in self.slots:
            if s.asked and (s.asked == s.run_id or s.giving_back):
                idle[s.need] -= s.asked_for  # asked already: its answer is for them
            elif s.piece is not None and not s.killed_for:
                left, running_for = s.unstarted(now)
                spc = self.call_times.get(s.piece.chunk.func_hash)
                wait = max(left * spc, running_for)  # before the pieces sent ahead start
                ahead = s.ahead_load()[0] * spc
                if s.ahead and wait + ahead / 2 >= SPLIT_ABOVE and idle[s.need] > 0:
                    # they wait behind slow calls, or are many: back comes the later half
                    s.ask_split(0, 1, ahead=True)
                    idle[s.need] -= 1
                    continue
                if left > 0:
                    busy.append((wait, left, spc, running_for, s))
        busy.sort(key=lambda b: -b[0])
        for k, (_, left, spc, running_for, s) in enumerate(busy):
            free = idle[s.need]
            if free <= 0:
                continue
            others = sum(1 for b in busy[k:] if b[-1].need == s.need)
            slots = min(free, max(1, free // others))
            nbytes = s.piece.chunk.nbytes  # type: ignore[union-attr]
            share = split_share(left, spc, nbytes, slots, running_for)
            if share:
                s.ask_split(share, slots)
                idle[s.need] -= slots

    def _on_split(self, s: SlotProc, run_id: int, e: int, end: int) -> None:
        """Slot ``s`` gave away positions ``e:end`` of its run ``run_id``: they go
        first in the queue, in as many pieces as idle slots they were asked for.
        An answer to an older request (one that came after its run had ended: the
        slot says "none" then) leaves the count of the pending request alone."""
        current = run_id == s.asked or end < 0  # (runs sent ahead: asked is one of them)
        slots = s.asked_for if current else 1
        if current:
            s.asked_for = 0
        if end < 0:  # runs sent ahead: given back from run_id on (e == 0), or started
            s.asked, s.giving_back = 0, False
            if e != 0:
                return
            given = [p for rid, p in s.ahead if rid >= run_id]
            while s.ahead and s.ahead[-1][0] >= run_id:
                s.ahead.pop()
            if s.piece is not None and s.run_id >= run_id:  # its turn came meanwhile:
                given.insert(0, s.piece)  # it skips it, and those after it: idle
                s.piece, s.run_id, s.tail = None, 0, None
            if not given:  # never happens: the runs are not ours to give
                log.warning("slot %s gave back run %s it was not given", s.n, run_id)
                return
            for piece in reversed(given):
                self._requeue(piece, dispatch=False)
            self._dispatch()
            return
        piece = s.piece
        if e >= end:  # none (any more): not asked again during this run
            return
        if current:
            s.asked = 0
        if piece is None or run_id != s.run_id or end != len(piece.positions):
            # never happens; if it did, the run reports where it stopped (its end)
            log.warning("slot %s gave away calls %s:%s of a run it is not running", s.n, e, end)
            return
        c = piece.chunk
        given = Piece(c, piece.positions[e:], piece.attempts[e:])
        piece.positions, piece.attempts = piece.positions[:e], piece.attempts[:e]
        self._requeue(given, slots)

    def _requeue(self, piece: Piece, parts: int = 1, dispatch: bool = True) -> None:
        """Calls of a started piece that did not run: first in the queue (in ``parts``
        pieces), or cancelled with their job."""
        if piece.chunk.job_id in self.cancels:
            self.outcomes.cancelled(piece.chunk, piece.positions)
            return
        n = len(piece.positions)
        parts = max(1, min(parts, n))
        for k in reversed(range(parts)):
            k0, k1 = n * k // parts, n * (k + 1) // parts
            self.queue.appendleft(Piece(piece.chunk, piece.positions[k0:k1], piece.attempts[k0:k1]))
        if dispatch:
            self._dispatch()

    def _on_message(self, s: SlotProc, msg: tuple) -> None:
        kind = msg[0]
        if kind == "results":
            piece = s.piece
            if piece is not None:
                if self._records(s, piece, msg, s.tail):
                    s.tail = None  # that call is over
        elif kind == "finished":
            # the slot is idle: give it its next piece first, then report this one's end
            piece, tail, s.tail = s.piece, s.tail, None
            s.run_id, s.piece = s.ahead.popleft() if s.ahead else (0, None)
            self._dispatch()
            if piece is None:
                return
            if msg[3]:
                self._records(s, piece, msg, tail)
            stopped = msg[7]
            if 0 <= stopped == piece.done < len(piece.positions):
                # it stopped short, its end given away: the rest did not run here
                rest = Piece(piece.chunk, piece.positions[stopped:], piece.attempts[stopped:])
                piece.positions, piece.attempts = (
                    piece.positions[:stopped],
                    piece.attempts[:stopped],
                )
                self._requeue(rest)
            if piece.done < len(piece.positions):
                # never lose a call silently, even to a bug of ours in the slot
                why = "the worker's call runner stopped before reporting it"
                rest = piece.positions[piece.done :], piece.attempts[piece.done :]
                piece.done = len(piece.positions)
                self.outcomes.failed(piece.chunk, *rest, error(LOST_ERROR, why))
        elif kind == "split":
            self._on_split(s, *msg[1:])
        elif kind == "ready":
            s.up = True
            s.ready.set()
            self._dispatch()

    def _records(self, s: SlotProc, piece: Piece, msg: tuple, tail: Tail | None) -> bool:
        retries, tail_over = self.outcomes.records(
            piece, s.pid, *msg[2:7], tail=tail, devices=s.devices
        )
        if retries:
            self.queue.extend(retries)
            self._dispatch()
        return tail_over

    def _on_exit(self, s: SlotProc) -> None:
        self.slots = tuple(x for x in self.slots if x is not s)
        self.placement.release(s)
        if not self.closed:
            if s.killed_for != RESHAPE:  # retired to make room: its resources went back
                self._spawn(s.need)
            for _, ahead in reversed(s.ahead):  # never started: run again (or cancelled)
                if s.killed_for == "cancel" or ahead.chunk.job_id in self.cancels:
                    self.outcomes.cancelled(ahead.chunk, ahead.positions)
                else:
                    self.queue.appendleft(ahead)
            s.ahead.clear()
            piece = s.piece
            if piece is not None:
                cancelled = s.killed_for == "cancel" or piece.chunk.job_id in self.cancels
                again, retry = self.outcomes.slot_died(s, piece, cancelled)
                if again is not None:
                    self.queue.appendleft(again)
                if retry is not None:
                    self.queue.append(retry)
        s.close()
        if not self.closed:  # (a closed pool starts nothing: its place is free now)
            self._dispatch()

    def _tick(self) -> None:
        now = time.time()
        for s in self.slots:
            s.watch(now, self.reporter)
        # a slot idle since the last tick (not one that a job's next chunk, being
        # submitted, will keep busy) takes calls of a busy one: a job of fewer
        # chunks than slots, quick calls behind one that turned out slow
        idle = {s.n for s in self.slots if s.up and s.piece is None}
        if not self.queue and idle & self._idle:
            self._split()
        self._idle = idle
