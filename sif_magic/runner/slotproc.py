"""The parent side of one slot process (``slot.py``): its pipes, state and output files.

Threads: the pool's dispatcher thread (and, before it starts, the thread that
starts the pool) creates a ``SlotProc``, sends it work, reads what it sends
back (``receive``: the response pipe is non-blocking, watched by the
dispatcher's selector), kills it, reads its state file and output files, and
is the only writer of its attributes. Another thread may wait on ``ready`` or
read ``pid`` and ``piece``; ``Pool.close`` may ``signal_kill`` as a last resort.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading

from . import oob, slotio
from .chunk import Piece
from .reporter import Reporter
from .resources import Need

log = logging.getLogger("sif_magic.pool")
ANNOUNCE_AFTER = 0.02  # a call running this long is shown as running

IN_BAND = 1 << 16  # function and inputs pickles shorter than this go inside the message
# the call process, run by path (see slot.py)
SLOT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slot.py")


class Tail:
    """The live tail of the call a slot runs: where its output started, how far
    it was sent (whole lines only, while the call runs)."""

    __slots__ = ("index", "start", "pos")

    def __init__(self, index: int, out: int, err: int) -> None:
        self.index = index
        self.start = [out, err]
        self.pos = [out, err]

    def sent(self) -> tuple[int, int]:
        """Bytes of stdout and stderr sent so far."""
        return self.pos[0] - self.start[0], self.pos[1] - self.start[1]

    def new_lines(self, paths: tuple[str, str]) -> list[tuple[int, bytes]]:
        """(stream, bytes) of the whole lines written since the last look."""
        lines = []
        for k, path in enumerate(paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self.pos[k])
                    data = f.read(1 << 20)
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            if cut:
                self.pos[k] += cut
                lines.append((k + 1, data[:cut]))
        return lines


class SlotProc:
    def __init__(
        self,
        n: int,
        workdir: str,
        cwd: str,
        need: Need = Need(),
        held: tuple[int, ...] = (),
        devices: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        """``need``: its shape (the GPUs and CPUs it holds); ``held``: the positions of
        its devices in the pool's list, ``devices`` their ids ("0,1"); ``env``: the
        variables it starts with (``resources.slot_environ``)."""
        self.n = n
        self.need = need
        self.held = held
        self.devices = devices
        self.paths = (os.path.join(workdir, f"slot{n}.out"), os.path.join(workdir, f"slot{n}.err"))
        state_path = os.path.join(workdir, f"slot{n}.state")
        self.state = slotio.SharedState(state_path, create=True)
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        ctl_r, self.ctl_w = os.pipe()  # split requests (slotio.SPLIT), read by its watchdog
        os.set_blocking(self.ctl_w, False)
        for fd in (req_r, resp_w):  # big pipes: arrays pass in fewer wake-ups of either side
            oob.widen(fd)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                SLOT_SCRIPT,
                str(req_r),
                str(resp_w),
                *self.paths,
                state_path,
                str(ctl_r),
            ],
            pass_fds=(req_r, resp_w, ctl_r),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: signals to the kernel skip it
            cwd=cwd,
            env={**os.environ, **env} if env else None,  # set before it imports anything
        )
        os.close(req_r)
        os.close(resp_w)
        os.close(ctl_r)
        os.set_blocking(self.resp_r, False)
        self.reader = oob.FrameReader(self.resp_r, self.signal_kill)
        self.pid = self.proc.pid
        try:  # a message this small never blocks in the request pipe while the slot runs
            self.room = fcntl.fcntl(self.req_w, fcntl.F_GETPIPE_SZ) // 2
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            self.room = 2048
        self.up = False  # it said it is ready
        self.piece: Piece | None = None  # the piece it runs (or was given last)
        self.run_id = 0
        # sent ahead, in order: (run_id, piece) it runs once ``piece`` is finished
        self.ahead: collections.deque[tuple[int, Piece]] = collections.deque()
        self.runs = 0
        self.killed_for = ""  # why we killed it, if we did
        self.funcs: set[str] = set()  # function hashes it holds (mirrors Slot._function)
        self.tail: Tail | None = None  # the call shown live (once announced)
        self.asked = 0  # the run asked to give calls away, until it answers
        self.asked_for = 0  # how many idle slots those calls are for
        self.giving_back = False  # asked to give back runs sent ahead, until it answers
        self.progress_seq = 0  # the last progress record passed on (see slotio.SharedState)
        self.ready = threading.Event()  # set with ``up``

    @property
    def next(self) -> Piece | None:
        """The first piece sent ahead (None: none)."""
        return self.ahead[0][1] if self.ahead else None

    def ahead_load(self) -> tuple[int, int]:
        """Calls and bytes of the pieces sent ahead (not started, as far as we know)."""
        return (
            sum(len(p.positions) for _, p in self.ahead),
            sum(p.chunk.nbytes for _, p in self.ahead),
        )

    def send(self, piece: Piece, ahead: bool) -> None:
        """Have it run ``piece`` (``ahead``: once the pieces it has are finished)."""
        self._write(("run", *self._run(piece, ahead)))

    def send_ahead(self, pieces: list[Piece]) -> None:
        """Have it run ``pieces``, in order, once the pieces it has are finished:
        one request for them all (one write here, one read and wake-up there)."""
        if len(pieces) == 1:
            self.send(pieces[0], True)
        else:
            self._write(("runs", [self._run(p, True) for p in pieces]))

    def _run(self, piece: Piece, ahead: bool) -> tuple:
        """The fields of the request to run ``piece`` (see ``slotio.py``), noted as sent."""
        self.runs += 1
        if ahead:
            self.ahead.append((self.runs, piece))
        else:
            self.piece, self.run_id, self.tail = piece, self.runs, None
        c = piece.chunk
        func: bytes | None = c.func
        if c.func_hash and c.func_hash in self.funcs:
            func = None  # the slot has it loaded: do not send it again
        elif c.func_hash:
            if len(self.funcs) > slotio.MAX_FUNCS:
                self.funcs.clear()
            self.funcs.add(c.func_hash)
        positions = piece.positions
        if type(positions) is range and positions.step == 1:
            positions = (positions.start, positions.stop)  # cheaper to pickle than a range
        indices = piece.span() or piece.indices().tolist()  # (a, b): a range, as positions
        return (self.runs, c.func_hash, _beside(func), _beside(c.args), positions,
                indices, piece.attempts, c.star, c.env,
                [pickle.PickleBuffer(b) for b in c.buffers])  # fmt: skip

    def _write(self, msg: tuple) -> None:
        try:
            slotio.write_msg(self.req_w, msg)
        except OSError:  # it died just now: its exit settles the piece
            self.kill("dead")

    def ask_split(self, share: int, slots: int, ahead: bool = False) -> None:
        """Ask it to give away ``share`` per mille of the calls of the run it runs
        that it has not started, for ``slots`` idle slots (``ahead``: the later half
        of the runs sent ahead, those it has not started); it answers ("split", ...)."""
        if ahead:
            run_id = self.ahead[len(self.ahead) // 2][0]
            self.giving_back = True
        else:
            run_id = self.run_id
        self.asked, self.asked_for = run_id, slots
        try:
            record = slotio.SPLIT.pack(run_id, slotio.WHOLE if ahead else share, self.runs)
            os.write(self.ctl_w, record)
        except OSError:  # full (it does not read: it is stuck or dying) or closed
            pass

    def unstarted(self, now: float) -> tuple[int, float]:
        """Positions of ``piece`` it has not started (or reported) yet, as far as we
        know, and for how long the call it runs has been running (0: none)."""
        piece = self.piece
        if piece is None:
            return 0, 0.0
        running = self.current()
        if running is None:
            return len(piece.positions) - piece.done, 0.0
        first = max(piece.done, running[0] + 1)
        return len(piece.positions) - first, max(0.0, now - running[1])

    def kill(self, why: str) -> None:
        self.killed_for = why
        self.signal_kill()

    def signal_kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the call's own children go too
        except ProcessLookupError:
            pass

    def current(self) -> tuple[int, float, int, int] | None:
        """(position in ``piece``, start, stdout offset, stderr offset) of the call it
        runs now; None between calls."""
        run_id, pos, start, out, err = self.state.read()
        piece = self.piece
        if piece is None or run_id != self.run_id or pos < 0 or pos >= len(piece.positions):
            return None
        return pos, start, out, err

    def watch(self, now: float, reporter: Reporter) -> None:
        """Kill the call it runs if past its time limit; show a call that runs for
        ANNOUNCE_AFTER as running, the whole lines of output it wrote since, and
        the progress it reported last (``sif_magic.report``) if that is new."""
        piece = self.piece
        if piece is None or self.killed_for:
            return
        running = self.current()
        if running is None:
            return
        pos, start, out_off, err_off = running
        c = piece.chunk
        index = c.calls[piece.positions[pos]]
        if c.timeout and now - start > c.timeout:
            log.debug("call %s of job %s timed out in slot %s", index, c.job_id, self.n)
            self.kill("timeout")
            return
        seq, run_id, at, fraction, message = self.state.progress()
        reported = seq != self.progress_seq and run_id == self.run_id and at == pos
        tail = self.tail
        # a call that reported progress is shown running at once (else the job saw
        # its fraction while it still said queued, until ANNOUNCE_AFTER)
        if (tail is None or tail.index != index) and (reported or now - start >= ANNOUNCE_AFTER):
            tail = self.tail = Tail(index, out_off, err_off)
            reporter.started(c, index, piece.attempts[pos], start)
        if tail is not None and tail.index == index:
            for stream, data in tail.new_lines(self.paths):
                reporter.output(c, index, stream, data)
        if reported:
            self.progress_seq = seq
            reporter.progress(c, index, fraction, message)

    def last_output(self) -> tuple[bytes, bytes]:
        """What the call it ran last wrote (for a call that died), from its files."""
        _, _, _, out_off, err_off = self.state.read()
        out = []
        for path, off in zip(self.paths, (out_off, err_off)):
            try:
                with open(path, "rb") as f:
                    f.seek(off)
                    out.append(f.read(slotio.MAX_CALL_OUTPUT))
            except OSError:
                out.append(b"")
        return out[0], out[1]

    def exit_reason(self) -> str:
        rc = self.proc.returncode
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

    def receive(self) -> list[tuple] | None:
        """The whole messages that arrived (a part of the next one waits in the
        reader); None once the slot closed its pipe (it died) or garbled it."""
        return self.reader.receive()

    def close(self) -> None:
        """After its exit: the pipes and the state file."""
        for fd in (self.req_w, self.resp_r, self.ctl_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.state.close()


def _beside(blob: bytes | None) -> object:
    """A big pickle travels beside the message (written as it is), a small one inside."""
    if blob is not None and len(blob) >= IN_BAND:
        return pickle.PickleBuffer(blob)
    return blob
