"""The call process (runner/slot.py) over its pipes: a real slot, run by path as the
pool runs it, driven message by message (see runner/slotio.py)."""

from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from sif_magic.runner.slotio import DONE, FAILED, SharedState, read_msg, write_msg
from sif_magic.runner.slotproc import SLOT_SCRIPT


class SlotUnderTest:
    def __init__(self, tmp_path: Path) -> None:
        self.out, self.err = tmp_path / "slot.out", tmp_path / "slot.err"
        state_path = tmp_path / "slot.state"
        self.state = SharedState(str(state_path), create=True)
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, SLOT_SCRIPT, str(req_r), str(resp_w), str(self.out), str(self.err),
             str(state_path)],
            pass_fds=(req_r, resp_w), stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=tmp_path,
        )  # fmt: skip
        os.close(req_r)
        os.close(resp_w)
        self.runs = 0
        assert self.read() == ("ready", self.proc.pid)

    def read(self, timeout: float = 60) -> tuple:
        ready, _, _ = select.select([self.resp_r], [], [], timeout)
        assert ready, f"the slot said nothing for {timeout} s"
        msg = read_msg(self.resp_r)
        assert msg is not None, "the slot closed its pipe"
        return msg  # type: ignore[return-value]

    def send(self, func, items, *, func_hash="h", positions=None, star=False, env=None,
             send_func=True) -> int:  # fmt: skip
        self.runs += 1
        positions = list(range(len(items))) if positions is None else positions
        indices = [100 + p for p in positions]
        func_bytes = cloudpickle.dumps(func) if send_func else None
        write_msg(self.req_w, ("run", self.runs, func_hash, func_bytes, cloudpickle.dumps(items),
                               positions, indices, [1] * len(positions), star, env or {},
                               []))  # fmt: skip
        return self.runs

    def run(self, func, items, **kw) -> list[tuple]:
        """Every message of one run, up to its "finished"."""
        run_id = self.send(func, items, **kw)
        msgs = []
        while True:
            msg = self.read()
            assert msg[1] == run_id
            msgs.append(msg)
            if msg[0] == "finished":
                return msgs

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.close(self.req_w)
        os.close(self.resp_r)
        self.state.close()


@pytest.fixture
def slot(tmp_path: Path):
    s = SlotUnderTest(tmp_path)
    yield s
    s.close()


def _calls(msgs: list[tuple]) -> list[tuple]:
    """(value, special entry or None, t_start, t_end) per call, over the messages."""
    out = []
    for _, _, values, n, times, special, buffers, *_ in msgs:
        values = pickle.loads(values, buffers=buffers)
        assert len(values) == n and len(times) == 2 * n
        for k in range(n):
            out.append((values[k], special.get(k), times[2 * k], times[2 * k + 1]))
    return out


def test_records_come_in_order_with_values_and_times(slot: SlotUnderTest) -> None:
    calls = _calls(slot.run(lambda x: x * 2, list(range(1000))))
    assert [c[0] for c in calls] == [x * 2 for x in range(1000)]
    assert all(c[1] is None for c in calls)  # quiet successes carry nothing else
    assert all(c[2] <= c[3] for c in calls)
    assert all(a[3] <= b[2] for a, b in zip(calls, calls[1:]))  # one after the other


def test_only_the_positions_asked_run_and_star_unpacks(slot: SlotUnderTest) -> None:
    calls = _calls(slot.run(lambda a, b: a - b, [(5, 1), (9, 2), (7, 7)], positions=[2, 0],
                            star=True))  # fmt: skip
    assert [c[0] for c in calls] == [0, 4]


def test_a_failure_is_described_with_user_frames_only_and_its_exception(
    slot: SlotUnderTest,
) -> None:
    def f(x: int) -> float:
        return 1 / x

    calls = _calls(slot.run(f, [1, 0, 2]))
    assert [c[0] for c in calls] == [1.0, None, 0.5]
    status, error, out, err, dropped, blob = calls[1][1]
    assert status == FAILED and error["type"] == "ZeroDivisionError"
    assert "division by zero" in error["message"]
    assert [fr[2] for fr in error["frames"]] == ["f"]  # the runner's own frames dropped
    assert isinstance(pickle.loads(blob), ZeroDivisionError)
    assert calls[0][1] is None and calls[2][1] is None


def test_output_goes_to_the_call_that_wrote_it_whatever_wrote_it(slot: SlotUnderTest) -> None:
    def f(x: int) -> int:
        import os
        import subprocess
        import sys

        if x == 1:
            print("one")
        elif x == 3:
            os.write(2, b"three\n")
        elif x == 4:
            subprocess.run(["echo", "four"], check=True)
        elif x == 5:
            sys.stderr.write("five\n")
        return x

    calls = _calls(slot.run(f, list(range(7))))
    assert [c[0] for c in calls] == list(range(7))
    written = {k: (c[1][0], c[1][2], c[1][3]) for k, c in enumerate(calls) if c[1] is not None}
    assert written == {
        1: (DONE, b"one\n", b""),
        3: (DONE, b"", b"three\n"),
        4: (DONE, b"four\n", b""),
        5: (DONE, b"", b"five\n"),
    }


