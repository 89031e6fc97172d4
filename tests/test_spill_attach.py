"""A job whose results went through ``spill_dir``, followed by ``attach`` after the
kernel that ran it exited: the results that kernel had not read come back (their
files stay until the job is closed, or result_ttl after no kernel follows it); the
ones it read (a result's file goes once its values are unpickled) fail, saying
they were already collected. Real workers, a real second Python process as the
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


def test_attach_after_the_kernel_exited_gets_unread_spilled_results_and_says_which_were_read(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    workers.start(runtime, processes=1)
    script = tmp_path / "kernel.py"
    script.write_text(KERNEL)
    done = subprocess.run(
        [sys.executable, str(script), broker_url, runtime, str(key_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
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
