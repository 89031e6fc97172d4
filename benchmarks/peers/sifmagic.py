"""sif_magic: the rabbitmq backend on real ``sif-magic worker`` processes, and the local backend.

Scenarios (see ``benchmarks/run.py``): s1 one message per call, s2 automatic
chunking, s3 sleeps, s4 time to first result, s5 client memory (each in a
fresh client process), s6 monitoring on/off, s7 the local backend (compared
with ProcessPoolExecutor by ``processpool.py``), s8 skewed call durations on
both backends (``_skew.py``), s9 big NumPy arrays in and out
on both backends (``_arrays.py``; compared with a bare pika round trip of the
same bytes and with ProcessPoolExecutor).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import _common
from ._common import PY, Context, rss_mb

TOOL = "sif_magic"
RABBIT = "sif_magic (rabbitmq)"
LOCAL = "sif_magic (local)"
# s9 with spill_arrays_mb=0: the arrays in the messages, through the broker
RABBIT_BROKER = "sif_magic (rabbitmq, arrays through the broker)"


def _setup_env(workdir: Path) -> None:
    # other users' workers on the shared vhost sign with other keys: do not log each
    logging.getLogger("sif_magic").setLevel(logging.ERROR)
    os.environ.setdefault("SIF_MAGIC_HOME", str(workdir / "home"))
    os.environ["SIF_MAGIC_WIDGETS"] = "0"
    for var in ("SIF_MAGIC_AMQP_URL", "SIF_MAGIC_BACKEND", "SIF_MAGIC_RUNTIME", "SIF_MAGIC_KEY"):
        os.environ.pop(var, None)


def key_scope(key_file: Path) -> str:
    """The key id of ``key_file``: every queue and exchange of its workers and clients is
    named ``sif_magic.<key id>.*``."""
    from sif_magic import protocol
    from sif_magic._keys import load_key

    return protocol.key_id(load_key(key_file=str(key_file)))


def run_queues(runtime: str, key_file: Path) -> tuple[list[str], list[str]]:
    """The queues and exchanges this run's key and runtime leave on the broker (the key is
    the run's own: its dead-letter queue and exchanges go too)."""
    from sif_magic import protocol

    scope = key_scope(key_file)
    queues = [
        protocol.task_queue(scope, runtime),
        protocol.retry_queue(scope, runtime),
        protocol.dead_queue(scope),
    ]
    exchanges = [
        protocol.direct_exchange(scope),
        protocol.monitor_exchange(scope),
        protocol.control_exchange(scope),
        protocol.dead_exchange(scope),
    ]
    return queues, exchanges


def start_workers(ctx: Context, runtime: str, key_file: Path, processes: int = 2) -> None:
    from sif_magic import protocol

    url_file = ctx.workdir / "amqp_url"
    url_file.write_text(_common.BROKER_URL)
    url_file.chmod(0o600)
    proc = ctx.procs.start(
        [
            PY,
            "-m",
            "sif_magic",
            "worker",
            "--amqp-url-file",
            str(url_file),
            "--runtime",
            runtime,
            "--processes",
            str(processes),
            "--key-file",
            str(key_file),
        ],
        name=f"sif-worker-{runtime}",
    )
    scope = key_scope(key_file)
    queue = protocol.task_queue(scope, runtime)
    try:
        _common.wait_until(
            lambda: (
                proc.poll() is None
                and _common.queue_consumers(
                    queue, durable=True, arguments=protocol.task_queue_arguments(scope)
                )
                >= 1
            ),
            30,
            "the sif-magic worker to consume its queue",
            step=0.2,
        )
    except TimeoutError:
        raise RuntimeError(f"worker did not start: {ctx.procs.log_tail(proc)}") from None
    ctx.procs.note_descendants()


def rabbit_executor(runtime: str, key_file: Path) -> Any:
    from sif_magic import Executor

    return Executor(
        backend="rabbitmq",
        amqp_url=_common.BROKER_URL,
        runtime=runtime,
        key_file=str(key_file),
        no_worker_timeout=30,
    )


def local_executor() -> Any:
    from sif_magic import Executor

    return Executor(backend="local", processes=2)


