"""Real RabbitMQ brokers for tests: the machine's shared one and private throwaway nodes.

``shared_broker_url()`` checks that the machine's broker answers and returns its URL.

``RabbitNode`` runs a private node (its own ports, data, logs and Erlang cookie, all in a
temporary directory) for tests that stop, kill or misconfigure the broker::

    with RabbitNode(tls=True) as node:  # started on entry, stopped and removed on exit
        node.add_vhost("jobs")
        node.add_user("alice", "s3cret")
        node.set_permissions("jobs", "alice")
        node.restart()  # same ports and data: durable queues, persistent messages survive
        node.kill()  # SIGKILL, as in a broker crash
        node.start()

The node runs as root through ``/usr/lib/rabbitmq/bin/rabbitmq-server -detached``, not the
``/usr/sbin`` wrapper (that one switches to the rabbitmq user, who cannot write the temp
dir). Processes are only ever signalled by the pid the node wrote to its pid file, checked
against the node's own command line first. The node registers with the machine's one epmd
daemon (port 4369); if none runs, Erlang starts one, and it stays running: it is shared.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
from procs import descendants as _descendants

__all__ = [
    "SHARED_BROKER_URL",
    "BrokerUnavailable",
    "RabbitNode",
    "RabbitNodeError",
    "TlsFiles",
    "free_port",
    "generate_tls_files",
    "pika_parameters",
    "shared_broker_url",
    "write_cookie",
]

log = logging.getLogger(__name__)

SHARED_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_BIN = Path(os.environ.get("SIF_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
_CLI_DIST_PORTS = range(35672, 35683)  # where rabbitmqctl's own Erlang node listens
_DIR_PREFIX = "sif-rabbit-"


class BrokerUnavailable(RuntimeError):
    """The machine's shared broker does not answer."""


class RabbitNodeError(RuntimeError):
    """A private node failed to start, stop, or run a rabbitmqctl command."""


def shared_broker_url(url: str = SHARED_BROKER_URL, timeout: float = 3.0) -> str:
    """Return ``url`` once a connection to it opened and closed, else raise BrokerUnavailable."""
    try:
        pika.BlockingConnection(pika_parameters(url, timeout=timeout)).close()
    except (pika.exceptions.AMQPError, OSError) as e:  # ssl.SSLError is an OSError
        raise BrokerUnavailable(
            f"no RabbitMQ answers at {_mask(url)} ({e!r}); start it with "
            "`rabbitmq-server -detached` (or `apt-get install -y rabbitmq-server`)"
        ) from e
    return url


def pika_parameters(
    url: str, *, ca_file: str | Path | None = None, timeout: float = 5.0
) -> pika.URLParameters:
    """pika parameters for ``url``; for amqps, verify against ``ca_file`` (else system CAs)."""
    params = pika.URLParameters(url)
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    if params.ssl_options is not None and ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file))
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    return params


def free_port(exclude: tuple[int, ...] = ()) -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range.

    Below it, no client's outgoing connection can take the port while a node is down
    between ``stop()`` and ``start()`` (reconnecting clients make many such connections).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(10000, max(low, 10001))
        if port in _CLI_DIST_PORTS or port in exclude or port in (5671, 5672, 25672):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RabbitNodeError(f"no free TCP port found between 10000 and {low}")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    ca_key_file: Path


