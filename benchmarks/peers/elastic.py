"""sif_magic's elastic SLURM workers (issue 12): the scaler of ``launch/scaler.py`` on a
one-node SLURM cluster of its own (``tests/slurm_cluster.py``: Debian's slurm-wlm and
munge, 2 CPUs), the machine's RabbitMQ, workers with ``--container none``.

Scenarios (see ``benchmarks/run.py``):

- e1: from zero workers to the first result (``--adapt 0:2``, one-CPU jobs);
- e2: node-seconds a node stays allocated after the last call of that map (goal: at
  most the idle timeout plus 5 s), the worst node;
- e3: calls run more than once because a job reached its walltime (``--adapt 1:1
  --time 00:01:00``, calls crossing the walltime; goal 0). Each call notes its start
  in a file; reruns are starts beyond the number of calls.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import _common
from ._common import PY, ROOT, Context
from .sifmagic import _setup_env, rabbit_executor

TOOL = "sif_magic (elastic SLURM)"


def _scaler(ex: Any, runtime: str, key_file: Path, url_file: Path, **kw: Any) -> Any:
    from sif_magic.launch.adapt import Policy
    from sif_magic.launch.scaler import Scaler
    from sif_magic.launch.slurm import SlurmSpec

    spec = SlurmSpec(
        runtime=runtime,
        container="none",
        cpus_per_task=kw.get("cpus", 1),
        processes=kw.get("cpus", 1),
        idle_timeout=kw["idle"],
        amqp_url_file=str(url_file),
        key_file=str(key_file),
        python=PY,
        time=kw.get("time", ""),
    )
    policy = Policy(kw["min"], kw["max"], kw.get("cpus", 1), submit_every=1.0)
    return Scaler(ex.backend, spec, policy, poll=0.5).start()


def _allocated(name: str) -> set[str]:
    from sif_magic.launch import squeue

    return {r.job_id for r in squeue.jobs_named(name) if r.state in ("RUNNING", "CONFIGURING")}


def first_result_and_idle(ctx: Context, runtime: str, key_file: Path, url_file: Path) -> None:
    p = ctx.params
    idle = float(p.get("idle", 10))
    ex = rabbit_executor(runtime, key_file)
    scaler = _scaler(ex, runtime, key_file, url_file, min=0, max=2, idle=idle)
    try:

        def nap(x: int) -> int:
            import time

            time.sleep(0.5)
            return x

        t0 = time.perf_counter()
        job = ex.map_job(nap, range(int(p.get("n_e1", 8))), chunksize=1)
        _common.wait_until(lambda: job.state_counts()["done"] >= 1, 600, "a first result")
        ctx.record("e1", TOOL, "zero workers to first result", time.perf_counter() - t0, "s",
                   higher_is_better=False)  # fmt: skip
        job.results(timeout=600)
        last = time.time()
        ends: dict[str, float] = {}
        held = _allocated(scaler.name)
        while held - set(ends):
            now_held = _allocated(scaler.name)
            for j in held - now_held:
                ends.setdefault(j, time.time())
            held |= now_held
            if time.time() - last > idle + 600:
                raise RuntimeError(f"jobs {sorted(held - set(ends))} never ended")
            time.sleep(0.2)
        worst = max((t - last for t in ends.values()), default=0.0)
        ctx.record("e2", TOOL, "allocated after the last call (worst node)", worst, "s",
                   higher_is_better=False, idle_timeout=idle, nodes=len(ends),
                   node_seconds=sum(t - last for t in ends.values()))  # fmt: skip
        job.close()
    finally:
        scaler.stop()
        ex.shutdown()


def walltime_reruns(ctx: Context, runtime: str, key_file: Path, url_file: Path) -> None:
    p = ctx.params
    n, secs = int(p.get("n_e3", 24)), float(p.get("s_e3", 10))
    marks = ctx.workdir / "starts.txt"
    ex = rabbit_executor(runtime, key_file)
    scaler = _scaler(ex, runtime, key_file, url_file, min=1, max=1, idle=10, cpus=2,
                     time="00:01:00")  # fmt: skip

    def marked(x: int, path: str = str(marks), secs: float = secs) -> str:
        import os
        import time

        with open(path, "a") as f:
            f.write(f"{x}\n")
        time.sleep(secs)
        return os.environ.get("SLURM_JOB_ID", "")

    try:
        job = ex.map_job(marked, range(n), chunksize=1)
        job.wait(timeout=n * secs * 4 + 600)
        counts = job.state_counts()
        jobs = set(job.results(errors="collect")) if counts["done"] == n else set()
        starts = marks.read_text().split() if marks.exists() else []
        ctx.record("e3", TOOL, "calls rerun because of walltime", len(starts) - n, "calls",
                   higher_is_better=False, calls=n, seconds_each=secs, states=counts,
                   slurm_jobs=len(jobs))  # fmt: skip
        job.close()
    finally:
        scaler.stop()
        ex.shutdown()


def run(ctx: Context) -> None:
    _setup_env(ctx.workdir)
    sys.path.insert(0, str(ROOT / "tests"))
    from slurm_cluster import SlurmCluster, missing_tools

    from sif_magic import protocol
    from sif_magic._keys import load_key

    if missing_tools():
        raise RuntimeError(f"no SLURM here: {', '.join(missing_tools())} missing")
    _common.ship_by_value()
    os.environ["PYTHONPATH"] = str(ROOT)  # the jobs' workers import this checkout
    key_file = ctx.workdir / "key"
    scope = protocol.key_id(load_key(key_file=str(key_file)))
    url_file = ctx.workdir / "amqp_url"
    url_file.write_text(_common.BROKER_URL)
    url_file.chmod(0o600)
    cluster = SlurmCluster().start()
    os.environ["SLURM_CONF"] = str(cluster.conf)

    runtimes = [_common.unique("elastic"), _common.unique("wall")]
    try:
        if ctx.want("e1") or ctx.want("e2"):
            with ctx.attempt("e1", TOOL):
                first_result_and_idle(ctx, runtimes[0], key_file, url_file)
        if ctx.want("e3"):
            with ctx.attempt("e3", TOOL):
                walltime_reruns(ctx, runtimes[1], key_file, url_file)
    finally:
        cluster.close()
        _common.delete_queues(
            *(
                q
                for r in runtimes
                for q in (protocol.task_queue(scope, r), protocol.retry_queue(scope, r))
            )
        )
        shutil.rmtree(cluster.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
