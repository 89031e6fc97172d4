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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _serialize
from ._origins import code_origins
from .backends import Backend, JobTask, make_backend
from .config import SifConfig, snapshot
from .display import panel
from .errors import ConfigError
from .job import Job
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
        items: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        env: dict[str, str] | None = None,
        star: bool = False,
        errors: str | None = None,
        name: str | None = None,
    ) -> Job:
        """Start ``fn(item)`` (or ``fn(*item)`` with ``star``) for every item; return the Job."""
        if not callable(fn):
            raise TypeError(f"map_job needs a function, got {type(fn).__name__}")
        errors = errors or self.config.errors
        if errors not in ("raise", "collect"):
            raise ConfigError("errors must be 'raise' or 'collect'")
        items = items if isinstance(items, list | tuple | range) else list(items)
        cfg = self.config
        func, func_hash = _serialize.dumps_function(fn)
        backend = self.backend
        size = chunksize or cfg.chunksize or auto_chunksize(len(items), backend.slots())
        chunks = _serialize.make_chunks(
            items, max(1, int(size)), int(cfg.max_message_mb * _serialize.MB), len(func)
        )
        t = cfg.timeout if timeout is None else timeout
        task = JobTask(
            func=func,
            func_hash=func_hash,
            chunks=chunks,
            star=star,
            timeout=float(t) if t else None,
            retries=int(cfg.retries if retries is None else retries),
            max_lost=cfg.max_lost,
            env={str(k): str(v) for k, v in (env or {}).items()},
        )
        job = Job(
            new_job_id(),
            len(items),
            name=name or getattr(fn, "__name__", "call"),
            errors=errors,
            runtime=cfg.runtime,
            backend=backend,
            origins=code_origins(fn),
        )
        backend.start_job(job, task)
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
