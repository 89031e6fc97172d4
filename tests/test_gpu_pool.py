"""GPU pinning and per-call resources in the pool (runner/pool.py, placement.py), with
real slot processes and simulated devices (these machines have no GPU): a call sees
the devices of its process in CUDA_VISIBLE_DEVICES. Concurrency is proven with files
(calls wait for each other), never with timing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_pool import Recorder, chunk

from sif_magic.protocol import DONE, FAILED
from sif_magic.runner.pool import Pool
from sif_magic.runner.resources import THREAD_VARS


class DeviceRecorder(Recorder):
    """Also keeps the devices each call's result segment names."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[int, str] = {}

    def results(self, chunk: Any, seg: Any) -> None:
        with self.cond:
            for i in seg.indices:
                self.devices[i] = seg.devices
        super().results(chunk, seg)


def meet(folder: str, n: int) -> Any:
    """A call that returns its CUDA_VISIBLE_DEVICES once ``n`` calls run at the same
    time (each leaves a file; it fails if the others never come)."""

    def call(x: int) -> str | None:
        import os
        import time

        open(os.path.join(folder, f"in-{x}"), "w").close()
        deadline = time.time() + 60
        while sum(f.startswith("in-") for f in os.listdir(folder)) < n:
            if time.time() > deadline:
                raise TimeoutError(f"call {x}: the {n} calls never ran at the same time")
            time.sleep(0.01)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    return call


def overlap(folder: str) -> Any:
    """A call that returns (its CUDA_VISIBLE_DEVICES, the most calls it saw running)."""

    def call(x: int) -> tuple[str | None, int]:
        import os
        import time

        mark = os.path.join(folder, f"run-{x}")
        open(mark, "w").close()

        def running() -> int:
            return sum(f.startswith("run-") for f in os.listdir(folder))

        seen, deadline = running(), time.time() + 10
        while seen < 2 and time.time() < deadline:  # wait for a partner (the last may have none)
            time.sleep(0.01)
            seen = running()
        for _ in range(20):
            time.sleep(0.01)
            seen = max(seen, running())
        os.unlink(mark)
        return os.environ.get("CUDA_VISIBLE_DEVICES"), seen

    return call


@pytest.fixture
def rec() -> DeviceRecorder:
    return DeviceRecorder()


def _pool(rec: Recorder, tmp_path: Path, **kw: Any) -> Pool:
    kw.setdefault("devices", ["0", "1", "2", "3"])
    kw.setdefault("processes", len(kw["devices"]) or 2)
    return Pool(reporter=rec, cwd=str(tmp_path), worker="w", host="h", **kw).start()


def _run(pool: Pool, rec: Recorder, func: Any, n: int, job: str, first: int = 0, **kw: Any) -> list:
    for k in range(n):  # a chunk per call: each can go to another slot
        pool.submit(chunk(func, [first + k], job=job, number=k, first=first + k, **kw))
    rec.wait(f"{n} calls of {job}", lambda: all(first + k in rec.outcomes for k in range(n)))
    out = [rec.outcomes[first + k] for k in range(n)]
    assert all(st == DONE for st, _, _ in out), out
    return [v for _, _, v in out]


def test_four_calls_at_once_see_four_different_devices(rec: DeviceRecorder, tmp_path: Path):
    pool = _pool(rec, tmp_path)
    try:
        assert sorted(pool.slot_devices) == ["0", "1", "2", "3"]
        seen = _run(pool, rec, meet(str(tmp_path), 4), 4, "j")
        assert sorted(seen) == ["0", "1", "2", "3"]  # one device each, all four at once
        assert [rec.devices[i] for i in range(4)] == seen  # results say where each ran
    finally:
        pool.close()


def test_calls_asking_for_two_gpus_run_two_at_a_time_each_with_two(
    rec: DeviceRecorder, tmp_path: Path
) -> None:
    pool = _pool(rec, tmp_path)
    try:
        seen = _run(pool, rec, overlap(str(tmp_path)), 6, "pairs", resources={"gpus": 2})
        devices = {d for d, _ in seen}
        assert devices == {"0,1", "2,3"}  # two devices each, never shared
        assert max(n for _, n in seen) == 2  # two at once (a call saw its partner) ...
        assert all(n <= 2 for _, n in seen)  # ... and never three
        assert sorted(pool.slot_devices) == ["0,1", "2,3"]  # re-shaped: two slots of two
    finally:
        pool.close()


def test_slots_are_reshaped_as_calls_of_other_sizes_come(rec: DeviceRecorder, tmp_path: Path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    pool = _pool(rec, tmp_path)
    try:
        assert sorted(_run(pool, rec, meet(str(tmp_path / "a"), 4), 4, "a")) == ["0", "1", "2", "3"]
        big = _run(pool, rec, lambda x: os.environ["CUDA_VISIBLE_DEVICES"], 1, "big", 10,
                   resources={"gpus": 4})  # fmt: skip
        assert big == ["0,1,2,3"] and pool.slot_devices == ["0,1,2,3"]
        back = _run(pool, rec, meet(str(tmp_path / "b"), 4), 4, "b", 20)
        assert sorted(back) == ["0", "1", "2", "3"]  # one each again, four at once
        none = _run(pool, rec, lambda x: os.environ.get("CUDA_VISIBLE_DEVICES"), 1, "cpu", 30,
                    resources={"gpus": 0})  # fmt: skip
        assert none == [""]  # a call that asked for no GPU sees none
    finally:
        pool.close()


def test_thread_variables_follow_the_cpus_a_call_asks_for(rec: DeviceRecorder, tmp_path: Path):
    pool = _pool(rec, tmp_path, devices=[], processes=2, cpus=8)

    def threads(x: int) -> dict:
        import os

        return {v: os.environ.get(v) for v in THREAD_VARS}

    try:
        asked = _run(pool, rec, threads, 2, "cpus", resources={"cpus": 3})
        assert asked == [dict.fromkeys(THREAD_VARS, "3")] * 2
        plain = _run(pool, rec, threads, 1, "plain", 10)  # no request: left as they are
        assert plain == [{v: os.environ.get(v) for v in THREAD_VARS}]
        assert rec.devices[0] == ""  # no GPU here
    finally:
        pool.close()


def test_a_request_the_pool_can_never_meet_fails_at_once(rec: DeviceRecorder, tmp_path: Path):
    pool = _pool(rec, tmp_path, devices=["0", "1"])
    try:
        pool.submit(chunk(lambda x: x, [0, 1], job="big", resources={"gpus": 4}))
        rec.wait("the refusal", lambda: len(rec.outcomes) == 2)
        status, _, err = rec.outcomes[0]
        assert status == FAILED and err["type"] == "sif_magic.errors.ResourcesError"
        assert "4 GPU(s)" in err["message"] and "2 GPU(s)" in err["message"]
        assert _run(pool, rec, lambda x: x + 1, 1, "fine", 5) == [6]  # nothing got stuck
    finally:
        pool.close()
