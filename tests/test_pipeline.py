"""Pipelines: ``any_ex.map_job(g, job1)`` on the local and rabbitmq backends."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest
from procs import until

from sif_magic import CancelledError, Executor, UpstreamError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this file
DEADLINE = 60.0


def last_gated(x: tuple[int, str, int]) -> int:
    """Call ``i`` of ``n`` returns 10 i; the last one waits for the file ``gate``
    (one slot of two stays free for the second job)."""
    import os

    i, gate, n = x
    while i == n - 1 and not os.path.exists(gate):
        time.sleep(0.01)
    if i == 3:
        raise ValueError(f"upstream cannot take {i}")
    return i * 10


def plus_one(v: int) -> int:
    return v + 1


def test_the_second_job_takes_results_as_they_come_and_failures_propagate(
    any_ex: Executor, tmp_path
) -> None:
    gate = str(tmp_path / "gate")
    up = any_ex.map_job(last_gated, [(i, gate, 6) for i in range(6)], chunksize=1)
    down = any_ex.map_job(plus_one, up, errors="collect")
    assert down.n == 6
    until("the first calls through both jobs", lambda: down.final == 5)
    assert not up.done()  # the second job did not wait for the whole first one
    (tmp_path / "gate").touch()
    values = down.results(timeout=DEADLINE)
    assert [values[i] for i in (0, 1, 2, 4, 5)] == [1, 11, 21, 41, 51]
    error = values[3]
    assert isinstance(error, UpstreamError) and down.error(3) is not None
    assert f"call 3 of job {up.job_id} ('last_gated')" in str(error)
    assert "upstream cannot take 3" in str(error)
    with pytest.raises(UpstreamError, match=up.job_id):
        any_ex.map_job(plus_one, up).results(timeout=DEADLINE)  # errors="raise": the first failure


def test_cancelling_the_pipeline_cancels_both_jobs(any_ex: Executor, tmp_path) -> None:
    gate = str(tmp_path / "never")
    up = any_ex.map_job(last_gated, [(i, gate, 4) for i in range(4)], chunksize=1)
    down = any_ex.map_job(plus_one, up, errors="collect")
    until("the first calls through both jobs", lambda: down.final == 3)  # 3 waits upstream
    assert down.cancel()
    assert up.wait(DEADLINE) and down.wait(DEADLINE)
    assert up.state(3) == "cancelled" and down.state(3) == "cancelled"
    assert down.results(errors="collect")[:3] == [1, 11, 21]
    assert isinstance(down.results(errors="collect")[3], CancelledError)


def test_a_pipeline_over_a_finished_job_and_resume_is_refused(any_ex: Executor) -> None:
    up = any_ex.map_job(abs, [-1, -2, -3])
    up.wait(DEADLINE)
    assert any_ex.map_job(plus_one, up).results(timeout=DEADLINE) == [2, 3, 4]
    with pytest.raises(Exception, match="run the upstream job with resume=True"):
        any_ex.map_job(plus_one, up, resume=True)