def generate_tls_files(directory: str | Path, hosts: tuple[str, ...] = ("localhost",)) -> TlsFiles:
    """A fresh self-signed CA and a server certificate it signed, for ``hosts`` and 127.0.0.1.

    Uses the openssl command line (EC P-256 keys: fast). Call it twice for a second,
    unrelated CA (a "signed by someone else" test).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "ca.key")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    tag = secrets.token_hex(4)
    _openssl(
        "req", "-x509", *ec, "-keyout", files.ca_key_file, "-out", files.ca_file,
        "-days", "3", "-subj", f"/CN=sif_magic test CA {tag}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    csr = d / "server.csr"
    _openssl("req", "-new", *ec, "-keyout", files.key_file, "-out", csr, "-subj", f"/CN={hosts[0]}")
    ext = d / "server.ext"
    san = ",".join([*(f"DNS:{h}" for h in hosts), "IP:127.0.0.1"])
    ext.write_text(
        "basicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {san}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", csr, "-CA", files.ca_file, "-CAkey", files.ca_key_file,
        "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "3", "-out", files.cert_file,
        "-extfile", ext,
    )  # fmt: skip
    for key in (files.key_file, files.ca_key_file):
        key.chmod(0o600)
    return files


def _openssl(*args: object) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise RabbitNodeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class _Started:
    """``with``: ``start()`` on entry (``close()`` if that fails), ``close()`` on exit."""

    def start(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class RabbitNode(_Started):
    """A private RabbitMQ node on free 127.0.0.1 ports, in its own temporary directory.

    Not started by the constructor: call ``start()`` or use it as a context manager.
    ``close()`` (also run on ``__exit__``, at interpreter exit, and when the object is
    garbage-collected) stops the node, kills it if it will not stop, and deletes the dir.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        extra_config: str = "",
        advanced_config: str = "",
        keep_dir: bool = False,
        home: Path | None = None,
    ):
        """``home``: a HOME shared with other nodes (its ``.erlang.cookie`` written by the
        caller, mode 400), so that they can form a cluster (``join``); else a private one."""
        _sweep_orphans_once()
        self.dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        (self.dir / "owner").write_text(str(os.getpid()))
        self.name = f"sif{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        self.dist_port = free_port(exclude=(self.port,))
        self.tls_port: int | None = free_port(exclude=(self.port, self.dist_port)) if tls else None
        self.tls: TlsFiles | None = generate_tls_files(self.dir / "tls") if tls else None
        self.keep_dir = keep_dir
        self.pid: int | None = None
        if home is None:
            self._home = self.dir / "home"
            self._home.mkdir()
            write_cookie(self._home)
        else:  # the link tells a later sweep which HOME this node's beam was started with
            self._home = Path(home).resolve()
            (self.dir / "home").symlink_to(self._home)
        self.pid_file = self.dir / "node.pid"
        self.log_file = self.dir / "log" / f"{self.name}.log"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.dir / "rabbitmq.conf").write_text(self._config() + extra_config)
        if advanced_config:  # Erlang terms, for settings rabbitmq.conf lacks, e.g.
            # "[{rabbit, [{consumer_timeout, 3000}, {channel_tick_interval, 500}]}]."
            (self.dir / "advanced.config").write_text(advanced_config)
        self.env = self._environment()
        # Runs at interpreter exit or when the node is collected; holds paths, not self.
        self._finalizer = weakref.finalize(
            self, _cleanup, self.pid_file, self._home, self.dir, os.getpid()
        )

    # -- addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RabbitNodeError("this node has no TLS listener: create it with tls=True")
        return f"amqps://guest:guest@localhost:{self.tls_port}/%2F"

    @property
    def ca_file(self) -> Path:
        if self.tls is None:
            raise RabbitNodeError("this node has no TLS listener: create it with tls=True")
        return self.tls.ca_file

    def url_for(self, user: str, password: str, vhost: str = "/", *, tls: bool = False) -> str:
        """The URL of this node for another user or vhost."""
        creds = f"{quote(user, safe='')}:{quote(password, safe='')}"
        if tls:
            return f"amqps://{creds}@localhost:{self.tls_port}/{quote(vhost, safe='')}"
        return f"amqp://{creds}@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.pid else "stopped"
        tls = f", tls port {self.tls_port}" if self.tls_port else ""
        return f"<RabbitNode {self.name} port {self.port}{tls}, {state}>"

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RabbitNode:
        """Start the node and wait until AMQP (and AMQPS) accept a guest connection."""
        if self.is_running():
            return self
        self.pid_file.unlink(missing_ok=True)
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode:
            raise RabbitNodeError(
                f"rabbitmq-server -detached exited {proc.returncode}: {proc.stderr.strip()}"
            )
        deadline = t0 + timeout
        while True:
            if self.pid is None:
                self.pid = _read_pid(self.pid_file, self._home)
            elif not _alive(self.pid):
                self.pid = None
                raise RabbitNodeError(f"node {self.name} died while starting{self._log_tail()}")
            if self.pid is not None and self._answers():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitNodeError(
                    f"node {self.name} did not answer within {timeout:.0f} s{self._log_tail()}"
                )
            time.sleep(0.1)
        log.debug("node %s up in %.1f s (pid %s)", self.name, time.monotonic() - t0, self.pid)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node with ``rabbitmqctl stop``; kill it by pid if it does not go."""
        pid = self.pid or _read_pid(self.pid_file, self._home)
        if pid is None or not _alive(pid):
            self.pid = None
            return
        family = _descendants(pid)
        try:
            self.ctl("stop", timeout=timeout)
        except (RabbitNodeError, subprocess.TimeoutExpired) as e:
            log.warning("rabbitmqctl stop failed (%s); sending SIGTERM to node %s", e, self.name)
            _signal_beam(pid, self._home, signal.SIGTERM)  # RabbitMQ stops cleanly on TERM
        if not _wait_gone([pid], timeout):
            log.warning(
                "node %s still running %.0f s after stop: killing pid %d", self.name, timeout, pid
            )
            _signal_beam(pid, self._home, signal.SIGKILL)
            _wait_gone([pid], 10)
        self._reap(family)
        self.pid = None

    def kill(self) -> None:
        """SIGKILL the node (a broker crash) and wait until it and its helpers are gone."""
        pid = self.pid or _read_pid(self.pid_file, self._home)
        if pid is not None and _alive(pid):
            family = _descendants(pid)
            _signal_beam(pid, self._home)
            if not _wait_gone([pid], 10):
                raise RabbitNodeError(f"node {self.name} (pid {pid}) survived SIGKILL")
            self._reap(family)
        self.pid = None

    def restart(self, timeout: float = 30.0) -> RabbitNode:
        """Stop then start on the same ports and data directory."""
        self.stop(timeout)
        return self.start(timeout)

    def is_running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def close(self) -> None:
        """Stop the node (kill it if need be) and remove its directory."""
        try:
            self.stop(timeout=15)
        finally:
            self.kill()
            self._finalizer.detach()
            if self.keep_dir:
                (self.dir / "owner").unlink(missing_ok=True)  # so no later sweep removes it
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- administration --------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -q -n NODE ARGS...`` against this node; return its stdout."""
        cmd = [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.name, *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode:
            out = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise RabbitNodeError(
                f"rabbitmqctl {args[0] if args else ''} exited {proc.returncode}: "
                + "\n".join(out[:20])
            )
        return proc.stdout

    def join(self, other: RabbitNode, timeout: float = 60.0) -> None:
        """Make this running node a member of ``other``'s cluster (both share a HOME):
        ``stop_app``, ``join_cluster``, ``start_app``, then wait until AMQP answers."""
        self.ctl("stop_app", timeout=timeout)
        self.ctl("join_cluster", other.name, timeout=timeout)
        self.ctl("start_app", timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"node {self.name} did not answer after joining a cluster")
            time.sleep(0.1)

    def add_user(self, name: str, password: str) -> None:
        self.ctl("add_user", name, password)  # visible in ps: test passwords only

    def add_vhost(self, name: str) -> None:
        self.ctl("add_vhost", name)

    def set_permissions(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def queues(self, vhost: str = "/") -> dict[str, int]:
        """Queue name -> messages (ready + unacked) in ``vhost``."""
        out = self.ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
        depths = {}
        for line in out.splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                depths[name] = int(count)
        return depths

    # -- internals -------------------------------------------------------------------

    def _config(self) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "log.file.level = info",
            "log.console = false",
        ]
        if self.tls is not None:
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca_file}",
                f"ssl_options.certfile = {self.tls.cert_file}",
                f"ssl_options.keyfile = {self.tls.key_file}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        return "\n".join(lines) + "\n"

    def _environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"
        }
        d = self.dir
        env.update(
            HOME=str(self._home),  # the Erlang cookie, for the node and rabbitmqctl alike
            LC_ALL="C.UTF-8",
            ERL_EPMD_ADDRESS="127.0.0.1",  # only used if this node has to start epmd
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _answers(self) -> bool:
        """True once every listener accepts TCP and then a guest AMQP connection."""
        targets: list[tuple[int, str, Path | None]] = [(self.port, self.url, None)]
        if self.tls_port is not None:
            targets.append((self.tls_port, self.tls_url, self.ca_file))
        try:
            for port, _, _ in targets:  # cheap first, so pika logs no refused connections
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            for _, url, ca_file in targets:
                pika.BlockingConnection(pika_parameters(url, ca_file=ca_file)).close()
        except (OSError, pika.exceptions.AMQPError):
            return False
        return True

    def _reap(self, family: list[int]) -> None:
        """Wait for the node's helper processes (erl_child_setup, inet_gethost...) to exit."""
        if not _wait_gone(family, 5):
            log.warning("helpers of node %s outlived it; killing %s", self.name, family)
            for pid in family:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (no log at {self.log_file})"
        return f"; last lines of {self.log_file}:\n" + "\n".join(tail)


def write_cookie(home: Path) -> None:
    """A fresh Erlang cookie in ``home`` (mode 400: Erlang refuses one others can read)."""
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)


