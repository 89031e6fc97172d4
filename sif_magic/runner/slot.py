"""One warm process that runs calls: ``python slot.py REQ_FD RESP_FD OUT ERR STATE [CTL_FD]``.

Its file descriptors 1 and 2 point at two files (``OUT``, ``ERR``, opened
O_APPEND), so whatever a call writes, from Python, C code or a subprocess, lands
there. After a call the slot notes the files' sizes (the previous call's end is
the next call's start) and sends the bytes written in between with the call's
record: output is attributed to calls exactly, without a pipe read per call
(quick calls skip this once their function has shown it writes only through
``sys.stdout``, see ``Slot._calls``). The parent tails the same files for live
logs of calls that run for a while. What travels on the pipes and what
``STATE`` holds: ``slotio.py``.

Run by path, never imported by the parent: this folder does not go on
``sys.path`` (its modules would shadow the user's); the modules the slot needs
(``slotio``, ``records``, ``tracebacks``) are loaded as a private package.
They and this file import only each other, the standard library and
cloudpickle: this runs inside the worker image. The user's modules that travel
with a function (``shipped``) are imported through a finder of this process,
the bundle of the function that runs being the one served.

Splitting a run: the parent may ask (on ``CTL_FD``, ``slotio.SPLIT``) for a
share of the calls of the run this slot has not started, for another slot
that went idle. The watchdog thread gives them away at once, even while the
main thread is inside a long call: it lowers the run's ``end`` and answers
``("split", run_id, e, old_end)``; the main thread runs positions ``< end``
only. Who runs a position is decided without a lock per call: the main thread
*claims* position ``k`` (writes it to the state record) and only then reads
``end``; the watchdog stores ``end = e`` and only then reads the claim. Both
run under the GIL, one bytecode at a time: if the claim read afterwards is
below ``e``, every later claim ``>= e`` reads ``e`` and stops. If the main
thread raced past ``e``, the watchdog moves ``e`` up past that claim (the
main thread may then stop one position early: it says where it stopped,
``Records.stopped``, and the parent runs the rest again). Nothing is run twice,
nothing left out.

Threads: the main thread runs calls and appends their records; a watchdog
thread sends records that wait while a long call runs, gives away calls the
parent asks for (under the records' lock, so its answer always precedes the
run's ``finished``), and kills the slot's process group if the parent died. ``sif_magic.report`` (from any thread of a
call) writes the state file's progress record under its own lock.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import importlib.util
import io
import os
import pickle
import select
import signal
import sys
import threading
import time
import types
from typing import Any

FLUSH_EVERY = 0.002  # seconds between result batches while calls are quick
QUICK = 50e-6  # seconds: a call this quick, that wrote nothing through sys.stdout/stderr, ...
PRECISE_FIRST = 256  # ... after this many calls of its function, is not checked on its own
CHECK_EVERY = 255  # but with the others, every 256 calls (and before results are sent)
WATCH_EVERY = 0.01  # the watchdog sends finished results while a long call runs
_THIS_FILE = os.path.abspath(__file__).removesuffix("c")


def _siblings(*names: str) -> list[types.ModuleType]:
    """This folder's modules ``names``, imported as a package of a private name
    (the folder stays off ``sys.path``)."""
    package = "_sif_magic_slot"
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [os.path.dirname(_THIS_FILE)]
        sys.modules[package] = module
    return [importlib.import_module(f"{package}.{name}") for name in names]


if __package__:  # imported (by tests) as sif_magic.runner.slot
    from . import oob, records, shipped, slotio, spill, tracebacks  # noqa: E402
else:  # run by path
    oob, records, shipped, slotio, spill, tracebacks = _siblings(
        "oob", "records", "shipped", "slotio", "spill", "tracebacks"
    )


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


class Slot:
    def __init__(
        self, req_fd: int, resp_fd: int, state: slotio.SharedState, ctl_fd: int = -1
    ) -> None:
        self.req_fd = req_fd
        self.ctl_fd = ctl_fd  # the parent's split requests (-1: none)
        self.state = state
        self.records = records.Records(resp_fd)
        # positions of the current run at or past end[0] are not run here (given away);
        # phase: 0 loading the run, 1 running its calls (they may be given away), 2 over
        self.end = [0]
        self.phase = 2
        self.wanted: list[tuple[int, int, int]] = []  # split requests for a run not running yet
        self.skip: set[int] = set()  # runs sent ahead and given back: they do not run
        self.calls_seen: dict[str, int] = {}  # per function hash
        self.untracked: set[str] = set()  # functions seen writing past sys.stdout/stderr
        self.leftover: tuple[int, int] | None = None  # output offsets no call took yet
        self.funcs: dict[str, tuple[object, str]] = {}  # hash -> (function, its bundle)
        self.shipped = shipped.ShippedModules()
        self.env: dict = {}  # the job variables set now (``_use_env``), their old values:
        self.saved_env: dict[str, str | None] = {}
        self.more = False  # more runs of the same request follow this one
        threading.Thread(target=self._watchdog, daemon=True).start()

    def _watchdog(self) -> None:
        ppid = os.getppid()
        out = self.records
        while True:
            if self.ctl_fd < 0:
                time.sleep(WATCH_EVERY)
            elif select.select([self.ctl_fd], [], [], WATCH_EVERY)[0]:
                self._requests()
            if self.wanted:
                self._requests(read=False)
            if os.getppid() != ppid:  # the parent died (and the signal did not get through)
                _kill_group()
            # finished calls wait while the main thread runs a long call: send them
            if out.entries and time.time() - out.last_flush >= FLUSH_EVERY:
                out.flush()

    # -- giving calls away (the watchdog thread) ------------------------------
    def _requests(self, read: bool = True) -> None:
        """Split requests of the parent: those it sent (``read``), and those of a
        run that had not reached its calls when they came (kept in ``wanted``)."""
        if read:
            try:
                data = os.read(self.ctl_fd, 4096)  # whole records: each one write < PIPE_BUF
            except OSError:
                data = b""
            if not data:  # the parent closed its end: no more requests
                self.ctl_fd = -1
            size = slotio.SPLIT.size
            self.wanted += [slotio.SPLIT.unpack_from(data, at) for at in range(0, len(data), size)]
        keep = []
        for run_id, share, last in self.wanted:
            with self.records.lock:
                current = self.records.run_id
                if share == slotio.WHOLE:  # runs sent ahead: back, those not started
                    first = max(run_id, current + 1)
                    given = first <= last
                    if given:
                        self.skip.update(range(first, last + 1))
                    answer = ("split", first, 0, -1) if given else ("split", run_id, -1, -1)
                    slotio.write_msg(self.records.resp_fd, answer)
                elif run_id > current or (run_id == current and self.phase == 0):
                    keep.append((run_id, share, last))  # its calls have not started yet
                elif run_id == current:
                    self._give(run_id, share if self.phase == 1 else 0)
        self.wanted = keep

    def _claimed(self) -> int:
        """The last position the main thread claimed in this run (-1: none yet)."""
        return slotio.POS.unpack_from(self.state.mem, slotio.POS_AT)[0]

    def _give(self, run_id: int, share: int) -> None:
        """With the records' lock held, the run's calls running: give away ``share``
        per mille of the positions not claimed yet (rounded up), the last ones, and
        say which (``e == old``: none)."""
        end = self.end
        old = end[0]
        left = old - self._claimed() - 1
        e = old - -(-left * share // 1000)
        if left <= 0 or e >= old:
            slotio.write_msg(self.records.resp_fd, ("split", run_id, old, old))
            return
        while True:  # see the module's docstring: store the end, then read the claim
            end[0] = e
            claimed = self._claimed()
            if claimed < e:
                break
            e = claimed + 1
        slotio.write_msg(self.records.resp_fd, ("split", run_id, e, old))

    # -- running -------------------------------------------------------------
    def loop(self) -> None:
        self.records.send(("ready", os.getpid()))
        while True:
            msg = slotio.read_msg(self.req_fd)
            if msg is None:
                return
            if msg[0] == "run":
                self.run(*msg[1:])
            elif msg[0] == "runs":  # runs sent ahead together: one after the other
                runs = msg[1]
                for k, fields in enumerate(runs):
                    self.more = k + 1 < len(runs)
                    self.run(*fields)
                self.more = False

    def _function(self, func_hash: str, func_bytes: bytes | None) -> object:
        """The function of ``func_hash``, its bundle of modules serving imports: the
        parent sends its bytes only the first time (it mirrors this cache,
        MAX_FUNCS), so a failure to load is kept too."""
        func, bundle = self.funcs.get(func_hash, (None, "")) if func_hash else (None, "")
        if func is None:
            import cloudpickle  # noqa: F401  (needed to unpickle by-value functions)

            try:
                bundle, data = self.shipped.take(func_bytes)  # type: ignore[arg-type]
                self.shipped.activate(bundle)
                func = pickle.loads(data)
            except BaseException as e:  # noqa: BLE001 - raised again for every run of it
                func = _Unloadable(e)
            if func_hash:
                if len(self.funcs) > slotio.MAX_FUNCS:
                    self.funcs.clear()
                self.funcs[func_hash] = (func, bundle)
        self.shipped.activate(bundle)
        if type(func) is _Unloadable:
            raise func.error
        return func

    def run(
        self,
        run_id,
        func_hash,
        func_bytes,
        args_bytes,
        positions,
        indices,
        attempts,
        star,
        env,
        buffers,
    ) -> None:  # noqa: ANN001
        n = positions[1] - positions[0] if type(positions) is tuple else len(positions)
        if type(indices) is tuple:  # consecutive job indices, as (start, stop)
            indices = range(*indices)
        with self.records.lock:  # one step for the watchdog: skipped, or started
            if run_id in self.skip:  # given back before it started: another slot runs it
                self.skip.discard(run_id)
                skipped = True
            else:
                skipped = False
                self.end[0], self.phase = n, 0
                self.records.start(
                    run_id,
                    indices,
                    env.get(spill.ENV_DIR),
                    env.get(spill.ENV_OVER),
                    env.get(spill.ENV_ARRAYS),
                )
        if skipped:
            if func_bytes is not None:  # the parent counts it loaded here (slotproc.funcs)
                try:
                    self._function(func_hash, func_bytes)
                except BaseException:  # noqa: BLE001 - kept, raised when it runs
                    pass
            if not self._next_request_waiting():
                self._use_env({})  # idle: nothing of a job's env lingers
            return
        self._use_env(env)
        try:
            try:
                func = self._function(func_hash, func_bytes)
                import cloudpickle  # noqa: F401

                items = oob.loads(*spill.load_parts(args_bytes, buffers))
            except BaseException as e:  # cannot even load the chunk: every call fails
                err = tracebacks.describe_exception(e)
                err["message"] = (
                    f"could not unpickle the function or its inputs here: {err['message']}"
                )
                if isinstance(e, spill.SpillError):  # arrives as ours, saying what to set
                    err["type"] = "sif_magic.errors.SerializationError"
                with self.records.lock:
                    self.phase = 2
                self.records.all_failed(err, len(indices))
                return
            if type(positions) is tuple:
                positions = range(*positions)
            self._calls(func, func_hash, items, positions, star)
        finally:
            self.records.flush(final=True)
            if not self.more and not self._next_request_waiting():
                self._use_env({})  # idle: nothing of a job's env lingers

    def _use_env(self, env: dict) -> None:
        """Set the run's ``env`` (a job's variables), undoing the previous run's first;
        a run with the same env as the one before it (the next call of the same job,
        already waiting in the pipe) finds it set and costs nothing."""
        environ = os.environ
        if env == self.env and all(environ.get(k) == v for k, v in env.items()):
            return  # (a call that changed one of them has it set again)
        for k, v in self.saved_env.items():
            if v is None:
                environ.pop(k, None)
            else:
                environ[k] = v
        self.saved_env = {k: environ.get(k) for k in env}
        environ.update(env)
        self.env = dict(env)

    def _next_request_waiting(self) -> bool:
        """Whether another request is in the pipe already (then the env may stay)."""
        try:
            return bool(select.select([self.req_fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _calls(self, func, func_hash, items, positions, star: bool) -> None:  # noqa: ANN001
        """Run the calls of a run, in order. The hot path: per call, one clock read
        (a quick call's end is the next one's start: the loop's own steps between
        them, a few hundred nanoseconds, count as the next call's), the state written
        once (two 8-byte stores: the next call's state says this one ended) and a
        call that succeeded without output leaves just its value and two times.

        Whether a call wrote output: writes through ``sys.stdout``/``sys.stderr``
        raise a flag (see ``_Tracked``); a call that raised it, took longer than
        QUICK, or belongs to the first PRECISE_FIRST calls of its function here,
        has the output files' sizes read after it (exact attribution, also of
        ``os.write``, C code and subprocesses). Quick quiet calls are checked
        together before their results leave: output found there (written past
        ``sys.stdout`` by a quick call) goes to the last of them (at most 256
        calls or 2 ms later), and that function is checked call by call from
        then on."""
        out = self.records
        state, run_id = self.state, out.run_id
        mem, pack, seq = state.mem, slotio.STATE.pack_into, state.seq
        # the state's position and start time as 8-byte items (aligned stores)
        words, floats = memoryview(mem).cast("q"), memoryview(mem).cast("d")
        pos_at, start_at = slotio.POS_AT // 8, slotio.START_AT // 8
        whole = True  # the next state write is a whole (seqlocked) one: offsets moved
        entries, times = out.entries, out.times  # (lists: list.append is inlined)
        now, lseek, flush_every, check_every = time.time, os.lseek, FLUSH_EVERY, CHECK_EVERY
        wrote = _WROTE
        out0, err0 = self.leftover or (lseek(1, 0, 2), lseek(2, 0, 2))
        self.leftover = None
        seen = self.calls_seen.get(func_hash, 0)
        self.calls_seen[func_hash] = seen + len(positions)
        fast = seen >= PRECISE_FIRST and func_hash not in self.untracked
        quick = QUICK if fast else -1.0
        limit = self.end
        with out.lock:
            self.phase = 1  # its calls may be given away from now on
        due = out.last_flush + flush_every  # results leave at the first call past it
        end = now()  # the first call's start; then each call's end starts the next
        try:
            for k, pos in enumerate(positions):
                item = items[pos]
                start = end
                if start >= due:
                    if entries:
                        if fast:
                            out0, err0 = self._check_quick(func_hash, out0, err0)
                            fast = func_hash not in self.untracked
                            quick = QUICK if fast else -1.0
                        out.flush()
                        start = now()
                    due = out.last_flush + flush_every
                if whole:
                    seq += 1
                    pack(mem, 0, 2 * seq - 1, run_id, k, start, out0, err0)
                    pack(mem, 0, 2 * seq, run_id, k, start, out0, err0)
                    whole = False
                else:  # the start time, then the position (see slotio.POS_AT)
                    floats[start_at] = start
                    words[pos_at] = k
                if k >= limit[0]:  # claimed, then read: given away (see the docstring)
                    out.stopped = k
                    break
                try:
                    value = func(*item) if star else func(item)
                except BaseException as e:  # noqa: BLE001 - report everything, even SystemExit
                    end = now()
                    if fast and not wrote[0] and (lseek(1, 0, 2) != out0 or lseek(2, 0, 2) != err0):
                        self.untracked.add(func_hash)  # output past sys.stdout, maybe earlier
                        fast, quick = False, -1.0
                    wrote[0] = 0
                    out0, err0 = out.record(e, start, end, out0, err0)
                    whole = True
                    end = now()
                    continue
                end = now()
                if end - start < quick and not wrote[0]:
                    times.append(start)
                    times.append(end)
                    entries.append(value)
                    if k & check_every == check_every:
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
                    out0, err0 = out.record(value, start, end, out0, err0, True)
                    whole = True
                    end = now()
                    continue
                times.append(start)
                times.append(end)
                entries.append(value)
                end = now()
        finally:
            words.release()
            floats.release()
            with out.lock:
                self.phase = 2  # before the state says no call runs (the claim read)
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
        return self.records.give_output(out0, err0)


def split_main() -> None:
    """``slot.py split``: stdin (func_bytes, args_bytes, positions, buffers, spill_to,
    over, arrays) -> stdout [(pickled [item], its buffers), ...] (in band: a rare path,
    kept simple).

    Re-packs a chunk's inputs into one pickle per call, for a worker that splits a
    redelivered chunk: user data is unpickled here, never in the worker itself
    (with the modules shipped with the function: the inputs may be their objects).
    Each call's arrays stay out of band, beside its pickle (``oob.py``); with
    ``spill_to`` (the chunk came by file), a call's input goes to a file there, as
    the client would send it (over ``over`` bytes, or arrays of ``arrays`` bytes or
    more), and its reference in its place (inline where it cannot be written)."""
    func_bytes, args_bytes, positions, buffers, spill_to, over, arrays = pickle.loads(
        sys.stdin.buffer.read()
    )
    modules = shipped.ShippedModules()
    modules.activate(modules.take(func_bytes)[0])
    items = oob.loads(*spill.load_parts(args_bytes, buffers))
    out = []
    for p in positions:
        bufs: list[memoryview] = []
        blob = oob.dumps([items[p]], bufs, oob.cloud_pickler())
        size = oob.nbytes(bufs)
        if spill_to and (len(blob) + size > over or (arrays and size >= arrays)):
            try:
                out.append((spill.write(spill_to, "input", blob, bufs), []))
                continue
            except spill.SpillError:
                pass  # in the message, as the client does
        out.append((blob, [bytes(b) for b in bufs]))
    sys.stdout.buffer.write(pickle.dumps(out, protocol=5))


def main(argv: list[str]) -> None:
    if argv and argv[0] == "split":
        split_main()
        return
    req_fd, resp_fd = int(argv[0]), int(argv[1])
    out_path, err_path, state_path = argv[2], argv[3], argv[4]
    ctl_fd = int(argv[5]) if len(argv) > 5 else -1
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
    state = slotio.SharedState(state_path)
    _install_report(state)
    Slot(req_fd, resp_fd, state, ctl_fd).loop()


def _install_report(state: slotio.SharedState) -> None:
    """Where ``sif_magic.report`` finds this slot: the private package's ``report``."""
    lock = threading.Lock()  # the call's threads may report at once: one writer at a time

    def report(fraction: float, message: str) -> None:
        with lock:
            state.report(fraction, message)

    _siblings()
    sys.modules["_sif_magic_slot"].report = report  # type: ignore[attr-defined]


if __name__ == "__main__":
    # run as a script: do not let this package's directory shadow the user's modules
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(_THIS_FILE):
        sys.path.pop(0)
    main(sys.argv[1:])
