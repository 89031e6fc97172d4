"""Issue 12, part 3: a worker whose allocation ends (walltime) drains instead of losing work.

Real ``sif-magic worker`` processes on the machine's RabbitMQ. ``--lifetime`` stands
for the SLURM job's end (``SLURM_JOB_END_TIME`` / squeue give the same end time, see
tests/test_slurm.py): the worker takes only chunks it can finish by then, hands back
what it cannot (calls cut at the end go back too, not counted as lost) and exits;
a replacement finishes the job. Runs are counted by side effect (``runs_of``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from faultkit import FaultWorkers, runs_of, slow_call


def test_a_worker_at_its_end_hands_back_and_nothing_runs_twice(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (leaving,) = fworkers.start(runtime, processes=2, options=("--lifetime", "10"))
    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    n = 24  # 72 s of work on 2 processes, a worker of 10 s
    job = ex.map_job(slow_call(str(runs), 3.0), range(n), chunksize=3)
    assert leaving.wait(120) == 0, fworkers.logs()[-3000:]  # it left by itself
    done_before = runs_of(runs)
    assert done_before, "the short worker ran nothing"
    fworkers.start(runtime, processes=2)  # its replacement
    assert job.results(timeout=300) == [x * 10 for x in range(n)]
    assert runs_of(runs) == Counter(range(n)), f"runs per call: {runs_of(runs)}"
    assert job.state_counts()["failed"] == 0
    calls = [job.describe_call(i) for i in range(n)]
    assert all(c["attempt"] == 1 for c in calls), "a returned call was counted as lost"
    returned = [c for c in calls if c["note"].startswith("returned")]
    assert returned, [c["note"] for c in calls]
    assert all(c["index"] not in done_before for c in returned)
    logs = fworkers.logs()
    assert "must be gone by" in logs and "handed back" in logs, logs[-3000:]