def timed_results(
    ex: Any, fn: Any, items: Any, timeout: float, **kw: Any
) -> tuple[float, Any, list]:
    """(seconds from ``map_job`` to every result in this process, the job, its values)."""
    t0 = time.perf_counter()
    job = ex.map_job(fn, items, **kw)
    values = job.results(timeout=timeout)
    return time.perf_counter() - t0, job, values


def timed_map(ex: Any, fn: Any, items: range, timeout: float = 300, **kw: Any) -> tuple[float, Any]:
    """Seconds from ``map_job`` to every result in this process; checks values and states."""
    dt, job, values = timed_results(ex, fn, items, timeout, **kw)
    counts = job.state_counts()
    expect = fn(items[0]) - items[0] if len(items) else 0  # inc adds 1, nap adds 0
    if counts["done"] != len(items) or sum(values) != sum(items) + expect * len(items):
        raise RuntimeError(f"wrong results or states: {counts}")
    return dt, job


def close_job(job: Any) -> None:
    try:
        job.close()
    except Exception:  # noqa: BLE001
        pass


def throughput(
    ctx: Context, scenario: str, tool: str, ex: Any, n: int, chunksize: int | None, **extra: Any
) -> None:
    from sif_magic.runner import scheduler

    from ._funcs import inc

    dt, job = timed_map(ex, inc, range(n), chunksize=chunksize)
    size = chunksize or scheduler.auto_chunksize(n, ex.backend.slots())
    ctx.throughput(scenario, tool, n, dt, chunksize=size, states=job.state_counts(), **extra)
    close_job(job)


