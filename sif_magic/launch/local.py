"""Workers on this machine: start, list, stop.

With a container (Singularity/Apptainer), each worker is an instance whose worker
runs in the foreground; with ``container="none"`` it is ``python -m sif_magic
worker``. The command lines come from ``sif_magic.containers``. Either way a
record in ``~/.sif_magic/workers.json`` holds the pid, and ``stop`` signals that
pid (never a process name). Called from one thread at a time (the CLI's, or the
kernel's through ``%sif_workers``); the records file is shared between processes
under a lock (``StateFile``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .. import containers
from .._keys import default_key_file, load_key, read_secret_file
from .._urls import check_urls
from ..errors import ConfigError
from ..protocol.names import QUEUE_TYPES
from ..validate import check_path, check_runtime
from ._state import StateFile, alive, home, start_time, terminate, write_secret

STATE = "workers.json"
_WORKER_VARS = {
    "SIF_MAGIC_AMQP_URL",
    "SIF_MAGIC_AMQP_URL_FILE",
    "SIF_MAGIC_KEY_FILE",
    "SIF_MAGIC_RUNTIME",
    "SIF_MAGIC_PROCESSES",
    "SIF_MAGIC_WORKER_ID",
    "SIF_MAGIC_CONTAINER",
    "SIF_MAGIC_QUEUE_TYPE",
    "SIF_MAGIC_IDLE_TIMEOUT",
    "AMQP_URL",
}


@dataclass
class WorkerRecord:
    id: str
    host: str
    pid: int
    pid_start: str
    runtime: str
    container: str  # the runtime that runs it, as ``--container`` names it (never auto)
    tool: str = ""  # path of the container tool
    image: str = ""
    instance: str = ""
    processes: int = 0
    log: str = ""
    env_file: str = ""
    started: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkerRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def is_here(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        return self.is_here() and alive(self.pid, self.pid_start)


def default_url_file() -> Path:
    """``~/.sif_magic/amqp_url``: where the broker URL is looked for when none is given."""
    return home() / "amqp_url"


def broker_env(amqp_url: str = "", amqp_url_file: str = "") -> dict[str, str]:
    """How a worker finds the broker: a 600 file (preferred) or the URL, as env vars."""
    if not amqp_url and not amqp_url_file:
        amqp_url_file = os.environ.get("SIF_MAGIC_AMQP_URL_FILE", "")
        amqp_url = "" if amqp_url_file else os.environ.get("SIF_MAGIC_AMQP_URL", "")
    if not amqp_url and not amqp_url_file and default_url_file().exists():
        amqp_url_file = str(default_url_file())
    if amqp_url_file:
        path = str(Path(amqp_url_file).expanduser().resolve())
        url = read_secret_file(path, "broker URL")  # checks mode 600 and non-empty
        _check_url(url)
        return {"SIF_MAGIC_AMQP_URL_FILE": path}
    if amqp_url:
        _check_url(amqp_url)
        return {"SIF_MAGIC_AMQP_URL": amqp_url}
    raise ConfigError(
        "no broker URL for the workers: write it to a file only you can read "
        f"(`umask 077; echo amqp://user:pw@host:5672/vhost > {default_url_file()}`), "
        "or pass --amqp-url-file FILE, or set SIF_MAGIC_AMQP_URL_FILE"
    )


def _check_url(url: str) -> None:
    check_urls(url, "the broker URL")  # one, or the nodes of a cluster (comma-separated)


def _records() -> StateFile:
    return StateFile(STATE)


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_workers(
    *,
    runtime: str = "",
    image: str = "",
    instances: int = 1,
    processes: int = 0,
    container: str = "auto",
    binds: Sequence[str] = (),
    nv: bool = False,
    fakeroot: bool = False,
    amqp_url: str = "",
    amqp_url_file: str = "",
    key_file: str = "",
    python: str = sys.executable,
    startup_check: float = 1.0,
    queue_type: str = "",
    idle_timeout: float = 0.0,
) -> list[WorkerRecord]:
    """Start ``instances`` workers here and record them; returns their records.

    Raises ConfigError (with the log's tail) if a worker exits within ``startup_check`` s.
    """
    if instances < 1:
        raise ConfigError("--instances must be at least 1")
    if not idle_timeout >= 0:
        raise ConfigError("--idle-timeout must be seconds >= 0 (0: never)")
    runner = containers.get(container)
    runner.check_image(image, here=True)
    runtime = (
        runtime or os.environ.get("SIF_MAGIC_RUNTIME") or (Path(image).name if image else "default")
    )
    check_runtime(runtime)
    if not runner.uses_env_file:
        check_path(python, "--python")
    containers.check_binds(binds)
    broker = broker_env(amqp_url, amqp_url_file)
    queue_type = queue_type or os.environ.get("SIF_MAGIC_QUEUE_TYPE", "")
    if queue_type and queue_type not in QUEUE_TYPES:
        raise ConfigError(f"queue type {queue_type!r}: use one of {', '.join(QUEUE_TYPES)}")
    key_path = Path(key_file).expanduser().resolve() if key_file else default_key_file()
    # SIF_MAGIC_KEY, else the key file (created now, so notebook and workers share it).
    key = load_key(key_file=key_file).decode()
    tool = runner.find()
    logs = home() / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    host = socket.gethostname()
    started: list[WorkerRecord] = []
    for _ in range(instances):
        token = secrets.token_hex(3)
        wid = f"{host.split('.')[0]}-{token}"
        env = {"SIF_MAGIC_RUNTIME": runtime, "SIF_MAGIC_WORKER_ID": wid}
        if queue_type:
            env["SIF_MAGIC_QUEUE_TYPE"] = queue_type
        if processes:
            env["SIF_MAGIC_PROCESSES"] = str(processes)
        if idle_timeout:
            env["SIF_MAGIC_IDLE_TIMEOUT"] = f"{idle_timeout:g}"
        log = str(logs / f"{wid}.log")
        rec = WorkerRecord(wid, host, 0, "", runtime, Path(tool).name if tool else runner.name)
        rec.tool, rec.image, rec.processes, rec.log = tool, image, processes, log
        rec.instance = f"sifw-{token}" if tool else ""
        env_file = home() / "run" / f"{rec.instance or wid}.env" if runner.uses_env_file else None
        run = containers.WorkerRun(
            tool, image, rec.instance, tuple(binds), nv, fakeroot, str(env_file or ""), python
        )
        env["SIF_MAGIC_CONTAINER"] = runner.describe(run)
        if env_file:
            # The env file (600) carries the secrets themselves: no path has to be bound.
            if "SIF_MAGIC_AMQP_URL_FILE" in broker:
                url = read_secret_file(broker["SIF_MAGIC_AMQP_URL_FILE"], "broker URL")
                env["SIF_MAGIC_AMQP_URL"] = url
            else:
                env.update(broker)
            env["SIF_MAGIC_KEY"] = key
            rec.env_file = str(write_secret(env_file, runner.env_file_text(env)))
            start = runner.start_argv(run)
            if start:
                res = subprocess.run(start, capture_output=True, text=True, check=False)
                if res.returncode != 0:
                    os.unlink(env_file)
                    raise ConfigError(
                        f"`{' '.join(start)}` failed ({res.returncode}): {res.stderr.strip()}"
                    )
            # A container may pass the host's environment in: none of ours may contradict the file.
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIF_MAGIC_")}
        else:
            env.update(broker)
            if key_file or not os.environ.get("SIF_MAGIC_KEY"):
                env["SIF_MAGIC_KEY_FILE"] = str(key_path)
            # Only the settings chosen here: an inherited SIF_MAGIC_AMQP_URL would win over
            # the chosen file in the worker, an inherited SIF_MAGIC_KEY_FILE over SIF_MAGIC_KEY.
            child_env = {k: v for k, v in os.environ.items() if k not in _WORKER_VARS}
            child_env.update(env)
        argv = runner.worker_argv(run)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        rec.pid, rec.pid_start, rec.started = proc.pid, start_time(proc.pid), time.time()
        with _records().update() as records:
            records.append(asdict(rec))
        started.append(rec)
    if startup_check > 0:
        time.sleep(startup_check)
        dead = [r for r in started if not r.is_alive()]
        if dead:
            stop_workers([r.id for r in dead], timeout=1.0)
            raise ConfigError(
                f"{len(dead)} of {len(started)} workers exited at once; the log of "
                f"{dead[0].id} ({dead[0].log}) ends with:\n{_tail(dead[0].log)}"
            )
    return started


def list_workers() -> list[tuple[WorkerRecord, str]]:
    """Every recorded worker with its state: running, exited or ``on HOST``. The env file
    (the secrets) of a worker that exited by itself goes now; its record stays, to see."""
    out = []
    for d in _records().read():
        rec = WorkerRecord.from_dict(d)
        state = ("running" if rec.is_alive() else "exited") if rec.is_here() else f"on {rec.host}"
        if state == "exited":
            _remove_env_file(rec)
        out.append((rec, state))
    return out


def _remove_env_file(rec: WorkerRecord) -> None:
    if rec.env_file:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rec.env_file)


def stop_workers(ids: Sequence[str] | None = None, timeout: float = 10.0) -> list[tuple[str, str]]:
    """Stop the recorded workers ``ids`` (all of this host's when None), by pid.

    SIGTERM first (a worker requeues its unfinished tasks), SIGKILL after
    ``timeout``; then ``instance stop`` for container workers. Returns
    ``(id, outcome)`` pairs; unknown ids raise ConfigError before anything stops.
    """
    known = {d["id"]: WorkerRecord.from_dict(d) for d in _records().read()}
    if ids is None:
        chosen = [r for r in known.values() if r.is_here()]
    else:
        missing = [i for i in ids if i not in known]
        if missing:
            raise ConfigError(
                f"no recorded worker {', '.join(missing)}: see `sif-magic workers list`"
            )
        chosen = [known[i] for i in ids]
    results = []
    for rec in chosen:
        if not rec.is_here():
            results.append((rec.id, f"not stopped: it runs on {rec.host}, stop it there"))
            continue
        outcome = terminate(rec.pid, rec.pid_start, timeout)
        runner = containers.RUNTIMES.get(rec.container)
        run = containers.WorkerRun(rec.tool, rec.image, rec.instance)
        stop = runner.stop_argv(run) if runner and rec.instance else None
        if runner and stop:
            res = subprocess.run(stop, capture_output=True, text=True, check=False)
            if res.returncode != 0 and runner.gone_text not in res.stderr.lower():
                outcome += f"; instance stop failed: {res.stderr.strip()}"
        _remove_env_file(rec)
        results.append((rec.id, outcome))
    done = {i for i, o in results if not o.startswith("not stopped")}
    with _records().update() as records:
        records[:] = [d for d in records if d["id"] not in done]
    return results
