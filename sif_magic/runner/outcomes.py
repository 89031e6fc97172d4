"""What calls ended as, told to the Reporter as ResultSegments.

Two sources: a slot's records of the calls it ran (column by column: only
calls that failed or wrote output are looked at one by one), and outcomes the
pool decides itself (cancelled, lost with a dead slot, timed out). A failed
call that has attempts left is not reported as failed: it is retried (its
status is SKIP in the segment) and a new piece is handed back to the pool.

Threads: the pool's dispatcher thread only. It owns the counters, each
chunk's ``remaining`` and each piece's ``done``; other threads may read
``done_calls`` and ``failed_calls``.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence

from ..protocol import CANCELLED, DONE, FAILED, SKIP, CallResult, ResultSegment
from .chunk import Chunk, Piece
from .reporter import Reporter
from .scheduler import CallTimes, should_retry
from .slotproc import SlotProc, Tail

_DONE = bytes([DONE])
TIMEOUT_ERROR = "sif_magic.errors.CallTimeoutError"
LOST_ERROR = "sif_magic.errors.WorkerLostError"


def error(etype: str, message: str) -> dict:
    return {"type": etype, "message": message, "frames": []}


class Outcomes:
    def __init__(self, reporter: Reporter, call_times: CallTimes, worker: str, host: str) -> None:
        self.reporter = reporter
        self.call_times = call_times
        self.worker = worker
        self.host = host
        self.done_calls = 0
        self.failed_calls = 0

    def records(
        self,
        piece: Piece,
        pid: int,
        values: bytes,
        n: int,
        times: array,
        special: dict[int, list],
        buffers: list,
        tail: Tail | None,
        devices: str = "",
    ) -> tuple[list[Piece], bool]:
        """Report the next ``n`` calls of ``piece`` (see ``slotio.py``; ``buffers``:
        those of ``values``, handed on as they came). ``tail``: the
        slot's live tail, whose call's output was partly sent already; ``devices``:
        the GPUs the slot holds. Returns the
        pieces to run again (retries) and whether the tail's call is among these."""
        c = piece.chunk
        k0 = piece.done
        k1 = piece.done = k0 + n
        indices = piece.indices(k0, k1)
        in_order = piece.span(k0, k1) is not None
        # seconds per call, overhead included: decides whether pieces go ahead
        self.call_times.note(c.func_hash, (times[-1] - times[0]) / n)
        attempts = piece.attempts[k0:k1]
        status = bytearray(_DONE * n)
        extra: dict[int, tuple] = {}
        failed = 0
        retries: list[Piece] = []
        for k, (st, err_record, out, err, dropped, blob) in special.items():
            index = indices[k]
            # live log lines not streamed yet, so every subscriber sees the whole output
            sent = tail.sent() if tail is not None and tail.index == index else (0, 0)
            for stream, data, skip in ((1, out, sent[0]), (2, err, sent[1])):
                if len(data) > skip:
                    self.reporter.output(c, index, stream, data[skip:])
            attempt = attempts[k]
            if st == FAILED and should_retry(attempt, c.attempt_base, c.retries):
                note = f"attempt {attempt} failed: {_short(err_record)}"
                retries.append(self.retry(c, piece.positions[k0 + k], attempt, note))
                status[k] = SKIP  # its outcome comes with the next attempt
                continue
            failed += st == FAILED
            status[k] = st
            extra[k] = (err_record, out, err, dropped, blob)
        try:
            attempt_bytes = bytes(attempts)
        except ValueError:  # an attempt past 255: shown as 255
            attempt_bytes = bytes(min(255, a) for a in attempts)
        seg = ResultSegment(
            indices, bytes(status), attempt_bytes, times, values, extra,
            self.worker, self.host, pid, devices, buffers, in_order,
        )  # fmt: skip
        if len(retries) < n:
            self._final(c, seg, n - len(retries) - failed, failed)
        return retries, tail is not None and tail.index in indices

    def slot_died(
        self, s: SlotProc, piece: Piece, cancelled: bool
    ) -> tuple[Piece | None, Piece | None]:
        """Slot ``s`` died (or was killed) under ``piece``: settle the call it was
        running (``cancelled``: every call left). Returns the calls it had not
        reported, to run again first (those it had finished but not yet sent
        run again: at-least-once), and the retry of the call it was running."""
        c = piece.chunk
        if piece.done >= len(piece.positions):
            return None, None
        if cancelled:
            self.cancelled(c, piece.positions[piece.done :])
            return None, None
        running = s.current()
        cur, start = (-1, 0.0) if running is None else running[:2]
        if cur < piece.done:
            cur = -1  # it died between calls: nobody to blame
        left = [k for k in range(piece.done, len(piece.positions)) if k != cur]
        again = None
        if left:
            again = Piece(c, [piece.positions[k] for k in left], [piece.attempts[k] for k in left])
        if cur < 0:
            return again, None
        pos, attempt = piece.positions[cur], piece.attempts[cur]
        index = c.calls[pos]
        if s.killed_for == "timeout":
            why = error(TIMEOUT_ERROR, f"call {index} ran past its {c.timeout:g} s time limit "
                        "and was killed")  # fmt: skip
        else:
            why = error(LOST_ERROR, f"call {index} did not finish: {s.exit_reason()}")
        if should_retry(attempt, c.attempt_base, c.retries):
            return again, self.retry(c, pos, attempt, why["message"])
        out, err = s.last_output()
        self.failed(c, [pos], [attempt], why, start, out, err, s.pid, s.devices)
        return again, None

    def retry(self, c: Chunk, pos: int, attempt: int, note: str) -> Piece:
        """Attempt ``attempt`` of the call at ``pos`` failed: the piece of its next one."""
        self.reporter.retrying(c, c.calls[pos], attempt + 1, note)
        return Piece(c, [pos], [attempt + 1])

    def cancelled(self, c: Chunk, positions: Sequence[int]) -> None:
        now = time.time()
        results = [
            CallResult(index=c.calls[p], status=CANCELLED, t_start=now, t_end=now,
                       worker=self.worker, host=self.host)
            for p in positions
        ]  # fmt: skip
        self._report(c, results)

    def failed(
        self,
        c: Chunk,
        positions: Sequence[int],
        attempts: Sequence[int],
        error: dict,
        start: float = 0.0,
        out: bytes = b"",
        err: bytes = b"",
        pid: int = 0,
        devices: str = "",
    ) -> None:
        """Calls that failed without a record of their own (their slot died or was
        killed, or stopped before reporting them)."""
        now = time.time()
        results = [
            CallResult(index=c.calls[p], status=FAILED, error=error, stdout=out, stderr=err,
                       t_start=start or now, t_end=now, attempt=a, worker=self.worker,
                       host=self.host, pid=pid, devices=devices)
            for p, a in zip(positions, attempts)
        ]  # fmt: skip
        self._report(c, results)

    def _report(self, c: Chunk, results: list[CallResult]) -> None:
        for seg in ResultSegment.of(results):
            self._final(c, seg, seg.status.count(DONE), seg.status.count(FAILED))

    def _final(self, c: Chunk, seg: ResultSegment, done: int, failed: int) -> None:
        self.done_calls += done
        self.failed_calls += failed
        self.reporter.results(c, seg)
        c.remaining -= seg.outcomes
        if c.remaining == 0:
            self.reporter.chunk_done(c)


def _short(error: dict | None) -> str:
    if not error:
        return "failed"
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"[:200]
