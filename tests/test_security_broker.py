"""Users of one broker (issue 13, findings 2 and 3), on a private RabbitMQ node.

Every queue and exchange is ``sif_magic.<key id>.*``. Two users, two keys, one vhost,
the same runtime name, a worker each: with the permissions docs/security.md gives
(configure, write and read all ``^sif_magic\\.<key id>\\.``), both run their 40 calls,
and user B, with their own credentials, can neither read, consume, purge, delete nor
publish into A's queues. Before, all users shared ``sif_magic.tasks.<runtime>`` and
``sif_magic.results.<job>`` and needed ``.*``: B read and deleted A's queues, and each
user's worker dead-lettered the other's tasks (2 of 40 done each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions as pe
import pytest
from rabbit import RabbitNode, pika_parameters
from workers import WorkerProcs

from sif_magic import Executor, protocol
from sif_magic._keys import create_key_file, read_secret_file

VHOST = "shared"
RUNTIME = "default"  # the same runtime name for both users


def permission(kid: str) -> str:
    """The regular expression docs/security.md gives a user whose key id is ``kid``."""
    return rf"^sif_magic\.{kid}\."


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with RabbitNode() as n:
        n.add_vhost(VHOST)
        n.set_permissions(VHOST, "guest")  # the test's own view (counting consumers)
        yield n


class User:
    def __init__(self, node: RabbitNode, name: str, tmp: Path) -> None:
        self.name = name
        self.key_file = tmp / f"{name}.key"
        create_key_file(self.key_file)
        self.kid = protocol.key_id(read_secret_file(self.key_file, "key").encode())
        password = f"pw-{name}-x"
        node.add_user(name, password)
        # the lines of docs/security.md, "one vhost, a user per key"
        node.set_permissions(
            VHOST, name, permission(self.kid), permission(self.kid), permission(self.kid)
        )
        self.url = node.url_for(name, password, VHOST)
        self.workers = WorkerProcs(
            self.url, self.key_file, tmp, admin_url=node.url_for("guest", "guest", VHOST)
        )


def _refused(url: str, op: Callable[[Any], Any]) -> int:
    """The reply code with which the broker refuses ``op(channel)`` for the user of
    ``url`` (0: it was allowed). Publishes are checked with confirms."""
    conn = pika.BlockingConnection(pika_parameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        op(ch)
        conn.process_data_events(0.2)
        return 0 if ch.is_open else -1
    except pe.ChannelClosedByBroker as e:
        return e.reply_code
    finally:
        if conn.is_open:
            conn.close()


def test_two_users_one_vhost_one_runtime_name_are_kept_apart(
    node: RabbitNode, tmp_path: Path
) -> None:
    alice, bob = User(node, "alice", tmp_path / "a"), User(node, "bob", tmp_path / "b")
    execs: list[Executor] = []
    try:
        for u in (alice, bob):
            u.workers.log_dir.mkdir(parents=True, exist_ok=True)
            u.workers.start(RUNTIME, processes=2)
            execs.append(
                Executor(
                    backend="rabbitmq", amqp_url=u.url, runtime=RUNTIME, key_file=str(u.key_file)
                )
            )
        jobs = [ex.map_job(lambda x, k=k: (k, x * x), range(40), chunksize=1) for k, ex in
                enumerate(execs)]  # fmt: skip
        for k, job in enumerate(jobs):
            assert job.results(timeout=180) == [(k, x * x) for x in range(40)]  # all 80 done
        for u in (alice, bob):
            assert "signed with key id" not in u.workers.logs()
            assert "dead-letter" not in u.workers.logs()

        # bob, with his own credentials, goes after alice's live queues
        a_results = protocol.result_queue(alice.kid, jobs[0].job_id)
        a_tasks = protocol.task_queue(alice.kid, RUNTIME)
        assert node.queues(VHOST).keys() >= {a_results, a_tasks}
        attacks: dict[str, Callable[[Any], Any]] = {
            "get a result": lambda ch: ch.basic_get(a_results, auto_ack=True),
            "consume results": lambda ch: ch.basic_consume(a_results, lambda *a: None),
            "consume tasks": lambda ch: ch.basic_consume(a_tasks, lambda *a: None),
            "get a task": lambda ch: ch.basic_get(a_tasks, auto_ack=False),
            "delete the result queue": lambda ch: ch.queue_delete(a_results),
            "delete the task queue": lambda ch: ch.queue_delete(a_tasks),
            "purge the task queue": lambda ch: ch.queue_purge(a_tasks),
            "redeclare the result queue": lambda ch: ch.queue_declare(a_results, durable=True),
            "publish a task by name": lambda ch: ch.basic_publish("", a_tasks, b"x"),
            "publish through alice's exchange": lambda ch: ch.basic_publish(
                protocol.direct_exchange(alice.kid), a_tasks, b"x"
            ),
            "follow alice's events": lambda ch: ch.queue_bind(
                protocol.private_queue(bob.kid, "spy"), protocol.monitor_exchange(alice.kid), "#"
            ),
            "cancel alice's jobs": lambda ch: ch.basic_publish(
                protocol.control_exchange(alice.kid), "", b"x"
            ),
        }

        def spy_queue(ch: Any) -> None:  # bob's own queue, to bind to alice's exchange
            ch.queue_declare(protocol.private_queue(bob.kid, "spy"))

        assert _refused(bob.url, spy_queue) == 0
        codes = {what: _refused(bob.url, op) for what, op in attacks.items()}
        assert codes == dict.fromkeys(attacks, 403), codes  # ACCESS_REFUSED, every one
        depths = node.queues(VHOST)
        assert a_results in depths and depths[a_tasks] == 0  # nothing deleted, nothing added
        # what permissions do not hide (docs/security.md): a passive declare needs none,
        # so bob learns whether a queue he can name exists, and its message count
        assert _refused(bob.url, lambda ch: ch.queue_declare(a_tasks, passive=True)) == 0
        # what bob may do: his own names (and nothing else, even on the default exchange)
        assert _refused(bob.url, lambda ch: ch.queue_declare(f"sif_magic.{bob.kid}.mine")) == 0
        assert _refused(bob.url, lambda ch: ch.queue_declare("mine")) == 403
        # and both users' work still runs
        for k, ex in enumerate(execs):
            assert ex.map_job(lambda x, k=k: x + k, range(10)).results(timeout=60) == [
                x + k for x in range(10)
            ]
    finally:
        for ex in execs:
            ex.shutdown(wait=False, cancel_futures=True)
        for u in (alice, bob):
            u.workers.stop()


def test_a_user_of_a_vhost_of_their_own_is_alone_there(node: RabbitNode, tmp_path: Path) -> None:
    """The simplest setup of docs/security.md: a vhost per user, all rights there."""
    node.ctl("add_vhost", "carol")
    node.add_user("carol", "pw-carol")
    node.add_user("dave", "pw-dave")
    node.ctl("set_permissions", "-p", "carol", "carol", ".*", ".*", ".*")
    with pika.BlockingConnection(pika_parameters(node.url_for("carol", "pw-carol", "carol"))):
        pass
    with pytest.raises((pe.ProbableAccessDeniedError, pe.ConnectionClosedByBroker)):
        pika.BlockingConnection(pika_parameters(node.url_for("dave", "pw-dave", "carol")))
