"""One warm process that runs calls: ``python _slot.py REQ_FD RESP_FD OUT ERR STATE``.

Its file descriptors 1 and 2 point at two files (``OUT``, ``ERR``, opened
O_APPEND), so whatever a call writes, from Python, C code or a subprocess, lands
there. After a call the slot notes the files' sizes (the previous call's end is
the next call's start) and sends the bytes written in between with the call's
record: output is attributed to calls exactly, without a pipe read per call
(quick calls skip this once their function has shown it writes only through
``sys.stdout``, see ``Slot._calls``). The parent tails the same files for live
logs of calls that run for a while.

``STATE`` is a small file both sides map into memory: before each call the
slot writes which call it is running, since when, and where its output starts
(a seqlock: ``seq`` is odd while it writes). The parent reads it to show calls
as running, to enforce time limits and, when the slot dies, to know exactly
which call killed it: results are sent in batches, so the last reported call
says nothing about which one was running.

Parent -> slot (length-prefixed pickles on REQ_FD)::

    ("run", run_id, func_hash, func_bytes | None, args_bytes, positions, indices,
     attempts, star, env)

Slot -> parent (on RESP_FD)::

    ("ready", pid)
    ("results", run_id, values, n, times, special)   # some calls of the run finished
    ("finished", run_id, values, n, times, special)  # the last ones: the run is over

The calls of a run report in order, ``n`` at a time, in columns: ``values`` is
one pickle of the list of their return values (taken when the message is
sent, as ProcessPoolExecutor does for a chunk; None for calls that failed),
``times`` an ``array('d')`` of ``t_start, t_end`` per call; ``special`` maps
the position (in this message) of each call that failed or wrote output to
``[status, error, out, err, dropped, blob]``, ``blob`` being the pickled
exception of a failed call; the others succeeded quietly.
Standard library and cloudpickle only: this runs inside the worker image.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import mmap
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
import types
from array import array
from typing import Any

_LEN = struct.Struct(">I")
# seq, run_id, position in the run (-1: between calls), start time, out offset, err offset
STATE = struct.Struct("=qqqdqq")
# between calls of a run whose output offsets did not move, the slot stores just the
# start time, then the position (aligned 8-byte stores, in this order): a reader
# that catches it in between sees the previous call with the new start time, which
# is harmless (that call is over); never the new call with the old start time
_POS_AT, _START_AT = 16, 24
_POS, _START = struct.Struct("=q"), struct.Struct("=d")
DONE, FAILED = 2, 3
MAX_CALL_OUTPUT = 1 << 20  # bytes of each stream kept per call (the tail)
TRUNCATE_AT = 16 << 20  # the output files are emptied between calls past this size
FLUSH_EVERY = 0.002  # seconds between result batches while calls are quick
QUICK = 50e-6  # seconds: a call this quick, that wrote nothing through sys.stdout/stderr, ...
PRECISE_FIRST = 256  # ... after this many calls of its function, is not checked on its own
CHECK_EVERY = 255  # but with the others, every 256 calls (and before results are sent)
MAX_FUNCS = 8  # loaded functions kept; more: the cache starts again
WATCH_EVERY = 0.01  # the watchdog sends finished results while a long call runs
_THIS_FILE = os.path.abspath(__file__).removesuffix("c")


def read_msg(fd: int) -> object | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    body = _read_exact(fd, n)
    if body is None:
        return None
    return pickle.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            b = os.read(fd, min(n, 1 << 20))
        except InterruptedError:
            continue
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def write_msg(fd: int, msg: object) -> None:
    body = pickle.dumps(msg, protocol=5)
    data = memoryview(_LEN.pack(len(body)) + body)
    while data:
        n = os.write(fd, data)
        data = data[n:]


class SharedState:
    """The seqlocked record of the call a slot is running (both sides use it)."""

    def __init__(self, path: str, create: bool = False) -> None:
        if create:
            with open(path, "wb") as f:
                f.write(b"\0" * STATE.size)
        self.fd = os.open(path, os.O_RDWR)
        self.mem = mmap.mmap(self.fd, STATE.size)
        self.seq = 0

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

    def close(self) -> None:
        self.mem.close()
        os.close(self.fd)


_WROTE = [0]  # set by writes through sys.stdout / sys.stderr (and their .buffer)


class _TrackedBuffer(io.BufferedWriter):
    def write(self, b: Any) -> int:
        _WROTE[0] = 1
        return super().write(b)


class _TrackedText(io.TextIOWrapper):
    def write(self, s: str) -> int:
        _WROTE[0] = 1
        return super().write(s)


def _tracked_stream(fd: int, errors: str) -> _TrackedText:
    """``sys.stdout``/``sys.stderr`` on ``fd``, raising _WROTE on every write."""
    raw = io.FileIO(fd, "w", closefd=False)
    return _TrackedText(_TrackedBuffer(raw), encoding="utf-8", errors=errors, line_buffering=True)


class _Unloadable:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _kill_group(*_: object) -> None:
    """Kill this slot's process group: the slot and whatever its call started."""
    os.killpg(0, signal.SIGKILL)