def first_result(ctx: Context, tool: str, ex: Any, repeats: int) -> None:
    from ._funcs import inc

    for _ in range(3):  # warm: the function is cached on the workers, queues declared
        close_job(timed_map(ex, inc, range(1))[1])
    samples = []
    for _ in range(repeats):
        dt, job = timed_map(ex, inc, range(1))
        samples.append(dt * 1000)
        close_job(job)
    samples.sort()
    ctx.record(
        "s4",
        tool,
        "time to first result",
        samples[len(samples) // 2],
        "ms",
        higher_is_better=False,
        samples=len(samples),
        min_ms=samples[0],
        max_ms=samples[-1],
        p90_ms=samples[int(len(samples) * 0.9) - 1],
    )


def sleeps(ctx: Context, tool: str, ex: Any, n: int) -> None:
    from sif_magic.runner import scheduler

    from ._funcs import nap

    dt, job = timed_map(ex, nap, range(n))
    ideal = n * 0.01 / 2
    ctx.record(
        "s3",
        tool,
        "wall time",
        dt,
        "s",
        higher_is_better=False,
        ideal=ideal,
        over_ideal_pct=(dt / ideal - 1) * 100,
        chunksize=scheduler.auto_chunksize(n, ex.backend.slots()),
    )
    close_job(job)


def arrays_path(ex: Any) -> str:
    """How s9's arrays travel on ``ex``: "spill_dir" when every worker sees the client's
    spill root and ``spill_arrays_mb`` lets them (the default), else "broker" (or
    "pipes": the local backend)."""
    from sif_magic.runner import spill

    if not ex.backend.bounded:
        return "pipes"
    root = os.path.abspath(os.path.expanduser(ex.config.spill_dir or spill.default_dir()))
    seen = ex.backend.sees_spill([root, spill.root_id(root)])
    return "spill_dir" if seen and ex.config.spill_arrays_mb > 0 else "broker"


def arrays(ctx: Context, tool: str, ex: Any, inner: int) -> None:
    """s9: MB/s in and out of ``map`` over the big arrays (automatic chunks)."""
    from sif_magic.runner import scheduler

    from . import _arrays
    from ._funcs import plus_one

    data = _arrays.make(ctx.params)
    _arrays.check(data[:2], list(ex.map(plus_one, data[:2])))  # the function is cached
    for _ in range(inner):
        dt, job, out = timed_results(ex, plus_one, data, 600)
        _arrays.check(data, out)
        del out
        ctx.record(
            "s9",
            tool,
            "throughput",
            _arrays.moved_mb(data) / dt,
            "MB/s",
            higher_is_better=True,
            seconds=dt,
            arrays=len(data),
            chunksize=scheduler.auto_chunksize(len(data), ex.backend.slots()),
            path=arrays_path(ex),
            spill_arrays_mb=ex.config.spill_arrays_mb,
        )
        close_job(job)
        gc.collect()


def skewed(ctx: Context, tool: str, ex: Any, inner: int) -> None:
    """s8: the makespan of calls of skewed durations, as a share of the ideal
    (automatic chunks)."""
    from sif_magic.runner import scheduler

    from . import _skew
    from ._funcs import sleep_for

    work = _skew.durations(ctx.params)
    ex.map(sleep_for, [0.0] * 4)  # the function is cached on the workers
    for _ in range(inner):
        dt, job, out = timed_results(ex, sleep_for, work, 120)
        _skew.check(work, out)
        s = _skew.score(work, dt)
        ctx.record(
            "s8", tool, "share of the ideal makespan", s.pop("value"), "%",
            higher_is_better=True, chunksize=scheduler.auto_chunksize(len(work), ex.backend.slots()),
            **s,
        )  # fmt: skip
        close_job(job)


def monitoring(ctx: Context, ex: Any, n: int, chunksize: int | None, label: str, rnd: int) -> None:
    """Throughput with the client following the job live (default) and with
    ``monitor=False`` (workers still publish their events; the broker drops them)."""
    from ._funcs import inc

    modes = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
    try:
        for mode in modes:
            ex.config.monitor = mode == "on"  # read by the backend when a job starts
            t0 = time.perf_counter()
            job = ex.map_job(inc, range(n), chunksize=chunksize)
            values = job.results(timeout=300)
            dt = time.perf_counter() - t0
            if job.state_counts()["done"] != n or sum(values) != sum(range(n)) + n:
                raise RuntimeError(f"wrong results: {job.state_counts()}")
            ctx.throughput(
                "s6",
                f"{RABBIT} monitoring {mode}, {label}",
                n,
                dt,
                event_batches_per_s=job.event_batches / dt,
            )
            close_job(job)
    finally:
        ex.config.monitor = True


def memory_client(ctx: Context) -> None:
    """In a fresh process: RSS this process gains from an n-call run, results held."""
    from ._funcs import inc

    p = ctx.params
    _common.ship_by_value()
    if p["backend"] == "rabbitmq":
        ex = rabbit_executor(p["runtime"], Path(p["key_file"]))
    else:
        ex = local_executor()
    try:
        close_job(timed_map(ex, inc, range(1000))[1])  # connection, pool and caches warm
        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        job = ex.map_job(inc, range(p["n"]))
        values = job.results(timeout=300)
        dt = time.perf_counter() - t0
        gc.collect()
        after = rss_mb()
        counts = job.state_counts()
        ok = counts["done"] == p["n"] and len(values) == p["n"]
        ctx.record(
            "s5",
            p["tool"],
            f"RSS added by {p['n']:,} calls",
            after - before,
            "MB",
            higher_is_better=False,
            calls=p["n"],
            rss_before=before,
            rss_after=after,
            seconds=dt,
            ok=ok,
        )
        close_job(job)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def memory(ctx: Context, tool: str, backend: str, n: int, runtime: str, key_file: Path) -> None:
    out = ctx.workdir / f"mem-{backend}.json"
    params = {"backend": backend, "runtime": runtime, "key_file": str(key_file), "n": n}
    params["tool"] = tool
    proc = ctx.procs.start(
        [
            PY,
            "-m",
            "benchmarks.peers.sifmagic",
            "--scenarios",
            "memclient",
            "--params",
            json.dumps(params),
            "--out",
            str(out),
        ],
        name=f"sif-memclient-{backend}",
        env=_common.child_env(SIF_MAGIC_HOME=os.environ["SIF_MAGIC_HOME"]),
    )
    try:
        proc.wait(240)
    except Exception:  # noqa: BLE001
        ctx.procs.stop(proc)
        raise RuntimeError("the memory client did not finish in 240 s") from None
    data = json.loads(out.read_text())
    ctx.measurements.extend(data["measurements"])
    ctx.errors.extend(data["errors"])
    for m in data["measurements"]:
        print(f"  s5 {m['tool']}: {m['value']:.1f} MB", file=sys.stderr)


def run(ctx: Context) -> None:
    _setup_env(ctx.workdir)
    if ctx.want("memclient"):
        memory_client(ctx)
        return
    from sif_magic._keys import load_key

    p = ctx.params
    rnd = int(p.get("round", 0))
    _common.ship_by_value()
    key_file = ctx.workdir / "key"
    load_key(key_file=str(key_file))  # created, mode 600
    runtime = _common.unique("bench")
    rabbit_wanted = any(ctx.want(s) for s in ("s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9"))
    ex = None
    try:
        if rabbit_wanted:
            start_workers(ctx, runtime, key_file, processes=2)
            ex = rabbit_executor(runtime, key_file)
            from ._funcs import inc

            close_job(timed_map(ex, inc, range(200), chunksize=1)[1])  # warm
            close_job(timed_map(ex, inc, range(20000))[1])
        if ctx.want("s1"):
            with ctx.attempt("s1", RABBIT):
                for _ in range(p.get("inner", 2)):
                    throughput(ctx, "s1", RABBIT, ex, p.get("n1", 3000), 1)
        if ctx.want("s2"):
            with ctx.attempt("s2", RABBIT):
                throughput(ctx, "s2", RABBIT, ex, p.get("n2", 100000), None)
        if ctx.want("s3"):
            with ctx.attempt("s3", RABBIT):
                sleeps(ctx, RABBIT, ex, p.get("n3", 200))
        if ctx.want("s4"):
            with ctx.attempt("s4", RABBIT):
                first_result(ctx, RABBIT, ex, p.get("n4", 30))
        if ctx.want("s6"):
            with ctx.attempt("s6", RABBIT):
                for k in range(p.get("inner", 2)):
                    monitoring(ctx, ex, p.get("n6", 1_000_000), None, "automatic chunks", rnd + k)
                    monitoring(ctx, ex, p.get("n1", 3000), 1, "chunksize 1", rnd + k)
        if ctx.want("s8"):
            with ctx.attempt("s8", RABBIT):
                skewed(ctx, RABBIT, ex, p.get("inner", 2))
        if ctx.want("s9"):
            with ctx.attempt("s9", RABBIT):  # the default: through spill_dir (workers see it)
                arrays(ctx, RABBIT, ex, p.get("inner", 2))
            with ctx.attempt("s9", RABBIT_BROKER):
                ex.config.spill_arrays_mb = 0
                try:
                    arrays(ctx, RABBIT_BROKER, ex, p.get("inner", 2))
                finally:
                    ex.config.spill_arrays_mb = 1.0
        if ctx.want("s5"):
            with ctx.attempt("s5", RABBIT):
                memory(ctx, RABBIT, "rabbitmq", p.get("n5", 100000), runtime, key_file)
    finally:
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        ctx.procs.stop_all()  # the workers
        if rabbit_wanted:
            queues, exchanges = run_queues(runtime, key_file)
            _common.delete_queues(*queues, exchanges=tuple(exchanges))
    if any(ctx.want(s) for s in ("s2", "s3", "s4", "s7", "s8", "s9")):
        lex = local_executor()
        try:
            from ._funcs import inc

            close_job(timed_map(lex, inc, range(20000))[1])  # the pool is up and warm
            if ctx.want("s2") or ctx.want("s7"):
                with ctx.attempt("s2", LOCAL):
                    throughput(ctx, "s2", LOCAL, lex, p.get("n2", 100000), None)
                    if ctx.want("s7"):  # the same run is s7's sif_magic figure
                        m = dict(ctx.measurements[-1], scenario="s7")
                        ctx.measurements.append(m)
            if ctx.want("s3"):
                with ctx.attempt("s3", LOCAL):
                    sleeps(ctx, LOCAL, lex, p.get("n3", 200))
            if ctx.want("s4"):
                with ctx.attempt("s4", LOCAL):
                    first_result(ctx, LOCAL, lex, p.get("n4", 30))
            if ctx.want("s8"):
                with ctx.attempt("s8", LOCAL):
                    skewed(ctx, LOCAL, lex, p.get("inner", 2))
            if ctx.want("s9"):
                with ctx.attempt("s9", LOCAL):
                    arrays(ctx, LOCAL, lex, p.get("inner", 2))
        finally:
            lex.shutdown(wait=False, cancel_futures=True)
    if ctx.want("s5"):
        with ctx.attempt("s5", LOCAL):
            memory(ctx, LOCAL, "local", p.get("n5", 100000), "", key_file)


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
