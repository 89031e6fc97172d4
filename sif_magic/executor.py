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
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from . import _serialize, cache
from ._origins import code_origins
from .backends import Backend, JobTask, make_backend
from .config import SifConfig, snapshot
from .errors import ConfigError
from .job import Job
from .pipeline import Feeder
from .runner.scheduler import auto_chunksize


def _apply(fn: Callable, args_kwargs: tuple) -> Any:
    args, kwargs = args_kwargs
    return fn(*args, **kwargs)


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


class Executor(concurrent.futures.Executor):
    """Run functions on sif_magic workers.

    ::

        with Executor() as ex:                      # the local backend
            job = ex.map_job(f, range(100))
            print(job.results())

        ex = Executor(backend="rabbitmq", amqp_url="amqp://u:pw@broker/vh", runtime="ml")

    Options left out come from the configuration (``%sif_config``,
    ``ipython_config.py``, environment variables).
    """

    def __init__(self, backend: str | None = None, **options: Any) -> None:
        self.config: SifConfig = snapshot(backend=backend, **options)
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
    ) -> Job:
        """Start ``fn(item)`` (or ``fn(*item)`` with ``star``) for every item; return the Job.

        With ``resume``, calls whose function and input succeeded before take their
        kept result (``cache_dir``) and only the others run; results are kept as
        they come. ``items`` may be another Job: ``fn`` then maps over its results
        as they come (a pipeline, see ``pipeline``)."""
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
        env = {str(k): str(v) for k, v in (env or {}).items()}
        func, func_hash = _serialize.dumps_function(fn)
        backend = self.backend
        recorder, cached, todo, run = None, [], values, None
        if resume:
            store = cache.store(cfg.cache_dir, cfg.cache_max_mb)
            recorder, cached, run = cache.prepare(store, fn, values, star, env)
            todo = [values[i] for i in run]
        n = upstream.n if upstream is not None else len(values)
        size = max(1, int(chunksize or cfg.chunksize or auto_chunksize(n, backend.slots())))
        max_bytes = int(cfg.max_message_mb * _serialize.MB)
        chunks = _serialize.make_chunks(todo, size, max_bytes, len(func))
        if run is not None:
            for c in chunks:
                c.calls = [run[k] for k in c.calls]
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
        )
        job = Job(
            new_job_id(),
            n,
            name=name or getattr(fn, "__name__", "call"),
            errors=errors,
            runtime=cfg.runtime,
            backend=backend,
            origins=code_origins(fn),
            reused=n - len(todo) if run is not None else 0,
        )
        if cached:
            job.apply_segments(cached)
        if recorder is not None:
            job.add_fold_listener(recorder.record)
        if upstream is not None or todo or not n:  # not when every call came from the cache
            backend.start_job(job, task)
        if upstream is not None:
            Feeder(backend, job, upstream, task, size, max_bytes).start()
        self.jobs[job.job_id] = job  # only a job that started (shutdown waits for these)
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
