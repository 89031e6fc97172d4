"""A job whose results went through ``spill_dir``, followed by ``attach`` after the
kernel that ran it exited: the results that kernel had not read come back (their
files stay until the job is closed, or result_ttl after no kernel follows it); the
ones it read (a result's file goes once its values are unpickled) fail, saying
they were already collected; where the directory is not seen at all, they say
that. Real workers, a real second Python process as the
first kernel, exiting normally (as a kernel restart does)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from workers import ROOT

from sif_magic import Executor
from sif_magic.runner import spill

KERNEL = textwrap.dedent(
    """
    import os
    import sys
    import time
    import numpy as np
    from sif_magic import Executor

    url, runtime, key_file = sys.argv[1:4]
    ex = Executor(backend="rabbitmq", amqp_url=url, runtime=runtime, key_file=key_file,
                  result_ttl=900)

    while not ex.backend.live_workers():  # arrays go by file once it heard a worker
        time.sleep(0.1)

    def plus_one(a):
        import time
        time.sleep(0.5)  # one result (one file) per call
        return a + 1

    items = [np.full(1 << 18, float(i)) for i in range(4)]  # 2 MB each
    read = ex.map_job(plus_one, items, chunksize=1)
    print("READ", read.job_id, [float(a[0]) for a in read.results(timeout=120)], flush=True)
    unread = ex.map_job(plus_one, items, chunksize=1)
    assert unread.wait(120)
    print("UNREAD", unread.job_id, len(os.listdir(unread.spill_dir)), flush=True)
    # exits without closing the jobs: their results stay in their queues for attach
    """
)


def run_kernel(code: str, d: Path, *args: str) -> subprocess.CompletedProcess:
    """A first kernel: ``code`` run to its end by another Python process."""
    script = d / "kernel.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=str(d),
    )
    assert done.returncode == 0, done.stderr
    return done


def test_attach_after_the_kernel_exited_gets_unread_spilled_results_and_says_which_were_read(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    workers.start(runtime, processes=1)
    done = run_kernel(KERNEL, tmp_path, broker_url, runtime, str(key_file))
    lines = {k: v.split() for k, _, v in (line.partition(" ") for line in done.stdout.splitlines())}
    read_id, unread_id = lines["READ"][0], lines["UNREAD"][0]
    assert lines["READ"][1:] == ["[1.0,", "2.0,", "3.0,", "4.0]"]
    assert int(lines["UNREAD"][1]) >= 1  # its results went by file
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    try:
        job = ex.attach(unread_id)
        out = job.results(timeout=120)  # the exit removed none of its files
        assert [float(a[0]) for a in out] == [1.0, 2.0, 3.0, 4.0]
        assert job.spill_dir == os.path.join(spill.default_dir(), unread_id)
        assert not os.path.exists(job.spill_dir)  # read here now: they go
        job = ex.attach(read_id)
        for err in job.results(timeout=120, errors="collect"):  # read there: files gone
            assert type(err).__name__ == "SerializationError", err
            assert "already collected" in str(err) and "run this call again" in str(err)
    finally:
        ex.shutdown(cancel_futures=True)


ELSEWHERE = textwrap.dedent(
    """
    import sys
    import time
    from sif_magic import Executor

    url, runtime, key_file, spill_dir = sys.argv[1:5]
    ex = Executor(backend="rabbitmq", amqp_url=url, runtime=runtime, key_file=key_file,
                  result_ttl=900, spill_dir=spill_dir)
    while not ex.backend.live_workers():  # arrays go by file once it heard a worker
        time.sleep(0.1)

    def big(i):
        import numpy as np
        return np.ones(1 << 18)  # 2 MB of array: the result goes by file

    job = ex.map_job(big, range(2), chunksize=1)
    assert job.wait(120)
    print("JOB", job.job_id, flush=True)
    """
)


def test_attach_from_a_kernel_that_does_not_see_the_spill_directory_says_so(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    """Not "already collected": the results are in files of a directory this kernel
    does not see (another machine, another spill_dir); the error names it."""
    root = tmp_path / "elsewhere"
    monkeypatch.setenv("SIF_MAGIC_SPILL_DIR", str(root))  # the worker sees that kernel's root
    workers.start(runtime, processes=1)
    monkeypatch.delenv("SIF_MAGIC_SPILL_DIR")
    done = run_kernel(ELSEWHERE, tmp_path, broker_url, runtime, str(key_file), str(root))
    (job_id,) = done.stdout.split("JOB ")[1].split()
    root.rename(tmp_path / "moved")  # from here, as from another machine: not there
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    try:
        errors = ex.attach(job_id).results(timeout=120, errors="collect")
    finally:
        ex.shutdown(cancel_futures=True)
    assert len(errors) == 2
    for err in errors:
        assert type(err).__name__ == "SerializationError", err
        assert "already collected" not in str(err)
        assert f"spill directory {root / job_id}, which is not visible from this kernel" in str(err)
