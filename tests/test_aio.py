"""``await job``, ``await future``, ``async for ... in job.as_completed()`` on real workers.

The calls wait for a file that only another task of the same event loop
writes: if awaiting blocked the loop, they would wait until the deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Iterator

import cloudpickle
import pytest

from sif_magic import Executor, RemoteError

DEADLINE = 60.0
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this file


def _run(coro):  # noqa: ANN001, ANN202
    """``asyncio.run`` on a thread of its own: as in a script, whatever event loop this
    thread may hold (pytest plugins, a browser driver of an earlier test)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def ex() -> Iterator[Executor]:
    e = Executor(backend="local", processes=2)
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def wait_for_file(path: str) -> str:
    import os
    import time

    end = time.time() + 60
    while not os.path.exists(path):
        if time.time() > end:
            raise TimeoutError(f"{path} never appeared: the event loop was blocked")
        time.sleep(0.01)
    return path


async def write_later(path: str) -> None:
    await asyncio.sleep(0.05)
    with open(path, "w") as f:
        f.write("go")


def test_await_job_leaves_the_event_loop_free(ex: Executor, tmp_path) -> None:
    flag = str(tmp_path / "go")

    async def main() -> list[str]:
        job = ex.map_job(wait_for_file, [flag] * 3)
        writer = asyncio.create_task(write_later(flag))
        values = await asyncio.wait_for(job, DEADLINE)
        await writer
        return values

    assert _run(main()) == [flag] * 3


def test_await_a_future_of_submit(ex: Executor, tmp_path) -> None:
    flag = str(tmp_path / "go")

    async def main() -> str:
        fut = ex.submit(wait_for_file, flag)
        asyncio.get_running_loop().call_later(0.05, lambda: open(flag, "w").close())
        return await asyncio.wait_for(fut, DEADLINE)

    assert _run(main()) == flag


def _odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x * 10


def test_async_for_as_completed_yields_each_call_once(ex: Executor) -> None:
    async def main() -> dict[int, object]:
        job = ex.map_job(_odd_fails, range(20), chunksize=1, errors="collect")
        got: dict[int, object] = {}
        async for i, value in job.as_completed():
            assert i not in got
            got[i] = value
        return got

    got = _run(asyncio.wait_for(main(), DEADLINE))
    assert sorted(got) == list(range(20))
    assert all(got[i] == i * 10 for i in range(0, 20, 2))
    assert all(isinstance(got[i], RemoteError) and f"odd {i}" in str(got[i]) for i in (1, 19))


def test_as_completed_raises_a_failure_when_errors_raise(ex: Executor) -> None:
    job = ex.map_job(_odd_fails, [0, 1], chunksize=1)
    with pytest.raises(RemoteError, match="odd 1"):
        for _ in job.as_completed():
            pass


def test_as_completed_of_a_finished_job_and_plain_for(ex: Executor) -> None:
    job = ex.map_job(abs, [-1, -2, -3])
    job.wait(DEADLINE)
    assert sorted(job.as_completed()) == [(0, 1), (1, 2), (2, 3)]

    async def again() -> list[tuple[int, int]]:
        return sorted([pair async for pair in job.as_completed()])

    assert _run(again()) == [(0, 1), (1, 2), (2, 3)]
    assert _run(_awaited(job)) == [1, 2, 3]


async def _awaited(job: object) -> object:
    return await job  # type: ignore[misc]


def test_await_a_failed_job_raises_like_results(ex: Executor) -> None:
    job = ex.map_job(_odd_fails, [0, 1])
    with pytest.raises(RemoteError, match="odd 1"):
        _run(_awaited(job))