def _die_with_parent() -> None:
    # Linux: when the worker dies (even by SIGKILL), the kernel sends us SIGUSR1; we take
    # the processes our call started down with us (they share our process group)
    signal.signal(signal.SIGUSR1, _kill_group)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def code_key(code: types.CodeType) -> str:
    """What names a code object whatever a pickler writes as its file: a hash of
    its name, first line, bytecode, names and constants, the parts a pickler must
    keep for the code to run and for its line numbers to mean anything.

    The client keys the code objects it ships the same way (``_origins``) and
    maps a frame whose key it knows back to the file the code came from:
    cloudpickle 3.1.3 sets ``co_filename`` of code pickled by value to
    ``"<dynamic-code>"``, older releases keep the client's path."""
    h = hashlib.blake2b(digest_size=8)
    head = (code.co_name, code.co_firstlineno, code.co_names, code.co_varnames, code.co_freevars)
    h.update(repr(head).encode("utf-8", "backslashreplace"))
    h.update(code.co_code)
    h.update(_const_text(code.co_consts).encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def _const_text(c: object) -> str:
    """Constants as text that is the same in every process (a nested code object
    by its name and line: its own key covers the rest)."""
    if isinstance(c, types.CodeType):
        return f"<code {c.co_name} {c.co_firstlineno}>"
    if isinstance(c, tuple):
        return "(" + ",".join(map(_const_text, c)) + ")"
    if isinstance(c, frozenset):  # its order follows string hashes, which differ per process
        return "{" + ",".join(sorted(map(_const_text, c))) + "}"
    return f"{type(c).__name__}:{c!r}"


def _user_frames(tb: object) -> tuple[list[list], list[str]]:
    """The traceback's frames as ``[filename, lineno, name, line]`` and the
    ``code_key`` of each frame's code (taken from the frame, not its file name)."""
    walked = list(traceback.walk_tb(tb))  # type: ignore[arg-type]
    # drop our own frames (the runner) at the top of the stack
    while walked and os.path.abspath(walked[0][0].f_code.co_filename) == _THIS_FILE:
        walked.pop(0)
    frames = traceback.StackSummary.extract(iter(walked))
    keys: dict[int, str] = {}  # a recursion repeats one code a thousand times
    codes = []
    for frame, _ in walked:
        code = frame.f_code
        key = keys.get(id(code))
        if key is None:
            key = keys[id(code)] = code_key(code)
        codes.append(key)
    return [[f.filename, f.lineno or 0, f.name, f.line or ""] for f in frames], codes


def describe_exception(e: BaseException) -> dict:
    t = type(e)
    name = (
        t.__qualname__
        if t.__module__ in ("builtins", "__main__")
        else f"{t.__module__}.{t.__qualname__}"
    )
    try:
        message = str(e)
    except Exception:
        message = f"<unprintable {name}>"
    frames, codes = _user_frames(e.__traceback__)
    return {"type": name, "message": message, "frames": frames, "codes": codes}


def dumps_value(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


class _Special:
    """A call that failed or wrote output, in ``Slot.records`` (others: their value)."""

    __slots__ = ("status", "value", "blob", "error", "out", "err", "dropped")

    def __init__(
        self, status: int, value: object, blob: bytes, error: dict | None, out: bytes,
        err: bytes, dropped: int,
    ) -> None:  # fmt: skip
        self.status, self.value, self.blob, self.error = status, value, blob, error
        self.out, self.err, self.dropped = out, err, dropped


class Slot:
    def __init__(self, req_fd: int, resp_fd: int, state: SharedState) -> None:
        self.req_fd = req_fd
        self.resp_fd = resp_fd
        self.state = state
        # guards sending (the main thread and the watchdog both flush); the main
        # thread appends to ``records``/``times`` without it (appends are atomic,
        # and a flush takes only whole entries: ``times`` is appended first)
        self.lock = threading.Lock()
        self.records: list = []  # per call: its return value, or a _Special
        self.times = array("d")
        self.indices: list[int] = []  # job indices of the run's calls
        self.sent = 0  # calls of the run sent so far
        self.specials = 0  # _Special entries appended to ``records`` so far (main thread)
        self.specials_sent = 0
        self.calls_seen: dict[str, int] = {}  # per function hash
        self.untracked: set[str] = set()  # functions seen writing past sys.stdout/stderr
        self.leftover: tuple[int, int] | None = None  # output offsets no call took yet
        self.last_flush = 0.0
        self.run_id = 0
        self.funcs: dict[str, object] = {}
        threading.Thread(target=self._watchdog, daemon=True).start()

    # -- messages ------------------------------------------------------------
    def send(self, msg: object) -> None:
        with self.lock:
            write_msg(self.resp_fd, msg)

    def flush(self, final: bool = False) -> None:
        with self.lock:
            n = len(self.records)
            # the main thread counts a special entry before appending it: if one is
            # among the first n, the count read now includes it
            scan = self.specials != self.specials_sent
            if n or final:
                records = self.records[:n]
                del self.records[:n]
                times = self.times[: 2 * n]
                del self.times[: 2 * n]
                special: dict[int, list] = {}
                if scan:
                    for k, r in enumerate(records):
                        if type(r) is _Special:
                            special[k] = [r.status, r.error, r.out, r.err, r.dropped, r.blob]
                            records[k] = r.value
                    self.specials_sent += len(special)
                values = self._pickle_values(records, special)
                self.sent += n
                kind = "finished" if final else "results"
                write_msg(self.resp_fd, (kind, self.run_id, values, n, times, special))
            self.last_flush = time.time()

    def _pickle_values(self, values: list, special: dict[int, list]) -> bytes:
        """One pickle of the calls' return values; a value that cannot be pickled
        (even by cloudpickle) fails its call with a SerializationError instead."""
        try:
            return pickle.dumps(values, protocol=5)
        except Exception:  # noqa: BLE001 - a lambda, a local class, an open file ...
            pass
        import cloudpickle

        try:
            return cloudpickle.dumps(values, protocol=5)
        except Exception:  # noqa: BLE001
            pass
        for k, value in enumerate(values):
            if value is None:
                continue
            try:
                cloudpickle.dumps(value, protocol=5)
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
        return cloudpickle.dumps(values, protocol=5)

    def _watchdog(self) -> None:
        ppid = os.getppid()
        while True:
            time.sleep(WATCH_EVERY)
            if os.getppid() != ppid:  # the parent died (and the signal did not get through)
                _kill_group()
            # finished calls wait while the main thread runs a long call: send them
            if self.records and time.time() - self.last_flush >= FLUSH_EVERY:
                self.flush()

    # -- running -------------------------------------------------------------
    def loop(self) -> None:
        self.send(("ready", os.getpid()))
        while True:
            msg = read_msg(self.req_fd)
            if msg is None:
                return
            if msg[0] == "run":
                self.run(*msg[1:])

    def _function(self, func_hash: str, func_bytes: bytes | None) -> object:
        """The function of ``func_hash``: the parent sends its bytes only the first
        time (it mirrors this cache, MAX_FUNCS), so a failure to load is kept too."""
        func = self.funcs.get(func_hash) if func_hash else None
        if func is None:
            import cloudpickle  # noqa: F401  (needed to unpickle by-value functions)

            try:
                func = pickle.loads(func_bytes)  # type: ignore[arg-type]
            except BaseException as e:  # noqa: BLE001 - raised again for every run of it
                func = _Unloadable(e)
            if func_hash:
                if len(self.funcs) > MAX_FUNCS:
                    self.funcs.clear()
                self.funcs[func_hash] = func
        if type(func) is _Unloadable:
            raise func.error
        return func

    def run(
        self, run_id, func_hash, func_bytes, args_bytes, positions, indices, attempts, star, env
    ) -> None:  # noqa: ANN001
        with self.lock:
            self.run_id = run_id
            self.indices = indices
            self.sent = 0
        saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            try:
                func = self._function(func_hash, func_bytes)
                import cloudpickle  # noqa: F401

                items = pickle.loads(args_bytes)
            except BaseException as e:  # cannot even load the chunk: every call fails
                err = describe_exception(e)
                err["message"] = (
                    f"could not unpickle the function or its inputs here: {err['message']}"
                )
                now = time.time()
                for _ in indices:
                    self.times.append(now)
                    self.times.append(now)
                    self.specials += 1
                    self.records.append(_Special(FAILED, None, b"", err, b"", b"", 0))
                return
            self._calls(func, func_hash, items, positions, star)
        finally:
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.flush(final=True)

    def _calls(self, func, func_hash, items, positions, star: bool) -> None:  # noqa: ANN001
        """Run the calls of a run, in order. The hot path: per call, the state is
        written once (the next call's state says this one ended) and a call that
        succeeded without output leaves just its value and two times.

        Whether a call wrote output: writes through ``sys.stdout``/``sys.stderr``
        raise a flag (see ``_Tracked``); a call that raised it, took longer than
        QUICK, or belongs to the first PRECISE_FIRST calls of its function here,
        has the output files' sizes read after it (exact attribution, also of
        ``os.write``, C code and subprocesses). Quick quiet calls are checked
        together before their results leave: output found there (written past
        ``sys.stdout`` by a quick call) goes to the last of them (at most 256
        calls or 2 ms later), and that function is checked call by call from
        then on."""
        state, run_id = self.state, self.run_id
        mem, pack, seq = state.mem, STATE.pack_into, state.seq
        pack_pos, pack_start = _POS.pack_into, _START.pack_into
        whole = True  # the next state write is a whole (seqlocked) one: offsets moved
        records, times = self.records, self.times
        rec, tim = records.append, times.append
        now, lseek, flush_every = time.time, os.lseek, FLUSH_EVERY
        wrote = _WROTE
        out0, err0 = self.leftover or (lseek(1, 0, 2), lseek(2, 0, 2))
        self.leftover = None
        seen = self.calls_seen.get(func_hash, 0)
        self.calls_seen[func_hash] = seen + len(positions)
        fast = seen >= PRECISE_FIRST and func_hash not in self.untracked
        quick = QUICK if fast else -1.0
        try:
            for k, pos in enumerate(positions):
                item = items[pos]
                start = now()
                if records and start - self.last_flush >= flush_every:
                    if fast:
                        out0, err0 = self._check_quick(func_hash, out0, err0)
                        fast = func_hash not in self.untracked
                        quick = QUICK if fast else -1.0
                    self.flush()
                if whole:
                    seq += 1
                    pack(mem, 0, 2 * seq - 1, run_id, k, start, out0, err0)
                    pack(mem, 0, 2 * seq, run_id, k, start, out0, err0)
                    whole = False
                else:
                    pack_start(mem, _START_AT, start)
                    pack_pos(mem, _POS_AT, k)
                try:
                    value = func(*item) if star else func(item)
                except BaseException as e:  # noqa: BLE001 - report everything, even SystemExit
                    end = now()
                    if fast and not wrote[0] and (lseek(1, 0, 2) != out0 or lseek(2, 0, 2) != err0):
                        self.untracked.add(func_hash)  # output past sys.stdout, maybe earlier
                        fast, quick = False, -1.0
                    wrote[0] = 0
                    out0, err0 = self._record(e, start, end, out0, err0)
                    whole = True
                    continue
                end = now()
                if end - start < quick and not wrote[0]:
                    tim(start)
                    tim(end)
                    rec(value)
                    if k & CHECK_EVERY == CHECK_EVERY:
                        out0, err0 = self._check_quick(func_hash, out0, err0)
                        fast = func_hash not in self.untracked
                        quick = QUICK if fast else -1.0
                    continue
                flagged, wrote[0] = wrote[0], 0
                sys.stdout.flush()
                sys.stderr.flush()
                if lseek(1, 0, 2) != out0 or lseek(2, 0, 2) != err0:
                    if fast and not flagged:  # written past sys.stdout, maybe by a quick call
                        self.untracked.add(func_hash)
                        fast, quick = False, -1.0
                    out0, err0 = self._record(value, start, end, out0, err0, True)
                    whole = True
                    continue
                tim(start)
                tim(end)
                rec(value)
        finally:
            if fast:
                mark = self._check_quick(func_hash, out0, err0)
                if mark == (out0, err0) and func_hash in self.untracked:
                    self.leftover = mark  # nobody to give it to: the next call gets it
            state.seq = seq
            state.write(run_id, -1, time.time(), 0, 0)

    def _check_quick(self, func_hash: str, out0: int, err0: int) -> tuple[int, int]:
        """Did quick calls write past ``sys.stdout``? Their output goes to the last
        of them still here, and this function is checked call by call from now on.
        Returns where the next call's output starts (unchanged if no call was
        there to take it: the next checked call does)."""
        if os.lseek(1, 0, os.SEEK_END) == out0 and os.lseek(2, 0, os.SEEK_END) == err0:
            return out0, err0
        self.untracked.add(func_hash)
        with self.lock:  # the watchdog may be sending the records
            if not self.records or type(self.records[-1]) is _Special:
                return out0, err0
            out, d1, out_end = _slice(1, out0)
            err, d2, err_end = _slice(2, err0)
            self.specials += 1
            self.records[-1] = _Special(DONE, self.records[-1], b"", None, out, err, d1 + d2)
        return out_end, err_end

    def _record(
        self,
        value: object,
        start: float,
        end: float,
        out0: int,
        err0: int,
        ok: bool = False,
    ) -> tuple[int, int]:
        """Record a call that failed (``value`` is the exception) or wrote output;
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
        out, d1, out_end = _slice(1, out0)
        err, d2, err_end = _slice(2, err0)
        self.times.append(start)
        self.times.append(end)
        if status == DONE and not out and not err and not d1 + d2:
            self.records.append(value)
        else:
            self.specials += 1  # before the append: a flush that sees the entry sees this
            self.records.append(_Special(status, value, blob, error, out, err, d1 + d2))
        return out_end, err_end


def _slice(fd: int, start: int) -> tuple[bytes, int, int]:
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


def split_main() -> None:
    """``_slot.py split``: stdin (args_bytes, positions) -> stdout [pickled [item], ...].

    Re-packs a chunk's inputs into one pickle per call, for a worker that splits a
    redelivered chunk: user data is unpickled here, never in the worker itself."""
    import cloudpickle

    args_bytes, positions = pickle.loads(sys.stdin.buffer.read())
    items = pickle.loads(args_bytes)
    out = [cloudpickle.dumps([items[p]], protocol=5) for p in positions]
    sys.stdout.buffer.write(pickle.dumps(out, protocol=5))


def main(argv: list[str]) -> None:
    if argv and argv[0] == "split":
        split_main()
        return
    req_fd, resp_fd = int(argv[0]), int(argv[1])
    out_path, err_path, state_path = argv[2], argv[3], argv[4]
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides about interrupts
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = sys.__stdout__ = _tracked_stream(1, "strict")
    sys.stderr = sys.__stderr__ = _tracked_stream(2, "backslashreplace")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.argv = ["sif-magic-slot"]
    Slot(req_fd, resp_fd, SharedState(state_path)).loop()


if __name__ == "__main__":
    # run as a script: do not let this package's directory shadow the user's modules
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(_THIS_FILE):
        sys.path.pop(0)
    main(sys.argv[1:])
