"""What a slot and its parent share: the pipes' messages and the state file.

Both sides import this: the parent (``slotproc.py``) as part of the package,
the slot process (``slot.py``, run by path) as a private copy. Standard
library only. Threads: each pipe end has one reader or writer (see
``slotproc.py``, ``records.py``); the state file has one writer, the slot's
main thread, and two readers, the pool's dispatcher and the slot's watchdog
(the position the main thread claimed, ``slot.py``).

Messages are pickles whose ``PickleBuffer``s travel beside them (``oob.py``:
``write_msg``, ``read_msg``, ``FrameReader``). Parent -> slot (request pipe)::

    ("run", run_id, func_hash, func_bytes | None, args, positions, indices,
     attempts, star, env, buffers)  # positions, indices: a list, or (start, stop) for a range
    ("runs", [(run_id, func_hash, ...), ...])  # several runs (the fields of "run"), in order

Slot -> parent (on the response pipe)::

    ("ready", pid)
    ("results", run_id, values, n, times, special, buffers)   # some calls finished
    ("finished", run_id, values, n, times, special, buffers, stopped)  # the last: run over
    ("split", run_id, e, old_end)  # positions e..old_end-1 of the run are given away

Parent -> slot (control pipe, fixed records ``SPLIT``): ``(run_id, share, last)``,
give away ``share`` per mille of the run's calls not started yet (to an idle
slot); the slot answers ``split`` with what it gave (``e == old_end``: nothing).
With ``share == WHOLE``, the runs sent ahead from ``run_id`` to ``last`` (the
last run the parent sent) are given back if they have not started: the answer
is ``("split", first, 0, -1)`` (runs ``first..last`` never run here, and nothing
more is said of them) or, if they all started already, ``("split", run_id, -1, -1)``. ``stopped`` (-1: none) is the
position at which the run stopped because its end had been given away; the
parent runs positions from there to its end of the run again (slot.py says why
there may be one).

The calls of a run report in order, ``n`` at a time, in columns: ``values`` is
one pickle of the list of their return values (taken when the message is
sent, as ProcessPoolExecutor does for a chunk; None for calls that failed),
``buffers`` its out-of-band buffers (and ``args`` the inputs' pickle, ``buffers``
of the request theirs: arrays travel as their raw memory, ``oob.py``),
``times`` an ``array('d')`` of ``t_start, t_end`` per call; ``special`` maps
the position (in this message) of each call that failed or wrote output to
``[status, error, out, err, dropped, blob]``, ``blob`` being the pickled
exception of a failed call; the others succeeded quietly. ``func_bytes`` is
None when the slot has the function loaded already: the parent mirrors the
slot's cache of MAX_FUNCS functions.

The state file is a small file both sides map into memory (``SharedState``):
before each call the slot writes which call it is running, since when, and
where its output starts (a seqlock: ``seq`` is odd while it writes). The
parent reads it to show calls as running, to enforce time limits and, when the
slot dies, to know exactly which call killed it: results are sent in batches,
so the last reported call says nothing about which one was running. Past that
record, a second seqlocked record holds the progress the running call last
reported (``sif_magic.report``: fraction and message), which the parent reads
at its tick: a call that reports every microsecond writes memory, never a pipe.
"""

from __future__ import annotations

import mmap
import os
import struct

from .oob import read_msg, write_msg  # noqa: F401  (the pipes' messages)

# seq, run_id, position in the run (-1: between calls), start time, out offset, err offset
STATE = struct.Struct("=qqqdqq")
# between calls of a run whose output offsets did not move, the slot stores just the
# start time, then the position (aligned 8-byte stores, in this order): a reader
# that catches it in between sees the previous call with the new start time, which
# is harmless (that call is over); never the new call with the old start time
POS_AT, START_AT = 16, 24
POS, START = struct.Struct("=q"), struct.Struct("=d")
DONE, FAILED = 2, 3  # call statuses (the same numbers as protocol.DONE, protocol.FAILED)
MAX_CALL_OUTPUT = 1 << 20  # bytes of each stream kept per call (the tail)
MAX_FUNCS = 8  # loaded functions a slot keeps; more: its cache starts again
# the progress a call reported: seq, run_id, position, fraction, message length; message
PROGRESS = struct.Struct("=qqqdq")
PROGRESS_AT = 64
MAX_MESSAGE = 240  # bytes of a reported message kept (UTF-8, cut at a character)
STATE_SIZE = PROGRESS_AT + PROGRESS.size + MAX_MESSAGE
# the parent's request on the control pipe: give away this share (per mille) of the
# calls not started yet of run run_id, or (WHOLE) the runs from run_id to last, sent
# ahead (see slot.py); last: the last run the parent sent
SPLIT = struct.Struct("=qqq")
WHOLE = -1


class SharedState:
    """The seqlocked record of the call a slot is running (both sides use it)."""

    def __init__(self, path: str, create: bool = False) -> None:
        if create:
            with open(path, "wb") as f:
                f.write(b"\0" * STATE_SIZE)
        self.fd = os.open(path, os.O_RDWR)
        self.mem = mmap.mmap(self.fd, STATE_SIZE)
        self.seq = 0
        self.progress_seq = 0  # the slot's side: progress records written

    def write(self, run_id: int, pos: int, start: float, out: int, err: int) -> None:
        self.seq += 1
        STATE.pack_into(self.mem, 0, self.seq * 2 - 1, run_id, pos, start, out, err)
        STATE.pack_into(self.mem, 0, self.seq * 2, run_id, pos, start, out, err)

    def read(self) -> tuple[int, int, float, int, int]:
        """(run_id, position, start, out offset, err offset) of the current call."""
        for _ in range(1000):
            seq, run_id, pos, start, out, err = STATE.unpack_from(self.mem, 0)
            if seq % 2 == 0 and STATE.unpack_from(self.mem, 0)[0] == seq:
                return run_id, pos, start, out, err
        return 0, -1, 0.0, 0, 0

    def report(self, fraction: float, message: str) -> None:
        """The slot's side: the running call is ``fraction`` done (``message``)."""
        _, run_id, pos, _, _, _ = STATE.unpack_from(self.mem, 0)
        if pos < 0:
            return  # between calls (a thread of a call that ended): nothing to show
        text = message.encode("utf-8")[:MAX_MESSAGE].decode("utf-8", "ignore").encode("utf-8")
        self.progress_seq += 1
        seq, mem = self.progress_seq, self.mem
        PROGRESS.pack_into(mem, PROGRESS_AT, 2 * seq - 1, run_id, pos, fraction, len(text))
        at = PROGRESS_AT + PROGRESS.size
        mem[at : at + len(text)] = text
        PROGRESS.pack_into(mem, PROGRESS_AT, 2 * seq, run_id, pos, fraction, len(text))

    def progress(self) -> tuple[int, int, int, float, str]:
        """The parent's side: (seq, run_id, position, fraction, message) last reported."""
        at = PROGRESS_AT + PROGRESS.size
        for _ in range(1000):
            seq, run_id, pos, fraction, size = PROGRESS.unpack_from(self.mem, PROGRESS_AT)
            text = bytes(self.mem[at : at + min(max(size, 0), MAX_MESSAGE)])
            if seq % 2 == 0 and PROGRESS.unpack_from(self.mem, PROGRESS_AT)[0] == seq:
                return seq, run_id, pos, fraction, text.decode("utf-8", "replace")
        return 0, 0, -1, 0.0, ""

    def close(self) -> None:
        self.mem.close()
        os.close(self.fd)
