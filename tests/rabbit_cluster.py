"""A RabbitMQ cluster of private nodes on this machine, for tests that lose a node.

``RabbitCluster(3)`` starts three ``RabbitNode``\\ s (tests/rabbit.py: their own ports,
data and logs) that share one HOME, so one Erlang cookie, and joins the second and the
third to the first (``rabbitmqctl stop_app`` / ``join_cluster`` / ``start_app``)::

    with RabbitCluster(3) as cluster:
        cluster.url                        # "amqp://...:p1/%2F,amqp://...:p2/%2F,..."
        node = cluster.node_of("sif-abc")  # the node a connection of that name is on
        node.kill()                        # SIGKILL, by pid
        node.start()                       # it rejoins the cluster from its own data

The same rules as ``RabbitNode``: processes are signalled by pid only; ``close()`` stops
every node (killing those that will not stop) and removes the shared HOME.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from rabbit import RabbitNode, RabbitNodeError, _Started, write_cookie


class RabbitCluster(_Started):
    """``size`` private nodes joined into one cluster (started by ``start()`` or ``with``)."""

    def __init__(self, size: int = 3) -> None:
        # "sif-rabbit-" with an owner file: a later sweep removes it if we die
        self.dir = Path(tempfile.mkdtemp(prefix="sif-rabbit-cluster-"))
        (self.dir / "owner").write_text(str(os.getpid()))
        self.home = self.dir / "home"
        self.home.mkdir()
        write_cookie(self.home)
        self.nodes = [RabbitNode(home=self.home) for _ in range(size)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what sif_magic's amqp_url accepts)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        first, *others = self.nodes
        for node in self.nodes:
            node.start()
        for node in others:
            node.join(first, timeout=timeout)
        self.wait_members(len(self.nodes), timeout)
        return self

    def running(self) -> list[RabbitNode]:
        return [n for n in self.nodes if n.is_running()]

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl`` on the first running node."""
        return self.running()[0].ctl(*args, timeout=timeout)

    def wait_members(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` nodes are running members of the cluster."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                out = self.ctl("eval", "length(rabbit_nodes:all_running()).", timeout=30)
                if int(out.strip()) >= count:
                    return
            except (RabbitNodeError, ValueError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"the cluster did not reach {count} running nodes")
            time.sleep(0.5)

    def quorum_online(self, queue: str, vhost: str = "/") -> int:
        """How many members of quorum queue ``queue`` are online (0: unknown)."""
        out = self.ctl(
            "list_queues", "-p", vhost, "--no-table-headers", "name", "online", timeout=30
        )
        for line in out.splitlines():
            name, _, online = line.partition("\t")
            if name == queue:
                return online.count("@")
        return 0

    def node_of(self, connection_name: str) -> RabbitNode | None:
        """The node holding the client connection named ``connection_name`` (the
        ``connection_name`` client property, shown by ``list_connections``)."""
        for node in self.running():
            try:
                out = node.ctl("list_connections", "--no-table-headers", "pid", "client_properties")
            except RabbitNodeError:
                continue
            for line in out.splitlines():
                pid, _, props = line.partition("\t")  # pid: <NODE.N.N.N>
                if f'"connection_name","{connection_name}"' in props:
                    where = pid.strip().lstrip("<").rsplit(".", 3)[0]
                    return next((n for n in self.nodes if n.name == where), None)
        return None

    def close(self) -> None:
        try:
            for node in self.nodes:
                node.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
