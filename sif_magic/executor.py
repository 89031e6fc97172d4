"""``Executor``: the Python API behind ``%%sifmap`` (a concurrent.futures.Executor).

It pickles the function and chunks the inputs, makes the Job and hands both to
its backend, using only the ``Backend`` interface (``backends/base.py``).

Threads: the kernel thread (or whichever thread the user calls it from). It
owns ``jobs`` and its backend; the Jobs it returns are written by the backend's
threads from then on (see ``job``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import _serialize, cache
from ._origins import code_origins
from ._ship import Shipment, plan
from .backends import Backend, JobTask, make_backend
from .config import SifConfig, snapshot
from .display import panel
from .errors import ConfigError
from .job import Job
from .pipeline import Feeder
from .runner import spill
from .runner.resources import request
from .runner.scheduler import auto_chunksize


def _apply(fn: Callable, args_kwargs: tuple) -> Any:
    args, kwargs = args_kwargs
    return fn(*args, **kwargs)


def _checked(resources: dict[str, int] | None) -> dict[str, int] | None:
    try:
        return request(resources)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _pack(
    fn: Callable,
    items: Any,
    size: int,
    cfg: SifConfig,
    limit: int,
    spill_dir: str,
    upstream: Job | None = None,
    arrays_over: int = 0,
) -> tuple[bytes, list[_serialize.PreparedChunk], Shipment]:
    """The function blob (with the user's modules it needs), the chunks of inputs
    (one over ``limit`` spills to ``spill_dir``, and so do those whose arrays take
    ``arrays_over`` bytes or more) and what was shipped. Modules only
    the inputs need (their classes) join after the chunks are made; the chunks are
    made again if the blob grew past their room. A pipeline's inputs are the
    ``upstream`` job's results: the modules that job shipped travel again."""
    used: set[str] = set()
    func, _ = _serialize.dumps_function(fn, used)
    shipped_before = getattr(upstream, "shipment", None)
    if shipped_before is not None:
        used |= {p.name for p in shipped_before.parts}
    shipment = plan(used, cfg.ship, cfg.ship_max_mb)
    blob = shipment.wrap(func)
    for_inputs = set(used)
    chunks = _serialize.make_chunks(
        items, size, limit, len(blob), for_inputs, spill_dir, arrays_over
    )
    if for_inputs - used:
        shipment = plan(for_inputs, cfg.ship, cfg.ship_max_mb)
        grown = shipment.wrap(func)
        if len(grown) > len(blob):
            spill.remove(spill_dir)
            chunks = _serialize.make_chunks(
                items, size, limit, len(grown), None, spill_dir, arrays_over
            )
        blob = grown
    return blob, chunks, shipment


def _spilling(
    backend: Backend, cfg: SifConfig, job_id: str, env: dict[str, str]
) -> tuple[int, str, int]:
    """(message limit, the job's spill directory, the bytes of arrays from which a
    chunk's inputs or results go through it: 0 unless every worker sees it) for a job
    on ``backend``; its calls' ``env`` tells the workers where and past what size
    results spill."""
    if not backend.bounded:
        return 2**62, "", 0
    limit = int(cfg.max_message_mb * _serialize.MB)
    if backend.max_message_bytes():  # never over what the broker takes
        limit = min(limit, backend.max_message_bytes())
    root = os.path.abspath(os.path.expanduser(cfg.spill_dir or spill.default_dir()))
    spill.sweep(root, cfg.result_ttl)  # the directories of jobs long gone
    spill_dir = os.path.join(root, job_id)
    root_id = spill.root_id(root)  # a worker that has it sees our files (or their loss)
    env.update(
        {spill.ENV_DIR: spill_dir, spill.ENV_OVER: str(limit - 2**20), spill.ENV_ROOT_ID: root_id}
    )
    arrays_over = int(cfg.spill_arrays_mb * _serialize.MB)
    if arrays_over > 0 and backend.sees_spill([root, root_id]):
        env[spill.ENV_ARRAYS] = str(arrays_over)
    else:
        arrays_over = 0
    return limit, spill_dir, arrays_over


class Executor(concurrent.futures.Executor):
    """Run functions on sif_magic workers.

    ::

        with Executor() as ex:                      # the local backend
            job = ex.map_job(f, range(100))
            print(job.results())

        ex = Executor(backend="rabbitmq", amqp_url="amqp://u:pw@broker/vh", runtime="ml")

        with Executor(resources={"gpus": 1}) as ex:  # every call: a GPU of its own
            fut = ex.submit(train, config)

    Options left out come from the configuration (``%sif_config``,
    ``ipython_config.py``, environment variables). ``resources``: what each call
    of this executor's jobs asks for unless a job says otherwise (``map_job``).
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        resources: dict[str, int] | None = None,
        **options: Any,
    ) -> None:
        self.config: SifConfig = snapshot(backend=backend, **options)
        self.resources = _checked(resources)
        self._backend: Backend | None = None
        self._shutdown = False
        self.jobs: dict[str, Job] = {}

    @property
    def backend(self) -> Backend:
        if self._shutdown:
            raise RuntimeError("this Executor has been shut down")
        if self._backend is None:
            self._backend = make_backend(self.config)
        return self._backend

    # -- the API ---------------------------------------------------------------
    def map_job(
        self,
        fn: Callable,
        items: Iterable[Any] | Job,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        env: dict[str, str] | None = None,
        star: bool = False,
        errors: str | None = None,
        name: str | None = None,
        resume: bool = False,
        resources: dict[str, int] | None = None,
    ) -> Job:
        """Start ``fn(item)`` (or ``fn(*item)`` with ``star``) for every item; return the Job.

        With ``resume``, calls whose function and input succeeded before take their
        kept result (``cache_dir``) and only the others run; results are kept as
        they come. ``items`` may be another Job: ``fn`` then maps over its results
        as they come (a pipeline, see ``pipeline``).

        ``resources``: what each call needs, ``{"gpus": 2, "cpus": 8}``: it runs in a
        process that holds that many GPUs of its own (``CUDA_VISIBLE_DEVICES``) and
        has its thread variables (``OMP_NUM_THREADS``, ...) set to that many CPUs; a
        worker runs as many at once as its GPUs and CPUs allow. A request no worker
        can meet raises ResourcesError at once. Default: the executor's."""
        if not callable(fn):
            raise TypeError(f"map_job needs a function, got {type(fn).__name__}")
        errors = errors or self.config.errors
        if errors not in ("raise", "collect"):
            raise ConfigError("errors must be 'raise' or 'collect'")
        upstream = items if isinstance(items, Job) else None
        if upstream is not None and resume:
            raise ConfigError(
                "resume applies to inputs given as values, not to a pipeline over a job: "
                "run the upstream job with resume=True instead"
            )
        values: Sequence[Any] = ()
        if upstream is None:
            values = items if isinstance(items, list | tuple | range) else list(items)  # type: ignore[arg-type]
        cfg = self.config
        backend = self.backend
        need = self.resources if resources is None else _checked(resources)
        job_id = backend.new_job_id()
        env = {str(k): str(v) for k, v in (env or {}).items()}
        recorder, cached, todo, run = None, [], values, None
        if resume:  # before the job's own variables join env (they are no part of the key)
            store = cache.store(cfg.cache_dir, cfg.cache_max_mb)
            recorder, cached, run = cache.prepare(store, fn, values, star, env)
            todo = [values[i] for i in run]
        n = upstream.n if upstream is not None else len(values)
        size = max(1, int(chunksize or cfg.chunksize or auto_chunksize(n, backend.slots())))
        limit, spill_dir, arrays_over = _spilling(backend, cfg, job_id, env)
        try:
            func, chunks, shipment = _pack(
                fn, todo, size, cfg, limit, spill_dir, upstream, arrays_over
            )
        except BaseException:
            spill.remove(spill_dir)
            raise
        if run is not None:
            for c in chunks:
                c.calls = [run[k] for k in c.calls]
        func_hash = hashlib.sha256(func).hexdigest()
        t = cfg.timeout if timeout is None else timeout
        task = JobTask(
            func=func,
            func_hash=func_hash,
            chunks=chunks,
            star=star,
            timeout=float(t) if t else None,
            retries=int(cfg.retries if retries is None else retries),
            max_lost=cfg.max_lost,
            env=env,
            resources=need,
        )
        job = Job(
            job_id,
            n,
            name=name or getattr(fn, "__name__", "call"),
            errors=errors,
            runtime=cfg.runtime,
            backend=backend,
            origins=code_origins(fn),
            shipment=shipment,
            spill_dir=spill_dir,
            reused=n - len(todo) if run is not None else 0,
        )
        if cached:
            job.apply_segments(cached)
        if recorder is not None:
            job.add_fold_listener(recorder.record)
        if upstream is not None or todo or not n:  # not when every call came from the cache
            backend.start_job(job, task)
        if upstream is not None:
            Feeder(backend, job, upstream, task, size, limit, spill_dir, arrays_over).start()
        self.jobs[job.job_id] = job  # only a job that started (shutdown waits for these)
        panel.remember(job)  # listed in the JupyterLab side panel
        return job

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        job = self.map_job(
            functools.partial(_apply, fn), [(args, kwargs)], chunksize=1, errors="collect"
        )
        return job.futures[0]

    def map(
        self,
        fn: Callable,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 0,
    ) -> Iterator[Any]:
        star = len(iterables) > 1
        items = list(zip(*iterables)) if star else list(iterables[0])
        job = self.map_job(fn, items, chunksize=chunksize or None, star=star, errors="collect")
        futures = job.futures

        def results() -> Iterator[Any]:
            try:
                for f in futures:
                    yield f.result(timeout)
            finally:
                if not job.done():
                    job.cancel()

        return results()

    def attach(self, job_id: str) -> Job:
        """Follow a job started elsewhere (another kernel, before a restart)."""
        job = self.backend.attach(job_id)
        self.jobs[job.job_id] = job
        panel.remember(job)
        return job

    def workers(self) -> list[dict[str, Any]]:
        """The backend's workers, and SLURM jobs submitted from here not joined yet."""
        from .launch.slurm_rows import workers_table

        return workers_table(self.backend)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._shutdown:
            return
        for job in list(self.jobs.values()):
            if cancel_futures and not job.done():
                job.cancel()
            elif wait:
                job.wait()
        if self._backend is not None:
            self._backend.close()
        self._shutdown = True

    def __repr__(self) -> str:
        where = self._backend.describe() if self._backend else self.config.backend
        return f"<sif_magic.Executor {where}, runtime {self.config.runtime!r}>"
