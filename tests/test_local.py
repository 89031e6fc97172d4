"""The Executor on the local backend: real worker processes, no broker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from procs import cancel_while_running, process_gone

from sif_magic import CallTimeoutError, Executor, RemoteError, SerializationError, WorkerLostError


@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(backend="local", processes=2)
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def test_results_come_back_in_input_order(ex: Executor) -> None:
    import random

    def jitter(x: int) -> int:
        import time

        time.sleep(random.random() / 200)
        return x * 3

    job = ex.map_job(jitter, range(300), chunksize=7)
    assert job.results(timeout=30) == [x * 3 for x in range(300)]
    assert job.state_counts()["done"] == 300 and job.done()


def test_output_is_captured_per_call_at_the_fd_level(ex: Executor) -> None:
    def noisy(x: int) -> int:
        import os
        import subprocess
        import sys

        print(f"python print {x}")
        os.write(1, f"C-level write {x}\n".encode())
        subprocess.run(["sh", "-c", f"echo subprocess {x}; echo to-stderr {x} >&2"], check=True)
        print(f"stderr print {x}", file=sys.stderr)
        return x

    job = ex.map_job(noisy, range(4), chunksize=2)
    job.results(timeout=30)
    for i in range(4):
        out = job.output(i)
        for piece in (
            f"python print {i}",
            f"C-level write {i}",
            f"subprocess {i}",
            f"to-stderr {i}",
            f"stderr print {i}",
        ):
            assert piece in out, (i, out)
        assert f"print {1 - i}" not in out  # nothing of a neighbour's output
        streams = {s for s, _ in job.call_logs(i)[0]}
        assert streams == {1, 2}


def test_output_of_one_call_among_many_quiet_ones_stays_with_that_call() -> None:
    # past its first calls, a function's quick quiet calls are not checked one by one
    # (slot fast path): a print of call 700 must still land on call 700 exactly
    def rare(x: int) -> int:
        import sys

        if x == 700:
            print("seven hundred")
            print("on stderr", file=sys.stderr, end="")  # a partial line, flushed for us
        return x

    with Executor(backend="local", processes=1) as ex:
        assert ex.map_job(rare, range(300)).results(timeout=30) == list(range(300))  # warm
        job = ex.map_job(rare, range(1000), chunksize=1000)
        assert job.results(timeout=30) == list(range(1000))
    assert "seven hundred" in job.output(700) and "on stderr" in job.output(700)
    assert [i for i in range(1000) if job.output(i)] == [700]


def test_fd_level_output_of_a_quick_call_is_kept() -> None:
    # os.write bypasses sys.stdout: past a function's first 256 calls in a process,
    # a quick call's fd-level output is found with the next check (every 256 calls,
    # and before results are sent) and goes to the last call run by then; from then
    # on the function is checked call by call again, so later output is exact
    def rare_fd(x: int) -> int:
        import os

        if x in (600, 900):
            os.write(1, f"fd write {x}\n".encode())
        return x

    with Executor(backend="local", processes=1) as ex:
        assert ex.map_job(rare_fd, range(300)).results(timeout=30) == list(range(300))
        job = ex.map_job(rare_fd, range(1000), chunksize=1000)
        assert job.results(timeout=30) == list(range(1000))
    first = [i for i in range(1000) if "fd write 600" in job.output(i)]
    assert len(first) == 1 and 600 <= first[0] < 600 + 256, first
    assert "fd write 900" in job.output(900)
    assert "fd write 900" not in "".join(job.output(i) for i in range(1000) if i != 900)


def test_results_that_need_cloudpickle_or_cannot_be_pickled(ex: Executor) -> None:
    def odd(x: int) -> object:
        import threading

        if x == 1:
            return lambda y: y * 10  # plain pickle refuses it: cloudpickle carries it
        if x == 2:
            return threading.Lock()  # nothing can carry it
        return x

    job = ex.map_job(odd, range(4), errors="collect")
    values = job.results(timeout=30)
    assert values[0] == 0 and values[3] == 3 and values[1](4) == 40
    assert isinstance(values[2], SerializationError) and job.failed == [2]
    assert "result of call 2 (lock) cannot be pickled to send it back" in str(values[2])


def test_remote_exception_carries_the_worker_traceback(ex: Executor) -> None:
    def inner(x: int) -> int:
        raise KeyError(f"no such key {x}")

    def outer(x: int) -> int:
        return inner(x) if x == 2 else x

    job = ex.map_job(outer, range(4))
    with pytest.raises(RemoteError) as info:
        job.results(timeout=30)
    err = info.value
    assert err.ename == "KeyError" and err.index == 2
    names = [f[2] for f in err.frames]
    assert names == ["outer", "inner"]  # user frames only: none of sif_magic's machinery
    assert "raise KeyError" in err.remote_traceback()
    rendered = "\n".join(err._render_traceback_())
    assert "KeyError" in rendered and "slot.py" not in rendered
    assert isinstance(err.exception, KeyError)


def test_errors_collect_keeps_exceptions_in_place(ex: Executor) -> None:
    job = ex.map_job(lambda x: 1 // x, [1, 0, 2], errors="collect")
    values = job.results(timeout=30)
    assert values[0] == 1 and values[2] == 0 and isinstance(values[1], RemoteError)
    assert values[1].ename == "ZeroDivisionError"


def test_a_call_that_kills_its_process_fails_alone(ex: Executor) -> None:
    def crash(x: int) -> int:
        import os
        import signal

        if x == 5:
            os.kill(os.getpid(), signal.SIGSEGV)
        if x == 6:
            os._exit(3)
        return x

    job = ex.map_job(crash, range(10), chunksize=10, errors="collect")
    values = job.results(timeout=30)
    assert [v for i, v in enumerate(values) if i not in (5, 6)] == [0, 1, 2, 3, 4, 7, 8, 9]
    assert isinstance(values[5], WorkerLostError) and "SIGSEGV" in str(values[5])
    assert isinstance(values[6], WorkerLostError) and "exited with code 3" in str(values[6])
    # the pool replaced the dead processes: a new run works
    assert ex.map_job(abs, [-1]).results(timeout=30) == [1]


def test_timeout_kills_the_call_and_names_the_limit(ex: Executor) -> None:
    job = ex.map_job(time.sleep, [0.01, 30, 0.01], timeout=0.5, errors="collect", chunksize=3)
    values = job.results(timeout=30)
    assert values[0] is None and values[2] is None
    assert isinstance(values[1], CallTimeoutError) and "0.5 s time limit" in str(values[1])


def test_retries_rerun_failed_calls(ex: Executor, tmp_path) -> None:
    marker = tmp_path / "attempts"

    def flaky(x: int) -> int:
        with open(marker, "a") as f:
            f.write("x")
        if len(open(marker).read()) < 3:
            raise RuntimeError("not yet")
        return x

    job = ex.map_job(flaky, [7], retries=2)
    assert job.results(timeout=30) == [7]
    assert job.describe_call(0)["attempt"] == 3


def test_env_reaches_the_calls_and_is_restored(ex: Executor) -> None:
    job = ex.map_job(lambda k: os.environ.get(k), ["SIF_TEST_VAR"], env={"SIF_TEST_VAR": "yes"})
    assert job.results(timeout=30) == ["yes"]
    assert ex.map_job(lambda k: os.environ.get(k), ["SIF_TEST_VAR"]).results(timeout=30) == [None]


def test_cancel_drops_queued_and_kills_running_calls(ex: Executor, tmp_path) -> None:
    job, took, pids = cancel_while_running(ex, tmp_path)
    assert job.wait(5) and took < 3
    assert job.state_counts()["cancelled"] == 6
    for pid in pids:
        assert process_gone(pid)
    # other work goes on
    assert ex.map_job(abs, [-2]).results(timeout=30) == [2]


def test_futures_api(ex: Executor) -> None:
    fut = ex.submit(pow, 2, 8)
    assert fut.result(timeout=30) == 256
    assert list(ex.map(lambda a, b: a * b, [1, 2, 3], [4, 5, 6])) == [4, 10, 18]
    bad = ex.submit(int, "x")
    with pytest.raises(RemoteError, match="ValueError"):
        bad.result(timeout=30)


def test_unpicklable_function_names_the_culprit(ex: Executor) -> None:
    import threading

    lock = threading.Lock()

    def uses_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(SerializationError, match="'lock'"):
        ex.map_job(uses_lock, [1])


def test_unpicklable_input_is_named_by_position(ex: Executor) -> None:
    import threading

    with pytest.raises(SerializationError, match="input #2"):
        ex.map_job(str, [1, 2, threading.Lock()])


def test_inputs_and_results_over_the_message_limit_need_no_spilling_here(tmp_path) -> None:
    """The local backend's pipes carry any size: max_message_mb bounds broker messages."""
    ex = Executor(backend="local", processes=1, max_message_mb=1, spill_dir=str(tmp_path))
    try:
        job = ex.map_job(lambda b: b * 2, [b"x", b"y" * (3 * 1024 * 1024)])
        assert [len(v) for v in job.results()] == [2, 6 * 1024 * 1024]
        assert job.spill_dir == "" and list(tmp_path.iterdir()) == []
    finally:
        ex.shutdown()


