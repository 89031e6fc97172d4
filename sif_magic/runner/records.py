"""What a slot keeps of the calls it ran until it sends them to its parent.

Per call of the current run: its return value and two times, or, for a call
that failed or wrote output, a ``Special`` entry (status, error, output). A
flush sends what is there as one message in columns (see ``slotio.py``), or as
several when its values would not fit in one broker message together. A worker
sets ``SIF_MAGIC_MAX_RESULT_BYTES`` (``result_cap``: the broker's message size
limit less room for output); a call whose pickled result alone is over it fails
with a SerializationError that names the size and the fix (its chunk's other
calls go on, and the worker never publishes a message the broker would refuse).

Threads (in the slot process): the main thread, running calls, appends
without the lock (appends are atomic, and a flush takes only whole entries:
``times`` is appended first, and ``specials`` is counted before the entry is
appended); the main thread and the watchdog thread both flush, under ``lock``.
Standard library and cloudpickle only.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import threading
import time
from array import array

from .oob import cloud_pickler, dumps
from .slotio import DONE, FAILED, MAX_CALL_OUTPUT, write_msg
from .spill import SpillError
from .spill import write as spill_write
from .tracebacks import describe_exception

TRUNCATE_AT = 16 << 20  # the output files are emptied between calls past this size
RESULT_CAP_ENV = "SIF_MAGIC_MAX_RESULT_BYTES"
MB = 1 << 20


def result_cap(max_message: int) -> int:
    """The largest pickled result of one call, in a broker message of ``max_message``
    bytes: room is left for its output (up to MAX_CALL_OUTPUT per stream) and framing."""
    return max(max_message - 2 * MAX_CALL_OUTPUT - MB, max_message // 2)


class Special:
    """A call that failed or wrote output, in ``Records.entries`` (others: their value)."""

    __slots__ = ("status", "value", "blob", "error", "out", "err", "dropped")

    def __init__(
        self, status: int, value: object, blob: bytes, error: dict | None, out: bytes,
        err: bytes, dropped: int,
    ) -> None:  # fmt: skip
        self.status, self.value, self.blob, self.error = status, value, blob, error
        self.out, self.err, self.dropped = out, err, dropped


class Records:
    def __init__(self, resp_fd: int) -> None:
        self.resp_fd = resp_fd
        self.lock = threading.Lock()  # guards sending
        self.entries: list = []  # per call: its return value, or a Special
        self.times: list[float] = []  # t_start, t_end per call (a list: cheaper appends)
        self.indices: list[int] | range = []  # job indices of the run's calls
        self.sent = 0  # calls of the run sent so far
        self.specials = 0  # Special entries appended so far (main thread)
        self.specials_sent = 0
        self.last_flush = 0.0
        self.run_id = 0
        self.stopped = -1  # the position the run stopped at, its end given away (slot.py)
        self.spill: tuple[str, int] | None = None  # (directory, over how many bytes)
        self.spill_arrays = 0  # results whose arrays take this many bytes spill too
        self.cap = int(os.environ.get(RESULT_CAP_ENV, "0") or 0)  # 0: no cap (local backend)

    def start(
        self,
        run_id: int,
        indices: list[int] | range,
        spill_dir: str | None = None,
        over: str | None = None,
        arrays: str | None = None,
    ) -> None:
        """A new run (with ``lock`` held); its results pickled past ``over`` bytes go
        to ``spill_dir``, and so do those whose arrays take ``arrays`` bytes or more
        (inline if the file cannot be written)."""
        self.run_id = run_id
        self.stopped = -1
        self.indices = indices
        self.sent = 0
        over_n = int(over) if over else 0
        if over_n and self.cap:  # what the broker takes here is the lower bound
            over_n = min(over_n, self.cap)
        self.spill = (spill_dir, over_n) if spill_dir and over_n else None
        self.spill_arrays = int(arrays) if self.spill is not None and arrays else 0

    def send(self, msg: object) -> None:
        with self.lock:
            write_msg(self.resp_fd, msg)

    def flush(self, final: bool = False) -> None:
        with self.lock:
            n = len(self.entries)
            # the main thread counts a special entry before appending it: if one is
            # among the first n, the count read now includes it
            scan = self.specials != self.specials_sent
            if n or final:
                entries = self.entries[:n]
                del self.entries[:n]
                times = _doubles(self.times, 2 * n)
                del self.times[: 2 * n]
                special: dict[int, list] = {}
                if scan:
                    for k, r in enumerate(entries):
                        if type(r) is Special:
                            special[k] = [r.status, r.error, r.out, r.err, r.dropped, r.blob]
                            entries[k] = r.value
                    self.specials_sent += len(special)
                self._send(entries, times, special, final)
            self.last_flush = time.time()

    def _send(
        self, entries: list, times: array, special: dict[int, list], final: bool, why: str = ""
    ) -> None:
        """With ``lock`` held: one message; values over the spill size go to a file
        (``spill``); where none can be written (or the job has no spill directory),
        values over the cap go in two halves (and so on), and a single value over it
        fails its call (``why``: the spill error, said too)."""
        n = len(entries)
        buffers: list[memoryview] = []
        values = self._pickle_values(entries, special, buffers)
        size = _size(values, buffers)
        must = self.spill is not None and size > self.spill[1]
        arrays = buffers and self.spill_arrays and _size(b"", buffers) >= self.spill_arrays
        if not why and (must or arrays):
            try:  # the client reads it
                values = spill_write(self.spill[0], "result", values, buffers)  # type: ignore[index]
            except SpillError as e:
                if must:
                    why = str(e)  # else inline: the file only spared the broker
            else:
                self._write(n, times, special, final, values, [])
                return
        if self.cap and size > self.cap:
            if n > 1:
                h = n // 2
                first = {k: v for k, v in special.items() if k < h}
                self._send(entries[:h], times[: 2 * h], first, False, why)
                rest = {k - h: v for k, v in special.items() if k >= h}
                self._send(entries[h:], times[2 * h :], rest, final, why)
                return
            values, buffers = self._too_large(special, size, why), []
        elif why and self.spill is not None and size > self.spill[1]:  # no cap (local)
            values, buffers = self._spill_failed(special, n, why), []
        self._write(n, times, special, final, values, buffers)

    def _write(
        self,
        n: int,
        times: array,
        special: dict[int, list],
        final: bool,
        values: bytes,
        buffers: list,
    ) -> None:
        self.sent += n
        oob = [pickle.PickleBuffer(b) for b in buffers]  # written beside the message
        if final:
            msg = ("finished", self.run_id, values, n, times, special, oob, self.stopped)
        else:
            msg = ("results", self.run_id, values, n, times, special, oob)
        write_msg(self.resp_fd, msg)

    def _too_large(self, special: dict[int, list], size: int, why: str = "") -> bytes:
        """The one call of this message returned more than the cap: it fails (``why``:
        why it could not go through a spill file instead)."""
        entry = special.setdefault(0, [DONE, None, b"", b"", 0, b""])
        index = self.indices[self.sent] if self.sent < len(self.indices) else "?"
        entry[0], entry[5] = FAILED, b""
        entry[1] = {
            "type": "sif_magic.errors.SerializationError",
            "message": f"the result of call {index} is {size / MB:.1f} MB pickled, over the "
            f"{self.cap / MB:.1f} MB a result may take (the broker's message size limit, "
            "RabbitMQ's max_message_size, less room for output). Return less: write large "
            "outputs to storage the notebook can read and return their path"
            + (f"; it could not go through a file either: {why}" if why else ""),
            "frames": [],
        }
        return pickle.dumps([None], protocol=5)

    def _pickle_values(self, values: list, special: dict[int, list], buffers: list) -> bytes:
        """One pickle of the calls' return values (their arrays' memory appended to
        ``buffers``: ``oob.py``); a value that cannot be pickled (even by
        cloudpickle) fails its call with a SerializationError instead."""
        try:
            return dumps(values, buffers)
        except Exception:  # noqa: BLE001 - a lambda, a local class, an open file ...
            del buffers[:]
        try:
            return dumps(values, buffers, cloud_pickler())
        except Exception:  # noqa: BLE001
            del buffers[:]
        for k, value in enumerate(values):
            if value is None:
                continue
            try:
                dumps(value, None, cloud_pickler())
            except Exception as e:  # noqa: BLE001
                entry = special.setdefault(k, [DONE, None, b"", b"", 0, b""])
                i = self.sent + k
                index = self.indices[i] if i < len(self.indices) else "?"
                entry[0] = FAILED
                entry[1] = {
                    "type": "sif_magic.errors.SerializationError",
                    "message": f"the result of call {index} ({type(value).__name__}) cannot"
                    f" be pickled to send it back: {e}",
                    "frames": [],
                }
                values[k] = None
        return dumps(values, buffers, cloud_pickler())

    def _spill_failed(self, special: dict[int, list], n: int, why: str) -> bytes:
        """Results too big for a message whose spill file could not be written (and no
        cap to send them in parts): the calls fail saying so."""
        error = {"type": "sif_magic.errors.SerializationError", "message": why, "frames": []}
        for k in range(n):
            entry = special.setdefault(k, [DONE, None, b"", b"", 0, b""])
            entry[0], entry[1] = FAILED, error
        return pickle.dumps([None] * n, protocol=5)

    def all_failed(self, error: dict, n: int) -> None:
        """``n`` calls failed with ``error`` without running (their chunk did not load)."""
        now = time.time()
        for _ in range(n):
            self.times.append(now)
            self.times.append(now)
            self.specials += 1
            self.entries.append(Special(FAILED, None, b"", error, b"", b"", 0))

    def record(
        self,
        value: object,
        start: float,
        end: float,
        out0: int,
        err0: int,
        ok: bool = False,
    ) -> tuple[int, int]:
        """Record a call that failed (``value`` is the exception) or wrote output
        (``ok``), its output being what the files got past ``out0``/``err0``;
        returns where the next call's output starts."""
        if ok:
            status, error, blob = DONE, None, b""
        else:
            status, error = FAILED, describe_exception(value)  # type: ignore[arg-type]
            try:
                blob = dumps_value(value)
            except Exception:  # noqa: BLE001 - it travels as its description only
                blob = b""
            value = None
        sys.stdout.flush()
        sys.stderr.flush()
        out, d1, out_end = slice_output(1, out0)
        err, d2, err_end = slice_output(2, err0)
        self.times.append(start)
        self.times.append(end)
        if status == DONE and not out and not err and not d1 + d2:
            self.entries.append(value)
        else:
            self.specials += 1  # before the append: a flush that sees the entry sees this
            self.entries.append(Special(status, value, blob, error, out, err, d1 + d2))
        return out_end, err_end

    def give_output(self, out0: int, err0: int) -> tuple[int, int]:
        """Output written past ``out0``/``err0`` by quick calls goes to the last call
        still here (if it succeeded quietly). Returns where the next call's output
        starts (unchanged if no call was there to take it)."""
        with self.lock:  # the watchdog may be sending the entries
            if not self.entries or type(self.entries[-1]) is Special:
                return out0, err0
            out, d1, out_end = slice_output(1, out0)
            err, d2, err_end = slice_output(2, err0)
            self.specials += 1
            self.entries[-1] = Special(DONE, self.entries[-1], b"", None, out, err, d1 + d2)
        return out_end, err_end


def slice_output(fd: int, start: int) -> tuple[bytes, int, int]:
    """(bytes written to ``fd`` since ``start``, bytes dropped from their head, new end)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end < start:  # emptied meanwhile (should not happen between our own calls)
        start = 0
    if end == start:
        data, dropped = b"", 0
    else:
        dropped = max(0, end - start - MAX_CALL_OUTPUT)
        data = os.pread(fd, end - start - dropped, start + dropped)
    if end > TRUNCATE_AT:
        os.ftruncate(fd, 0)
        end = 0
    return data, dropped, end


def dumps_value(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def _doubles(floats: list[float], n: int) -> array:
    """The first ``n`` of ``floats`` as an ``array('d')`` (through ``struct``: the
    array's own constructor parses each item as an argument, several times slower)."""
    return array("d", struct.pack(f"{n}d", *floats[:n]))


def _size(values: bytes, buffers: list[memoryview]) -> int:
    return len(values) + sum(b.nbytes for b in buffers)
