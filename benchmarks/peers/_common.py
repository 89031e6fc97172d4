"""What every runner shares: the broker URL, started processes, RSS, the result file.

A runner is ``python -m benchmarks.peers.NAME --scenarios s1,s5 --out F --params JSON``.
``run_main(tool_runner)`` parses that, calls ``tool_runner(ctx)`` and writes
``{"measurements": [...], "errors": [...]}`` to ``F`` whatever happens. Every
process a runner starts goes through ``ctx.procs``, which stops it by pid at the
end (SIGTERM, then SIGKILL to it and to every descendant seen while it lived),
also on an exception or a SIGTERM from ``run.py``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("SIF_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PY = sys.executable


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rss_mb() -> float:
    """This process's resident set size (VmRSS) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def ship_by_value() -> None:
    """Send the benchmark functions by value, as a notebook's functions are."""
    import cloudpickle

    from . import _funcs

    cloudpickle.register_pickle_by_value(_funcs)


def descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - gone already, or no psutil
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_pids(main: list[int], extra: list[int], grace: float = 10.0) -> None:
    """SIGTERM ``main`` pids, wait up to ``grace`` s, then SIGKILL every pid still alive."""
    for pid in main:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in main):
        time.sleep(0.05)
    for pid in main + extra:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class Procs:
    """Processes this runner started; ``stop_all`` ends each by pid."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.adopted: list[int] = []  # pids started by a library on our behalf
        self._seen: set[int] = set()

    def start(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> Any:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or child_env(),
            cwd=str(ROOT),
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        self.procs.append(proc)
        return proc

    def adopt(self, pid: int | None) -> None:
        if pid:
            self.adopted.append(int(pid))

    def note_descendants(self) -> None:
        """Remember every process below this one now (stopped at the end if left over)."""
        self._seen.update(descendants(os.getpid()))

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        extra = descendants(proc.pid)
        stop_pids([proc.pid], extra, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def stop_all(self) -> None:
        self.note_descendants()
        main = [p.pid for p in self.procs if p.poll() is None] + self.adopted
        stop_pids(main, sorted(self._seen - set(main)), grace=10.0)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        self.procs.clear()
        self.adopted.clear()

    def log_tail(self, proc: Any, n: int = 3000) -> str:
        try:
            return Path(proc.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Context:
    scenarios: list[str]
    params: dict[str, Any]
    procs: Procs
    workdir: Path
    measurements: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def want(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def record(
        self,
        scenario: str,
        tool: str,
        metric: str,
        value: float,
        unit: str,
        *,
        higher_is_better: bool,
        **extra: Any,
    ) -> None:
        self.measurements.append(
            {
                "scenario": scenario,
                "tool": tool,
                "metric": metric,
                "value": float(value),
                "unit": unit,
                "higher_is_better": higher_is_better,
                "extra": extra,
            }
        )
        print(f"  {scenario} {tool}: {metric} {value:,.4g} {unit}", file=sys.stderr, flush=True)

    def throughput(
        self, scenario: str, tool: str, calls: int, seconds: float, **extra: Any
    ) -> None:
        """Record ``calls`` done in ``seconds`` as calls/s (the common measurement)."""
        self.record(
            scenario,
            tool,
            "throughput",
            calls / seconds,
            "calls/s",
            higher_is_better=True,
            calls=calls,
            seconds=seconds,
            **extra,
        )

    @contextlib.contextmanager
    def attempt(self, scenario: str, tool: str) -> Iterator[None]:
        """Record an exception as this scenario's error and go on with the next one."""
        try:
            yield
        except Exception as e:  # noqa: BLE001
            self.errors.append(
                {
                    "scenario": scenario,
                    "tool": tool,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
            print(f"  {scenario} {tool}: ERROR {type(e).__name__}: {e}", file=sys.stderr)


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_main(runner: Callable[[Context], None], argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", default="")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sif-bench-"))
    procs = Procs(workdir)
    ctx = Context(
        scenarios=[s for s in args.scenarios.split(",") if s],
        params=json.loads(args.params),
        procs=procs,
        workdir=workdir,
    )
    signal.signal(signal.SIGTERM, _sigterm)
    atexit.register(procs.stop_all)
    try:
        runner(ctx)
    except BaseException as e:  # noqa: BLE001 - written to the result file
        ctx.errors.append(
            {
                "scenario": "*",
                "tool": runner.__module__,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-4000:],
            }
        )
    finally:
        procs.stop_all()
        Path(args.out).write_text(
            json.dumps({"measurements": ctx.measurements, "errors": ctx.errors}, indent=1)
        )
        if not os.environ.get("SIF_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(step)


def queue_consumers(queue: str, url: str = BROKER_URL, **declare: Any) -> int:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, **declare).method.consumer_count
    finally:
        conn.close()


def consumers_now(queue: str, url: str = BROKER_URL) -> int:
    """Consumers of an existing queue (0 if it does not exist yet)."""
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:  # noqa: BLE001
        return 0
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    except Exception:  # noqa: BLE001 - not declared yet
        return 0
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def delete_queues(*queues: str, url: str = BROKER_URL, exchanges: tuple[str, ...] = ()) -> None:
    """Remove this run's queues (and exchanges) from the broker (best effort)."""
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except Exception:  # noqa: BLE001
        return
    try:
        for q in queues:
            try:
                ch = conn.channel()
                ch.queue_delete(q)
                ch.close()
            except Exception:  # noqa: BLE001
                pass
        for x in exchanges:
            try:
                ch = conn.channel()
                ch.exchange_delete(x)
                ch.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        with contextlib.suppress(Exception):
            conn.close()