def test_a_result_that_cannot_be_pickled_fails_its_call_alone(slot: SlotUnderTest) -> None:
    import threading

    calls = _calls(slot.run(lambda x: threading.Lock() if x == 1 else x, [0, 1, 2]))
    assert [c[0] for c in calls] == [0, None, 2]
    status, error = calls[1][1][:2]
    assert status == FAILED and error["type"] == "sif_magic.errors.SerializationError"
    assert "the result of call 101 (lock) cannot be pickled" in error["message"]


def test_the_function_is_sent_once_and_one_that_cannot_load_fails_every_call(
    slot: SlotUnderTest,
) -> None:
    assert [c[0] for c in _calls(slot.run(abs, [-1], func_hash="abs"))] == [1]
    # the parent mirrors the slot's cache: the bytes are not sent again
    assert [c[0] for c in _calls(slot.run(None, [-2, 3], func_hash="abs", send_func=False))] == [
        2,
        3,
    ]
    run_id = slot.send(None, [1, 2], func_hash="never-sent", send_func=False)
    msg = slot.read()
    assert msg[:2] == ("finished", run_id) and msg[3] == 2
    for k in (0, 1):
        status, error = msg[5][k][:2]
        assert status == FAILED and "could not unpickle the function" in error["message"]


def test_env_is_set_for_the_run_and_restored_after(slot: SlotUnderTest) -> None:
    def get(name: str) -> str | None:
        import os

        return os.environ.get(name)

    assert [c[0] for c in _calls(slot.run(get, ["SIF_T"], env={"SIF_T": "yes"}))] == ["yes"]
    assert [c[0] for c in _calls(slot.run(get, ["SIF_T"]))] == [None]


def test_env_of_back_to_back_runs_is_each_runs_own_and_gone_when_idle(
    slot: SlotUnderTest,
) -> None:
    """Runs waiting in the pipe one after the other (one-call chunks of one job) keep
    the env set between them; a call that changed one of its variables has it set
    again for the next run; a run of another env, or none, never sees the previous
    one's."""

    def touch(name: str) -> str | None:
        import os

        seen = os.environ.get(name)
        os.environ[name] = "changed by the call"
        return seen

    env = {"SIF_T": "yes"}
    runs = [slot.send(touch, ["SIF_T"], env=env) for _ in range(3)]
    runs.append(slot.send(touch, ["SIF_T"], env={"SIF_T": "other"}))
    runs.append(slot.send(touch, ["SIF_T"]))
    seen: dict[int, list] = {r: [] for r in runs}
    finished = 0
    while finished < len(runs):
        msg = slot.read()
        seen[msg[1]].append(msg)
        finished += msg[0] == "finished"
    values = [[c[0] for c in _calls(seen[r])] for r in runs]
    assert values == [["yes"], ["yes"], ["yes"], ["other"], [None]]


def test_the_state_file_says_which_call_runs_and_results_leave_during_a_long_call(
    slot: SlotUnderTest, tmp_path: Path
) -> None:
    go = tmp_path / "go"

    def f(x: int) -> int:
        import os
        import time

        while x == 2 and not os.path.exists(go):
            time.sleep(0.01)
        return x

    run_id = slot.send(f, [0, 1, 2, 3])
    before = []  # the two calls before the long one are sent meanwhile (the watchdog)
    while sum(m[3] for m in before) < 2:
        before.append(slot.read())
    assert all(m[:2] == ("results", run_id) for m in before)
    assert [c[0] for c in _calls(before)] == [0, 1]
    state_run, pos, start, _, _ = slot.state.read()
    assert (state_run, pos) == (run_id, 2) and start > 0
    go.touch()
    after = [slot.read()]
    while after[-1][0] != "finished":
        after.append(slot.read())
    assert all(m[1] == run_id for m in after)
    assert [c[0] for c in _calls(after)] == [2, 3]
    deadline = time.time() + 30
    while slot.state.read()[1] != -1 and time.time() < deadline:
        time.sleep(0.01)
    assert slot.state.read()[1] == -1  # between calls


def test_the_users_modules_are_not_shadowed_by_the_runners(
    slot: SlotUnderTest, tmp_path: Path
) -> None:
    # the slot's own modules (records, slotio, ...) load under a private package name
    for name in ("records", "slotio", "tracebacks", "pool"):
        (tmp_path / f"{name}.py").write_text(f"WHO = 'the user {name}'\n")

    def who(name: str) -> str:
        import importlib

        return importlib.import_module(name).WHO

    names = ["records", "slotio", "tracebacks", "pool"]
    assert [c[0] for c in _calls(slot.run(who, names))] == [f"the user {n}" for n in names]


def test_split_repacks_inputs_one_pickle_per_call(tmp_path: Path) -> None:
    args = cloudpickle.dumps([10, 20, 30])
    proc = subprocess.run(
        [sys.executable, SLOT_SCRIPT, "split"],
        input=pickle.dumps((cloudpickle.dumps(len), args, [2, 0], [], "", 0, 0)),
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    parts = pickle.loads(proc.stdout)
    assert [pickle.loads(b, buffers=bufs) for b, bufs in parts] == [[30], [10]]
