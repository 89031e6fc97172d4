"""``sif_magic.report`` from inside calls: the job sees the fraction and message
(local and rabbitmq backends), the bar counts it, and it is a no-op elsewhere."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest
from procs import until

import sif_magic
from sif_magic import Executor
from sif_magic.display.text import describe_text

DEADLINE = 60.0
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this file


def halfway(path: str) -> str:
    import os

    import sif_magic

    for k in range(5001):
        sif_magic.report(k / 10000, f"step {k} of 10000")  # every few microseconds
    while not os.path.exists(path):
        time.sleep(0.01)
    return "done"


def test_the_job_sees_the_fraction_and_message_a_call_reports(any_ex: Executor, tmp_path) -> None:
    flag = tmp_path / "go"
    job = any_ex.map_job(halfway, [str(flag), str(flag)], chunksize=1)
    until("both calls at half", lambda: len(job.progress()[1]) == 2 or job.done())
    assert not job.done(), job.results(errors="collect")
    until(
        "both reports final",
        lambda: (
            job.progress()
            == (1.0, {0: (0.5, "step 5000 of 10000"), 1: (0.5, "step 5000 of 10000")})
        ),
    )
    d = job.describe_call(1)
    assert (d["progress"], d["message"]) == (0.5, "step 5000 of 10000")
    text = describe_text(d)
    assert "50%" in text and "» step 5000 of 10000" in text
    assert job.event_batches < 5001  # batched: not one message per report
    flag.write_text("go")
    assert job.results(timeout=DEADLINE) == ["done", "done"]
    assert job.progress() == (2.0, {})  # calls that ended count whole
    assert job.describe_call(0)["message"] == "step 5000 of 10000"  # the last word stays


def test_report_outside_a_worker_does_nothing_but_checks_its_fraction() -> None:
    sif_magic.report(0.3, "here")
    sif_magic.report(1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sif_magic.report(1.5)
    with pytest.raises(TypeError, match="between 0 and 1"):
        sif_magic.report("half")  # type: ignore[arg-type]