# -- processes, by pid only ----------------------------------------------------------


def _read_pid(pid_file: Path, home: Path) -> int | None:
    """The pid in ``pid_file`` if it is a live beam started with our ``home``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_beam(pid, home) else None


def _is_our_beam(pid: int, home: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"-home" in argv and os.fsencode(home) in argv


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_beam(pid: int, home: Path, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal ``pid`` only if it is still the beam started with ``home`` (not a reused pid)."""
    if _is_our_beam(pid, home):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _cleanup(pid_file: Path, home: Path, directory: Path, owner: int) -> None:
    """Last resort (garbage collection, interpreter exit): kill the node, drop its dir."""
    if os.getpid() != owner:  # a forked child exiting: the node is not its to stop
        return
    home = home.resolve()  # a cluster node's is a link to the HOME its nodes share
    pid = _read_pid(pid_file, home)
    if pid is not None:
        family = _descendants(pid)
        _signal_beam(pid, home)
        _wait_gone([pid, *family], 5)
    shutil.rmtree(directory, ignore_errors=True)


_swept = False


def _sweep_orphans_once() -> None:
    """Kill nodes left by test processes that died (SIGKILL gives no chance to clean up)."""
    global _swept
    if _swept:
        return
    _swept = True
    for d in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((d / "owner").read_text())
        except (OSError, ValueError):
            continue  # kept on purpose, or not ours
        if owner != os.getpid() and not _alive(owner):
            log.warning("removing RabbitMQ node dir %s left by dead process %d", d, owner)
            _cleanup(d / "node.pid", d / "home", d, os.getpid())


def _mask(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.partition(':')[0]}:***@{tail}"