def test_slow_calls_spread_over_both_processes(ex: Executor) -> None:
    # automatic chunking must not hand every call of a small run to one process
    def where(_: int) -> int:
        import os
        import time

        time.sleep(0.05)
        return os.getpid()

    pids = ex.map_job(where, range(40)).results(timeout=30)
    counts = {p: pids.count(p) for p in set(pids)}
    assert len(counts) == 2 and min(counts.values()) >= 10, counts


def test_values_unpickled_while_the_job_runs_are_the_ones_its_futures_give(
    ex: Executor,
) -> None:
    def boxed(x: int) -> list[int]:
        import time

        time.sleep(0.002)
        return [x]

    job = ex.map_job(boxed, range(200), chunksize=5)
    values = job.results(timeout=60)  # (unpickled as they came, while it ran)
    assert values == [[x] for x in range(200)]
    assert all(job.futures[i].result(timeout=5) is values[i] for i in range(200))


def test_a_value_that_cannot_be_unpickled_here_fails_results_once_the_job_is_over(
    ex: Executor,
) -> None:
    class Gone:  # unpickled here by a function that raises: as a class the kernel lacks
        def __reduce__(self):  # noqa: ANN204
            return (_refuse, ())

    def make(x: int) -> object:
        import time

        time.sleep(0.01)
        return Gone() if x == 0 else x

    job = ex.map_job(make, range(40), chunksize=2)
    with pytest.raises(RuntimeError, match="cannot be rebuilt here"):
        job.results(timeout=60)
    assert job.done() and job.state_counts()["done"] == 40


def _refuse() -> None:
    raise RuntimeError("cannot be rebuilt here")
