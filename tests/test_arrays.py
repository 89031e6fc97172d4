"""Arrays and other buffers in and out of calls, on both backends (issue 14 part 3):
they travel beside their pickles (runner/oob.py) and come back exact and writable,
also when spilled and when a redelivered chunk is split. NumPy is a test dependency
only; what the calls return is checked here, in the client."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from test_oob import same

from sif_magic import Executor


def _inputs() -> list:
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    return [
        base,
        base[::2, 1::3],  # not contiguous
        np.asfortranarray(base),
        np.zeros((0, 3), dtype=np.int16),  # zero-size
        np.arange(300_000, dtype=np.int32),  # 1.2 MB
        np.array([1 + 2j], dtype=np.complex128),
        np.array(["x", "yz"]),
        b"some bytes",
        bytearray(b"a bytearray"),
        memoryview(np.arange(6, dtype=np.int16).reshape(2, 3)),
        {"no": "buffers", "n": [1, 2.5]},
    ]


def echo(x):  # noqa: ANN001, ANN201 - the call sees what was sent, and says how it saw it
    import numpy as np

    if isinstance(x, np.ndarray):
        writable = x.flags.writeable
        x[...] = x  # writes nothing new, but fails on read-only memory
        return x, x * 2 if x.dtype.kind in "biufc" else x.copy(), writable
    return x, x, True


def test_arrays_and_buffers_round_trip_exactly(any_ex: Executor) -> None:
    items = _inputs()
    results = any_ex.map_job(echo, items, chunksize=3).results(timeout=180)
    for item, (back, derived, writable) in zip(items, results):
        assert same(item, back), (item, back)
        assert writable, f"the call got a read-only {type(item).__name__}"
        if isinstance(item, np.ndarray):
            expect = item * 2 if item.dtype.kind in "biufc" else item
            assert same(np.asarray(expect), derived)
            assert back.flags.writeable and derived.flags.writeable  # results too
            back[...] = back  # and really so


def test_one_call_per_message_and_big_arrays(any_ex: Executor) -> None:
    arrays = [np.full(1 << 20, float(i)) for i in range(6)]  # 8 MB each
    out = any_ex.map_job(echo, arrays, chunksize=1).results(timeout=180)
    for i, (back, double, _) in enumerate(out):
        assert back[0] == i and double[-1] == 2 * i and back.shape == (1 << 20,)


@pytest.fixture
def spilling(broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path):  # noqa: ANN001, ANN201
    workers.start(runtime, processes=1)
    root = tmp_path / "spill"
    ex = Executor(
        backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file),
        spill_dir=str(root),
    )  # fmt: skip
    ex.config.max_message_mb = 2
    yield ex, root
    ex.shutdown(cancel_futures=True)


def seen_spilled(x):  # noqa: ANN001, ANN201
    import os

    return x, x + 1, sorted(os.listdir(os.environ["SIF_MAGIC_SPILL_DIR"]))


def test_arrays_over_the_limit_spill_with_their_buffers(spilling) -> None:  # noqa: ANN001
    ex, root = spilling
    small, big = np.arange(10, dtype=np.int64), np.arange(3 << 20, dtype=np.uint8).reshape(3, -1)
    job = ex.map_job(seen_spilled, [small, big])
    (s_same, s_plus, _), (b_same, b_plus, files) = job.results(timeout=180)
    assert same(small, s_same) and same(small + 1, s_plus)
    assert same(big, b_same) and same((big + 1).astype(np.uint8), b_plus)
    assert [name.split("-")[0] for name in files] == ["input"]  # the big input went by file
    assert b_plus.flags.writeable
    assert not os.path.exists(job.spill_dir)  # its results (spilled too) read: gone


def stalls_first(mark: str):  # noqa: ANN201
    """``x * 3``, whose call on the input that starts with 0 stalls the first time
    (it leaves ``mark``)."""

    def slow_first(x):  # noqa: ANN001, ANN202
        import os
        import time

        if x[0] == 0 and not os.path.exists(mark):
            open(mark, "w").close()
            time.sleep(60)  # killed with its worker meanwhile
        return x * 3

    return slow_first


def kill_while_stalled(mark: str, victim, workers, runtime: str):  # noqa: ANN001, ANN201
    """SIGKILL ``victim`` once the stalled call runs; the second worker started then
    takes the chunk back and splits it."""
    deadline = time.monotonic() + 60
    while not os.path.exists(mark):
        assert time.monotonic() < deadline, "the first call did not start"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    (second,) = workers.start(runtime, processes=1)
    return second


def test_a_redelivered_chunk_of_arrays_is_split_with_their_buffers(
    broker_url: str,
    runtime: str,
    workers,  # noqa: ANN001
    key_file: Path,
    tmp_path: Path,
) -> None:
    (victim,) = workers.start(runtime, processes=1)
    mark = str(tmp_path / "running")
    items = [np.full(200_000, float(i)) for i in range(5)]
    items[3] = items[3][::2]  # one not contiguous
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    try:
        job = ex.map_job(stalls_first(mark), items, chunksize=5)
        second = kill_while_stalled(mark, victim, workers, runtime)
        out = job.results(timeout=120)
    finally:
        ex.shutdown(cancel_futures=True)
    assert all(same(a * 3, b) for a, b in zip(items, out))
    assert job.describe_call(0)["attempt"] >= 2  # it did come back
    log = Path(second.log_path).read_text()
    assert "could not re-pack" not in log, log[-2000:]  # split one input per message


def test_kept_results_of_arrays_come_back_from_the_cache(tmp_path: Path) -> None:
    """resume=True keeps a segment's buffers in its cache file (cache/segfile.py)."""
    runs = tmp_path / "runs"
    runs.mkdir()

    def plus(a):  # noqa: ANN001, ANN202
        import uuid

        (runs / uuid.uuid4().hex).touch()  # one file per call run
        return a + 1

    items = [np.full(100_000, float(i)) for i in range(4)]
    with Executor(backend="local", processes=2, cache_dir=str(tmp_path / "cache")) as ex:
        first = ex.map_job(plus, items, chunksize=2, resume=True).results(timeout=120)
        n_runs = len(list(runs.iterdir()))
        again = ex.map_job(plus, items, chunksize=2, resume=True).results(timeout=120)
    assert n_runs == 4 and len(list(runs.iterdir())) == 4  # the second run ran nothing
    for a, b, c in zip(items, first, again):
        assert same(a + 1, b) and same(a + 1, c) and c.flags.writeable
