"""IPython magics: thin argument parsing and display over ``Executor``.

They use the public API of Executor and Job, the backend registry's names and
``launch.slurm_rows`` for the workers table; what shows a job is ``display``.

Threads: the kernel thread only. Owns ``_executors`` (one per backend, runtime,
broker and key).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _cellparse, display
from .backends import names as backend_names
from .config import get_config
from .errors import ConfigError, SifMagicError
from .executor import Executor


def _map_options(f: Any) -> Any:
    for arg in reversed(
        [
            argument(
                "-o",
                "--out",
                metavar="NAME",
                help="Store the results list (or the job with --no-wait) in NAME.",
            ),
            argument(
                "-f",
                "--func",
                metavar="NAME",
                help="Function of the cell to map (default: the last one defined).",
            ),
            argument("--backend", choices=backend_names(), help="Where the calls run."),
            argument("--runtime", help="Runtime (worker image) name."),
            argument("--chunksize", type=int, help="Calls per message (default: automatic)."),
            argument("--timeout", type=float, help="Per-call time limit in seconds."),
            argument("--retries", type=int, help="Re-runs of a call that failed."),
            argument(
                "--errors",
                choices=["raise", "collect"],
                help="Raise the first failure, or keep exceptions in the results.",
            ),
            argument(
                "--no-wait", action="store_true", help="Return at once; NAME holds the live job."
            ),
            argument(
                "--env",
                action="append",
                default=[],
                metavar="K=V",
                help="Environment variable for the calls (repeatable).",
            ),
            argument("--star", action="store_true", help="Call f(*item) instead of f(item)."),
            argument(
                "--gpus-per-call",
                type=int,
                metavar="N",
                help="GPUs of its own each call gets (CUDA_VISIBLE_DEVICES).",
            ),
            argument(
                "--cpus-per-call",
                type=int,
                metavar="N",
                help="CPUs each call gets (OMP_NUM_THREADS and the like).",
            ),
            argument(
                "--resume",
                action="store_true",
                help="Reuse kept results of calls that succeeded before (same function and "
                "input); run only the others, and keep their results (cache_dir).",
            ),
        ]
    ):
        f = arg(f)
    return f


@magics_class
class SifMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._executors: dict[tuple, Executor] = {}

    # -- helpers ---------------------------------------------------------------
    def executor(self, backend: str | None = None, runtime: str | None = None) -> Executor:
        cfg = get_config()
        key = (
            backend or cfg.backend,
            runtime or cfg.runtime,
            cfg.amqp_url,
            cfg.processes,
            cfg.gpus,
            cfg.cpus,
            cfg.key_file,
        )
        ex = self._executors.get(key)
        if ex is None:
            ex = self._executors[key] = Executor(backend=backend, runtime=runtime)
        return ex

    def _parse(self, func: Any, spec_line: str) -> tuple[str, Any]:
        spec, opts = _cellparse.split_options(spec_line)
        try:
            args = parse_argstring(func, opts)
        except UsageError:
            raise
        except SystemExit:  # argparse's way of saying no
            raise UsageError(f"bad options: {opts!r}") from None
        return spec, args

    def _eval(self, expr: str, what: str) -> Any:
        if not expr:
            raise UsageError(f"%%sifmap needs {what}")
        try:
            return self.shell.ev(expr)
        except Exception as e:
            raise UsageError(
                f"could not evaluate {what} {expr!r}: {type(e).__name__}: {e}"
            ) from None

    def _run(self, fn: Any, items: Any, args: Any, name: str) -> Any:
        env = {}
        for pair in args.env:
            if "=" not in pair:
                raise UsageError(f"--env takes K=V, got {pair!r}")
            k, v = pair.split("=", 1)
            env[k] = v
        try:
            items = list(items)
        except TypeError:
            raise UsageError(f"the inputs are not iterable ({type(items).__name__})") from None
        resources = {}
        if args.gpus_per_call is not None:
            resources["gpus"] = args.gpus_per_call
        if args.cpus_per_call is not None:
            resources["cpus"] = args.cpus_per_call
        try:
            ex = self.executor(args.backend, args.runtime)
            job = ex.map_job(
                fn,
                items,
                chunksize=args.chunksize,
                timeout=args.timeout,
                retries=args.retries,
                env=env,
                star=args.star,
                errors=args.errors,
                name=name,
                resources=resources or None,
                resume=args.resume,
            )
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self.shell.user_ns["_sif_job"] = job  # the last job, whatever happens next
        if args.no_wait:
            if args.out:
                self.shell.user_ns[args.out] = job
                from IPython.display import display as show

                show(job)  # the live view, updating while other cells run
                return None
            return job
        shown = None
        try:
            shown = display.show_job(job, get_config().progress_delay)
            if shown is None and not display.widgets_enabled() and not display.in_kernel():
                display.text_progress(job, sys.stderr)
            job.wait()
        except KeyboardInterrupt:
            job.cancel()
            job.wait(5)
            display.finish_job(job, shown)
            print(f"Interrupted: {job.summary()}", file=sys.stderr)
            raise
        display.finish_job(job, shown)
        failed = job.failed
        if failed and job.errors != "raise" and not display.in_kernel():
            for hint in job.hints():  # a kernel's view shows them; the raised error has them
                print(hint, file=sys.stderr)
        if job.errors == "raise" and failed:
            if args.out:  # what succeeded stays reachable, failures in place
                self.shell.user_ns[args.out] = job.results(errors="collect")
            raise job.error(failed[0])  # type: ignore[misc]
        values = job.results()
        if args.out:
            self.shell.user_ns[args.out] = values
            return None
        return values

    # -- magics ------------------------------------------------------------------
    @magic_arguments()
    @_map_options
    @cell_magic
    def sifmap(self, line: str, cell: str) -> Any:
        """Map a function over inputs on sif_magic workers.

        Function form: ``%%sifmap xs -o ys`` — the cell defines functions; the last
        one (or ``-f NAME``) is called on every item of ``xs``.

        Body form: ``%%sifmap x in xs -o ys`` — the cell body runs once per item with
        ``x`` bound; its last expression is that call's result.
        """
        spec, args = self._parse(SifMagics.sifmap, line)
        body = _cellparse.body_form(spec)
        filename = self.shell.compile.cache(cell)
        if body is not None:
            target, expr = body
            items = self._eval(expr, "inputs")
            try:
                fn = _cellparse.make_body_function(target, cell, filename, self.shell.user_ns)
            except SyntaxError as e:
                raise UsageError(f"the cell body is not valid Python: {e}") from None
            return self._run(fn, items, args, "cell body")
        items = self._eval(spec, "inputs (an iterable expression)")
        name = args.func or _cellparse.last_function(cell)
        if name is None:
            raise UsageError(
                "the cell defines no function: define one (def f(x): ...), "
                "or use the body form: %%sifmap x in xs"
            )
        exec(compile(cell, filename, "exec"), self.shell.user_ns)
        fn = self.shell.user_ns.get(name)
        if not callable(fn):
            raise UsageError(f"{name!r} is not a function defined by the cell")
        return self._run(fn, items, args, name)

    @magic_arguments()
    @_map_options
    @line_magic("sifmap")
    def sifmap_line(self, line: str) -> Any:
        """``%sifmap func xs -o ys``: map an existing function over ``xs``."""
        spec, args = self._parse(SifMagics.sifmap_line, line)
        parts = spec.split(None, 1)
        if len(parts) != 2:
            raise UsageError("usage: %sifmap FUNC ITERABLE [-o NAME] [options]")
        fn = self._eval(parts[0], "a function")
        if not callable(fn):
            raise UsageError(f"{parts[0]!r} is not callable")
        items = self._eval(parts[1], "inputs")
        return self._run(fn, items, args, getattr(fn, "__name__", parts[0]))

    @line_magic
    def sif_config(self, line: str) -> Any:
        """``%sif_config`` shows the settings (secrets masked); ``%sif_config k=v ...`` sets them."""
        cfg = get_config()
        line = line.strip()
        if line:
            pairs = {}
            for token in shlex.split(line):
                if "=" not in token:
                    raise UsageError(f"expected key=value, got {token!r}")
                k, v = token.split("=", 1)
                pairs[k.strip()] = v.strip()
            try:
                cfg.set_from_strings(pairs)
            except SifMagicError as e:
                raise UsageError(str(e)) from None
            self._executors.clear()
            return None
        width = max(len(k) for k in cfg.settings())
        for k, v in cfg.settings().items():
            print(f"{k:<{width}}  {v}")
        return None

    @line_magic
    def sif_workers(self, line: str) -> Any:
        """Workers of the current backend.

        ``%sif_workers`` lists the live ones (and SLURM jobs submitted from here that
        have not joined yet); ``%sif_workers slurm --nodes N [--image X.sif] ...``
        submits workers through sbatch (the options of ``sif-magic slurm submit``);
        ``%sif_workers start [--image X.sif] [--instances K] [--container none] ...``
        starts workers on this machine; ``%sif_workers stop`` stops those.
        """
        from ._workers_magic import workers_magic

        return workers_magic(line, self.executor)

    @magic_arguments()
    @argument("job_id", help="id of the job (shown under its cell, or job.job_id)")
    @argument("-o", "--out", metavar="NAME", help="store the job in NAME (default: _sif_job)")
    @argument("--backend", choices=backend_names(), help="backend the job ran on")
    @argument("--runtime", help="runtime the job ran on")
    @line_magic
    def sif_attach(self, line: str) -> Any:
        """``%sif_attach JOB_ID [-o NAME]``: follow a job started before a kernel restart
        or by another notebook: finished calls' results come back, the rest goes on live."""
        args = parse_argstring(self.sif_attach, line)
        try:
            job = self.executor(args.backend, args.runtime).attach(args.job_id)
        except SifMagicError as e:
            raise UsageError(str(e)) from None
        self.shell.user_ns[args.out or "_sif_job"] = job
        return job

    @line_magic
    def sif_cache(self, line: str) -> Any:
        """``%sif_cache`` shows the results kept for ``--resume`` (cache_dir);
        ``%sif_cache clear`` removes them all."""
        from ._cache_magic import cache_magic

        return cache_magic(line)

    @line_magic
    def sif_logs(self, line: str) -> Any:
        """``%sif_logs [JOB] [CALL]``: print a job's logs (the last job by default)."""
        parts = line.split()
        job = None
        call = None
        jobs = {j.job_id: j for ex in self._executors.values() for j in ex.jobs.values()}
        if parts and parts[0] in jobs:
            job = jobs[parts.pop(0)]
        elif "_sif_job" in self.shell.user_ns:
            job = self.shell.user_ns["_sif_job"]
        if job is None:
            raise UsageError("no job: run %%sifmap first, or give a job id")
        if parts:
            try:
                call = int(parts[0])
            except ValueError:
                raise UsageError(f"call must be a number, got {parts[0]!r}") from None
        calls = [call] if call is not None else sorted(job.logs)
        for i in calls:
            entries, dropped = job.call_logs(i)
            if call is None and not entries:
                continue
            print(f"--- call {i} ({job.state(i)}) ---")
            if dropped:
                print(f"[{dropped} earlier bytes dropped]")
            for stream, text in entries:
                (sys.stderr if stream == 2 else sys.stdout).write(text)
            err = job.error(i)
            if err is not None and hasattr(err, "remote_traceback"):
                print(err.remote_traceback(), file=sys.stderr)
        return None


def load(ipython: Any) -> None:
    from .display import panel

    ipython.register_magics(SifMagics)
    panel.install(getattr(ipython, "kernel", None))  # the side panel's requests


def unload(ipython: Any) -> None:
    for ex in ipython.magics_manager.registry.get(
        "SifMagics", SifMagics(ipython)
    )._executors.values():
        ex.shutdown(wait=False, cancel_futures=True)
