"""A real one-node SLURM cluster for tests (Debian's slurm-wlm and munge).

``SlurmCluster`` runs munged, slurmctld and slurmd as this user on free 127.0.0.1
ports, with every config, state, spool, log and pid file in a temporary
directory; nothing under /etc is read or written::

    with SlurmCluster() as cluster:        # node idle in about a second
        cluster.run("sbatch", "--wrap", "hostname")
        cluster.env                        # os.environ + SLURM_CONF, for subprocesses

As sites do, a ``Prolog`` (``PrologFlags=Alloc``) makes ``<dir>/tmp/job_<id>``, a
``TaskProlog`` exports it as ``SLURM_TMPDIR`` and an ``Epilog`` removes it (stock
SLURM sets no ``SLURM_TMPDIR``). ``close()`` cancels the jobs left, then stops the
daemons by the pids they were started with (never by name).

Pytest fixtures: ``slurm_cluster`` (session scope) and ``slurm`` (function scope:
the same cluster, with ``SLURM_CONF`` set in ``os.environ`` for the test, so code
that calls ``sbatch`` finds it). Without slurm-wlm/munge the fixtures skip with
the command that installs them; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["SlurmCluster", "SlurmError", "missing_tools", "slurm", "slurm_cluster"]

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo")
INSTALL = "apt-get install -y slurm-wlm munge"


class SlurmError(RuntimeError):
    """The test cluster failed to start, or a command against it failed."""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if _which(t) is None]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class SlurmCluster:
    """munged + slurmctld + slurmd for one node named after this host, all in ``dir``."""

    def __init__(self, directory: str | Path | None = None, gpus: int = 0) -> None:
        """``gpus``: fake GPUs of the node (``Gres=gpu:N``; gres.conf names links to
        /dev/null under ``dir/dev``: SLURM hands them out and sets the GPU variables,
        but nothing behind them is a GPU)."""
        missing = missing_tools()
        if missing:
            raise SlurmError(f"not installed: {', '.join(missing)}; run `{INSTALL}`")
        self.dir = Path(directory or tempfile.mkdtemp(prefix="sif-slurm-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # jobs of other users run the TaskProlog and use tmp/
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.gpus = gpus
        self.conf = self.dir / "slurm.conf"
        self.tmp_base = self.dir / "tmp"  # where the Prolog makes job_<id> (SLURM_TMPDIR)
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self._pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SBATCH_EXPORT", "SLURM_EXPORT_ENV"):
            self.env.pop(var, None)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        t0 = time.monotonic()
        self._write_files()
        self._start_munge()
        log = self.dir / "log"
        self._spawn(
            "slurmctld",
            [_which("slurmctld"), "-D", "-c", "-f", str(self.conf)],
            log / "slurmctld.out",
        )
        self._spawn(
            "slurmd",
            [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host],
            log / "slurmd.out",
        )
        deadline = t0 + timeout
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    self.close()
                    raise SlurmError(f"{name} exited {proc.returncode}{self.log_tail(name)}")
            res = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = res.stdout.strip()
            if state.startswith("idle"):
                break
            if state.startswith(("down", "drain")):
                self.run("scontrol", "update", f"NodeName={self.host}", "State=RESUME", check=False)
            if time.monotonic() > deadline:
                self.close()
                raise SlurmError(
                    f"node not idle after {timeout:.0f} s (sinfo: {state!r} {res.stderr.strip()})"
                    + self.log_tail("slurmctld")
                    + self.log_tail("slurmd")
                )
            time.sleep(0.2)
        self.startup_seconds = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged by pid, keep ``dir`` for logs."""
        if self._procs.get("slurmctld") and _alive(self._procs["slurmctld"].pid):
            self.run("scancel", "--full", "-u", _user(), check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.jobs():
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld"):
            proc = self._procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        pid = self._pids.pop("munged", None)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- use -------------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM command (sbatch, squeue, ...) against this cluster."""
        exe = _which(argv[0]) or argv[0]
        res = subprocess.run(
            [exe, *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise SlurmError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
        return res

    def jobs(self) -> list[str]:
        """Ids of the jobs squeue still shows as pending, running or completing."""
        res = self.run("squeue", "-h", "-o", "%i", check=False)
        return res.stdout.split()

    def log_tail(self, daemon: str, lines: int = 25) -> str:
        path = self.dir / "log" / f"{daemon}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"\n(no {path})"
        return f"\n--- last lines of {path}:\n" + "\n".join(text)

    def daemon_pids(self) -> dict[str, int]:
        out = {name: p.pid for name, p in self._procs.items()}
        out.update(self._pids)
        return out

    # -- internals -------------------------------------------------------------------

    def _write_files(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log", "run", "munge", "tmp"):
            (d / sub).mkdir(mode=0o700, exist_ok=True)
        self.tmp_base.chmod(0o755)
        (d / "munge").chmod(0o755)  # srun in other users' jobs talks to the socket
        scripts = {
            # Prolog/Epilog run as root (SlurmdUser) on the node; TaskProlog as the user.
            "prolog.sh": f'#!/bin/sh\nd="{self.tmp_base}/job_$SLURM_JOB_ID"\n'
            'mkdir -p "$d" && chown "$SLURM_JOB_UID" "$d" && chmod 700 "$d"\n',
            "taskprolog.sh": f'#!/bin/sh\necho "export SLURM_TMPDIR={self.tmp_base}/job_$SLURM_JOB_ID"\n',
            "epilog.sh": f'#!/bin/sh\nrm -rf "{self.tmp_base}/job_$SLURM_JOB_ID"\n',
        }
        for name, text in scripts.items():
            (d / name).write_text(text)
            (d / name).chmod(0o755)
        user = _user()
        lines = [
            "ClusterName=sifmagic",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "KillWait=10",
            "MinJobAge=60",
            "PrologFlags=Alloc",
            f"Prolog={d / 'prolog.sh'}",
            f"TaskProlog={d / 'taskprolog.sh'}",
            f"Epilog={d / 'epilog.sh'}",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN"
            + (f" Gres=gpu:{self.gpus}" if self.gpus else ""),
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.gpus:
            (d / "dev").mkdir(exist_ok=True)
            files = []
            for k in range(self.gpus):
                dev = d / "dev" / f"nvidia{k}"  # SLURM wants a character device
                if not dev.is_symlink():
                    dev.symlink_to("/dev/null")
                files.append(f"Name=gpu File={d / 'dev' / f'nvidia{k}'}")
            (d / "gres.conf").write_text("\n".join(files) + "\n")
            lines.insert(0, "GresTypes=gpu")
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_munge(self) -> None:
        m = self.dir / "munge"
        key = m / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        pid_file = m / "munged.pid"
        res = subprocess.run(
            [
                _which("munged"),
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={pid_file}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
                "--force",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise SlurmError(f"munged failed ({res.returncode}): {res.stderr.strip()}")
        deadline = time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise SlurmError("munged wrote no pid file within 10 s")
            time.sleep(0.05)
        self._pids["munged"] = int(pid_file.read_text().strip())

    def _spawn(self, name: str, argv: list[str | None], out: Path) -> None:
        with open(out, "ab") as f:
            self._procs[name] = subprocess.Popen(
                [str(a) for a in argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# -- pytest fixtures ---------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = missing_tools()
    if missing:
        message = f"SLURM test cluster needs {', '.join(missing)}: run `{INSTALL}`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp dir: that one is private to its owner, and jobs of other users
    # (sbatch --uid) must run the TaskProlog and reach their $SLURM_TMPDIR.
    cluster = SlurmCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SBATCH_EXPORT", "SLURM_EXPORT_ENV"):
        monkeypatch.delenv(var, raising=False)
    return slurm_cluster
