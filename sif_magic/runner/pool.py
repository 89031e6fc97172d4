"""A pool of warm slot processes that run chunks of calls (worker side).

The pool owns its slots (see ``slot.py``): it hands each idle slot the next
piece of work (and a busy slot its next piece ahead of time, when that piece
is of the same job and quick, so the slot never waits for us), reads what
the slot reports, enforces per-call time limits, notices a slot that died
under a call, retries failed calls, tails the slots' output files for live
logs, and cancels. It never unpickles user data: the
function and inputs stay bytes here, only slots load them.

What happens is told to a ``Reporter`` (the RabbitMQ worker publishes it, the
local backend folds it straight into the job). Reporter methods are called
from the pool's threads and must return quickly.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from typing import Any

from ..protocol import CANCELLED, DONE, FAILED, SKIP, CallResult, ResultSegment
from . import slotio
from .cancels import CancelSet
from .chunk import Chunk, Piece
from .reporter import Reporter
from .scheduler import CallTimes, send_ahead, should_retry

log = logging.getLogger("sif_magic.pool")

TAIL_INTERVAL = 0.1
ANNOUNCE_AFTER = 0.02  # a call running this long is shown as running

_DONE = bytes([DONE])
# the call process, run by path (see slot.py)
SLOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slot.py")


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


class _SlotProc:
    def __init__(self, pool: Pool, n: int) -> None:
        self.pool = pool
        self.n = n
        self.out_path = os.path.join(pool.workdir, f"slot{n}.out")
        self.err_path = os.path.join(pool.workdir, f"slot{n}.err")
        state_path = os.path.join(pool.workdir, f"slot{n}.state")
        self.state = slotio.SharedState(state_path, create=True)
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                SLOT_SCRIPT,
                str(req_r),
                str(resp_w),
                self.out_path,
                self.err_path,
                state_path,
            ],
            pass_fds=(req_r, resp_w),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: signals to the kernel skip it
            cwd=pool.cwd,
        )
        os.close(req_r)
        os.close(resp_w)
        self.pid = self.proc.pid
        self.piece: Piece | None = None  # the piece it runs (or was given last)
        self.run_id = 0
        self.next: Piece | None = None  # sent ahead: it runs once ``piece`` is finished
        self.next_run_id = 0
        try:  # a message this small never blocks in the request pipe while the slot runs
            self.prefetch_bytes = fcntl.fcntl(self.req_w, fcntl.F_GETPIPE_SZ) // 2
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            self.prefetch_bytes = 2048
        self.killed_for: str = ""  # why we killed it, if we did
        self.funcs: set[str] = set()  # function hashes it holds (mirrors Slot._function)
        # live tail of the current call (once the slot announced it): stream -> offsets
        self.tail_index: int | None = None
        self.tail_start: dict[int, int] = {}
        self.tail_pos: dict[int, int] = {}
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, name=f"sif-slot-{n}", daemon=True)
        self.reader.start()

    def send(self, msg: tuple) -> bool:
        try:
            slotio.write_msg(self.req_w, msg)
            return True
        except OSError:
            return False

    def kill(self, why: str) -> None:
        self.killed_for = why
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the call's own children go too
        except ProcessLookupError:
            pass

    def _read(self) -> None:
        while True:
            try:
                msg = slotio.read_msg(self.resp_r)
            except Exception:  # noqa: BLE001 - a garbled pipe is a dead slot
                msg = None
            if msg is None:
                break
            self.pool._on_message(self, msg)
        os.close(self.resp_r)
        try:
            os.close(self.req_w)
        except OSError:
            pass
        self.proc.wait()
        self.pool._on_slot_exit(self)
        self.state.close()


def _exit_reason(proc: subprocess.Popen) -> str:
    rc = proc.returncode
    if rc is None:
        return "its process stopped answering"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -rc == 9 else ""
        return f"its process was killed by {name}{hint}"
    return f"its process exited with code {rc}"


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
    ) -> None:
        if processes < 1:
            raise ValueError("a pool needs at least one process")
        self.processes = processes
        self.reporter = reporter
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="sif_magic-slots-")
        self.cwd = cwd or os.getcwd()
        self.worker = worker
        self.host = host
        self.lock = threading.RLock()
        self.queue: collections.deque[Piece] = collections.deque()
        self.slots: list[_SlotProc] = []
        self.cancels = CancelSet()  # shared with the worker in front of the pool
        self.closed = False
        self.done_calls = 0
        self.failed_calls = 0
        self._next_slot = 0
        self._run_ids = 0
        self.call_times = CallTimes()

    # -- life ----------------------------------------------------------------
    def start(self, wait: bool = True) -> Pool:
        with self.lock:
            for _ in range(self.processes):
                self._spawn()
        threading.Thread(target=self._monitor, name="sif-pool-monitor", daemon=True).start()
        if wait:
            for s in list(self.slots):
                s.ready.wait(30)
        return self

    def _spawn(self) -> _SlotProc:
        slot = _SlotProc(self, self._next_slot)
        self._next_slot += 1
        self.slots.append(slot)
        return slot

    def close(self) -> None:
        with self.lock:
            self.closed = True
            slots = list(self.slots)
            self.queue.clear()
        for s in slots:
            s.kill("shutdown")
        for s in slots:
            s.reader.join(5)
        if self._own_workdir:
            for name in os.listdir(self.workdir):
                try:
                    os.unlink(os.path.join(self.workdir, name))
                except OSError:
                    pass
            try:
                os.rmdir(self.workdir)
            except OSError:
                pass

    @property
    def busy(self) -> int:
        with self.lock:
            return sum(1 for s in self.slots if s.piece is not None)

    @property
    def pids(self) -> list[int]:
        with self.lock:
            return [s.pid for s in self.slots]

    def seconds_per_call(self, func_hash: str) -> float:
        """How long a call of that function took lately, overhead included (1.0 if unknown)."""
        return self.call_times.get(func_hash)

    # -- work ----------------------------------------------------------------
    def submit(self, chunk: Chunk, front: bool = False) -> None:
        """Queue ``chunk``'s calls (``front``: before everything queued, e.g. a retry)."""
        with self.lock:
            positions = chunk.only if chunk.only is not None else range(len(chunk.calls))
            if chunk.job_id in self.cancels:
                self._finish_cancelled(chunk, positions)
                return
            piece = Piece(chunk, positions, [chunk.attempt_base] * len(positions))
            if front:
                self.queue.appendleft(piece)
            else:
                self.queue.append(piece)
            self._dispatch()

    def drop_queued(self, predicate: Any) -> int:
        """Forget queued (not started) pieces whose chunk matches ``predicate``,
        reporting nothing: used for deliveries of a dead broker connection, which
        the broker hands out again anyway. Returns how many pieces were dropped."""
        with self.lock:
            keep = collections.deque(p for p in self.queue if not predicate(p.chunk))
            dropped = len(self.queue) - len(keep)
            self.queue = keep
        return dropped

    def cancel(self, job_id: str) -> None:
        """Drop queued calls of ``job_id``, kill its running calls (others untouched)."""
        with self.lock:
            self.cancels.add(job_id)
            keep: collections.deque[Piece] = collections.deque()
            for piece in self.queue:
                if piece.chunk.job_id == job_id:
                    self._finish_cancelled(piece.chunk, piece.positions)
                else:
                    keep.append(piece)
            self.queue = keep
            for s in self.slots:
                if s.piece is not None and s.piece.chunk.job_id == job_id:
                    s.kill("cancel")

    def _dispatch(self) -> None:
        for s in self.slots:
            if not self.queue:
                return
            if s.piece is None and s.ready.is_set() and not s.killed_for:
                self._send_piece(s, self.queue.popleft(), ahead=False)
        # quick pieces of the job a slot runs go ahead of time: the slot starts
        # them without waiting for this process to read its results
        for s in self.slots:
            if not self.queue:
                return
            if s.piece is not None and s.next is None and not s.killed_for:
                piece = self.queue[0]
                c = piece.chunk
                if c.job_id == s.piece.chunk.job_id and send_ahead(
                    len(piece.positions),
                    self.call_times.get(c.func_hash),
                    len(c.func) + len(c.args),
                    s.prefetch_bytes,
                ):
                    self._send_piece(s, self.queue.popleft(), ahead=True)

    def _send_piece(self, s: _SlotProc, piece: Piece, ahead: bool) -> None:
        self._run_ids += 1
        c = piece.chunk
        if ahead:
            s.next, s.next_run_id = piece, self._run_ids
        else:
            s.piece, s.run_id = piece, self._run_ids
            s.tail_index = None
        func: bytes | None = c.func
        if c.func_hash and c.func_hash in s.funcs:
            func = None  # the slot has it loaded: do not send it again
        elif c.func_hash:
            if len(s.funcs) > slotio.MAX_FUNCS:
                s.funcs.clear()
            s.funcs.add(c.func_hash)
        ok = s.send(
            (
                "run",
                self._run_ids,
                c.func_hash,
                func,
                c.args,
                piece.positions,
                piece.indices().tolist(),
                piece.attempts,
                c.star,
                c.env,
            )
        )
        if not ok:  # the slot died just now; its reader requeues the piece
            s.kill("dead")

    # -- what slots say --------------------------------------------------------
    def _on_message(self, s: _SlotProc, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            s.ready.set()
            with self.lock:
                self._dispatch()
        elif kind == "results":
            piece = s.piece
            if piece is not None:
                self._on_records(s, piece, *msg[2:])
        elif kind == "finished":
            # the slot is idle: give it its next piece first, then report this one's end
            with self.lock:
                piece, s.piece, s.run_id = s.piece, s.next, s.next_run_id
                s.next = None
                tail = (s.tail_index, s.tail_start, s.tail_pos)
                s.tail_index = None
                self._dispatch()
            if piece is None:
                return
            if msg[3]:
                self._on_records(s, piece, *msg[2:], tail=tail)
            if piece.done < len(piece.positions):
                # never lose a call silently, even to a bug of ours in the slot
                self._fail_rest(piece, "the worker's call runner stopped before reporting it")

    def _on_records(
        self,
        s: _SlotProc,
        piece: Piece,
        values: bytes,
        n: int,
        times: array,
        special: dict[int, list],
        tail: tuple[int | None, dict[int, int], dict[int, int]] | None = None,
    ) -> None:
        """Report the next ``n`` calls of ``piece`` (see ``slot.py``), column by
        column: only calls that failed or wrote output are looked at one by one.
        ``tail``: the live tail of the run's last call, when the slot has moved on
        already."""
        c = piece.chunk
        k0 = piece.done
        k1 = piece.done = k0 + n
        indices = piece.indices(k0, k1)
        # seconds per call, overhead included: decides whether pieces go ahead
        self.call_times.note(c.func_hash, (times[-1] - times[0]) / n)
        tail_index = s.tail_index if tail is None else tail[0]
        if tail_index is not None and tail is None and tail_index in indices:
            s.tail_index = None  # that call is over
        attempts = piece.attempts[k0:k1]
        status = bytearray(_DONE * n)
        extra: dict[int, tuple] = {}
        failed = retried = 0
        for k, (st, error, out, err, dropped, blob) in special.items():
            index = indices[k]
            # live log lines not streamed yet, so every subscriber sees the whole output
            if index == tail_index:
                start, sent_to = (s.tail_start, s.tail_pos) if tail is None else tail[1:]
                sent = {stream: sent_to[stream] - start[stream] for stream in (1, 2)}
            else:
                sent = {1: 0, 2: 0}
            for stream, data in ((1, out), (2, err)):
                if len(data) > sent[stream]:
                    self.reporter.output(c, index, stream, data[sent[stream] :])
            attempt = attempts[k]
            if st == FAILED and should_retry(attempt, c.attempt_base, c.retries):
                note = f"attempt {attempt} failed: {_short(error)}"
                self._retry(c, piece.positions[k0 + k], attempt, note)
                status[k] = SKIP  # its outcome comes with the next attempt
                retried += 1
                continue
            failed += st == FAILED
            status[k] = st
            extra[k] = (error, out, err, dropped, blob)
        try:
            attempt_bytes = bytes(attempts)
        except ValueError:  # an attempt past 255: shown as 255
            attempt_bytes = bytes(min(255, a) for a in attempts)
        seg = ResultSegment(
            indices, bytes(status), attempt_bytes, times, values, extra,
            self.worker, self.host, s.pid,
        )  # fmt: skip
        if retried < n:
            self._report_final(c, seg, n - retried - failed, failed)

    def _retry(self, c: Chunk, pos: int, attempt: int, note: str) -> None:
        self.reporter.retrying(c, c.calls[pos], attempt + 1, note)
        with self.lock:
            self.queue.append(Piece(c, [pos], [attempt + 1]))
            self._dispatch()

    def _report_final(self, c: Chunk, seg: ResultSegment, done: int, failed: int) -> None:
        self.done_calls += done
        self.failed_calls += failed
        self.reporter.results(c, seg)
        with self.lock:
            c.remaining -= seg.outcomes
            finished = c.remaining == 0
        if finished:
            self.reporter.chunk_done(c)

    def _report_results(self, c: Chunk, results: list[CallResult]) -> None:
        """Report outcomes the pool decided itself (crashes, cancels), one by one."""
        for seg in ResultSegment.of(results):
            self._report_final(c, seg, seg.status.count(DONE), seg.status.count(FAILED))

    def _fail_rest(self, piece: Piece, why: str) -> None:
        c, now = piece.chunk, time.time()
        results = [
            CallResult(
                index=c.calls[p],
                status=FAILED,
                error={"type": "sif_magic.errors.WorkerLostError", "message": why, "frames": []},
                t_start=now,
                t_end=now,
                attempt=a,
                worker=self.worker,
                host=self.host,
            )
            for p, a in zip(piece.positions[piece.done :], piece.attempts[piece.done :])
        ]
        piece.done = len(piece.positions)
        self._report_results(c, results)

    def _finish_cancelled(self, c: Chunk, positions: Any) -> None:
        now = time.time()
        results = [
            CallResult(
                index=c.calls[p],
                status=CANCELLED,
                t_start=now,
                t_end=now,
                worker=self.worker,
                host=self.host,
            )
            for p in positions
        ]
        if results:
            self._report_results(c, results)

    def _on_slot_exit(self, s: _SlotProc) -> None:
        with self.lock:
            if s in self.slots:
                self.slots.remove(s)
            piece, s.piece = s.piece, None
            ahead, s.next = s.next, None
            closed = self.closed
            if not closed:
                self._spawn()
        if ahead is not None and not closed:  # never started: run it again (or cancel it)
            if s.killed_for == "cancel" or ahead.chunk.job_id in self.cancels:
                self._finish_cancelled(ahead.chunk, ahead.positions)
            else:
                with self.lock:
                    self.queue.appendleft(ahead)
        if piece is not None and not closed:
            self._after_death(s, piece)
        with self.lock:
            self._dispatch()

    def _after_death(self, s: _SlotProc, piece: Piece) -> None:
        """A slot died (or was killed) under ``piece``: settle the call it was
        running, and queue again the calls it had not reported (those it had
        finished but not yet sent are run again: at-least-once)."""
        c = piece.chunk
        if piece.done >= len(piece.positions):
            return
        if s.killed_for == "cancel" or c.job_id in self.cancels:
            self._finish_cancelled(c, piece.positions[piece.done :])
            return
        run_id, cur, start, _, _ = s.state.read()
        if run_id != s.run_id or cur < piece.done or cur >= len(piece.positions):
            cur = -1  # it died between calls: nobody to blame
        again = [k for k in range(piece.done, len(piece.positions)) if k != cur]
        if again:
            with self.lock:
                self.queue.appendleft(
                    Piece(
                        c, [piece.positions[k] for k in again], [piece.attempts[k] for k in again]
                    )
                )
        if cur < 0:
            return
        pos, attempt = piece.positions[cur], piece.attempts[cur]
        index = c.calls[pos]
        if s.killed_for == "timeout":
            error = {
                "type": "sif_magic.errors.CallTimeoutError",
                "message": f"call {index} ran past its {c.timeout:g} s time limit and was killed",
                "frames": [],
            }
        else:
            error = {
                "type": "sif_magic.errors.WorkerLostError",
                "message": f"call {index} did not finish: {_exit_reason(s.proc)}",
                "frames": [],
            }
        if should_retry(attempt, c.attempt_base, c.retries):
            self._retry(c, pos, attempt, error["message"])
            return
        out, err = _read_tail(s, index)
        r = CallResult(
            index=index,
            status=FAILED,
            error=error,
            stdout=out,
            stderr=err,
            t_start=start,
            t_end=time.time(),
            attempt=attempt,
            worker=self.worker,
            host=self.host,
            pid=s.pid,
        )
        self._report_results(c, [r])

    # -- the monitor thread ----------------------------------------------------
    def _monitor(self) -> None:
        while not self.closed:
            time.sleep(TAIL_INTERVAL / 2)
            now = time.time()
            with self.lock:
                slots = list(self.slots)
            for s in slots:
                piece = s.piece
                if piece is None or s.killed_for:
                    continue
                run_id, pos, start, out_off, err_off = s.state.read()
                if run_id != s.run_id or pos < 0 or pos >= len(piece.positions):
                    continue
                c = piece.chunk
                index = c.calls[piece.positions[pos]]
                if c.timeout and now - start > c.timeout:
                    log.debug("call %s of job %s timed out in slot %s", index, c.job_id, s.n)
                    s.kill("timeout")
                    continue
                if s.tail_index != index and now - start >= ANNOUNCE_AFTER:
                    with self.lock:
                        s.tail_index = index
                        s.tail_start = {1: out_off, 2: err_off}
                        s.tail_pos = dict(s.tail_start)
                    self.reporter.started(c, index, piece.attempts[pos], start)
                if s.tail_index == index:
                    self._tail(s, piece)

    def _tail(self, s: _SlotProc, piece: Piece) -> None:
        index = s.tail_index
        for stream, path in ((1, s.out_path), (2, s.err_path)):
            pos = s.tail_pos.get(stream)
            if pos is None:
                return
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    data = f.read(1 << 20)
            except OSError:
                continue
            if not data:
                continue
            cut = data.rfind(b"\n") + 1  # whole lines only while the call runs
            if cut == 0:
                continue
            s.tail_pos[stream] = pos + cut
            if s.tail_index == index:
                self.reporter.output(piece.chunk, index, stream, data[:cut])


def _read_tail(s: _SlotProc, index: int) -> tuple[bytes, bytes]:
    """What a call that died wrote, from the slot's output files."""
    _, _, _, out_off, err_off = s.state.read()
    out = []
    for path, off in ((s.out_path, out_off), (s.err_path, err_off)):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                out.append(f.read(slotio.MAX_CALL_OUTPUT))
        except OSError:
            out.append(b"")
    return out[0], out[1]


def _short(error: dict | None) -> str:
    if not error:
        return "failed"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"[:200]
