"""Tests of tests/rabbit.py: the shared broker check and private RabbitMQ nodes."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
import rabbit
from rabbit import (
    BrokerUnavailable,
    RabbitNode,
    RabbitNodeError,
    _alive,
    _descendants,
    _mask,
    free_port,
    generate_tls_files,
    pika_parameters,
    shared_broker_url,
)


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with RabbitNode() as n:
        yield n


def publish_persistent(url: str, queue: str, body: bytes) -> None:
    """Declare a durable queue and publish one persistent message, confirmed by the broker."""
    with pika.BlockingConnection(pika_parameters(url)) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True)
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def get_one(url: str, queue: str) -> bytes | None:
    with pika.BlockingConnection(pika_parameters(url)) as conn:
        method, _, body = conn.channel().basic_get(queue, auto_ack=True)
    return body if method else None


# -- no broker needed ----------------------------------------------------------------


def test_shared_broker_url_names_the_fix_and_masks_the_password() -> None:
    url = f"amqp://guest:hunter2@127.0.0.1:{free_port()}/%2F"
    with pytest.raises(BrokerUnavailable, match="rabbitmq-server -detached") as info:
        shared_broker_url(url, timeout=1)
    assert "hunter2" not in str(info.value)
    assert "guest:***@127.0.0.1" in str(info.value)


def test_mask() -> None:
    assert _mask("amqps://u:p@h:1/v") == "amqps://u:***@h:1/v"
    assert _mask("amqp://h/v") == "amqp://h/v"


def test_tls_files_form_a_chain(tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert_file, files.key_file)  # key matches certificate
    client = ssl.create_default_context(cafile=str(files.ca_file))
    assert client.get_ca_certs()[0]["subject"][0][0][1].startswith("sif_magic test CA")
    assert oct(files.key_file.stat().st_mode & 0o777) == "0o600"


def test_url_for_quotes_user_password_and_vhost() -> None:
    n = RabbitNode()
    try:
        assert n.url == f"amqp://guest:guest@127.0.0.1:{n.port}/%2F"
        assert n.url_for("a@b", "p/w", "jobs/1") == (
            f"amqp://a%40b:p%2Fw@127.0.0.1:{n.port}/jobs%2F1"
        )
        with pytest.raises(RabbitNodeError, match="tls=True"):
            n.tls_url  # noqa: B018
        assert not n.is_running()
    finally:
        n.close()
    assert not n.dir.exists()


# -- the machine's broker ------------------------------------------------------------


def test_shared_broker_answers() -> None:
    try:
        url = shared_broker_url()
    except BrokerUnavailable:
        if os.environ.get("CI"):
            raise
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    assert url == "amqp://guest:guest@127.0.0.1:5672/%2F"


# -- a private node: users, vhosts, permissions --------------------------------------


def test_node_answers_on_its_own_port(node: RabbitNode) -> None:
    assert node.port != 5672
    with pika.BlockingConnection(pika_parameters(node.url)) as conn:
        conn.channel().queue_declare("q-depth", durable=True)
    publish_persistent(node.url, "q-depth", b"x")
    assert node.queues()["q-depth"] == 1


def test_user_vhost_and_permissions(node: RabbitNode) -> None:
    node.add_vhost("jobs")
    node.add_user("alice", "s3cret")
    node.set_permissions("jobs", "alice")
    with pika.BlockingConnection(pika_parameters(node.url_for("alice", "s3cret", "jobs"))):
        pass
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):  # no rights on "/"
        pika.BlockingConnection(pika_parameters(node.url_for("alice", "s3cret", "/")))


def test_wrong_password_is_refused(node: RabbitNode) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match="ACCESS_REFUSED"):
        pika.BlockingConnection(pika_parameters(node.url_for("guest", "wrong")))


def test_missing_vhost_is_refused(node: RabbitNode) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match="vhost nope not found"):
        pika.BlockingConnection(pika_parameters(node.url_for("guest", "guest", "nope")))


def test_ctl_error_carries_rabbitmqctl_message(node: RabbitNode) -> None:
    with pytest.raises(RabbitNodeError, match="no_such_vhost|does not exist|not found"):
        node.ctl("delete_vhost", "never-made")


# -- a private node: restart, crash, cleanup -----------------------------------------


@pytest.mark.slow
def test_restart_keeps_durable_queue_and_persistent_message() -> None:
    with RabbitNode() as n:
        port, data = n.port, n.dir
        publish_persistent(n.url, "durable-q", b"survives a restart")
        t0 = time.monotonic()
        n.restart()
        print(f"restart took {time.monotonic() - t0:.1f} s")
        assert (n.port, n.dir) == (port, data)
        assert get_one(n.url, "durable-q") == b"survives a restart"


@pytest.mark.slow
def test_kill_leaves_no_process_and_confirmed_messages_survive() -> None:
    with RabbitNode() as n:
        publish_persistent(n.url, "crash-q", b"confirmed before the crash")
        pid = n.pid
        assert pid is not None and _alive(pid)
        family = _descendants(pid)
        assert family, "a running node has port programs (erl_child_setup...)"
        n.kill()
        assert not n.is_running()
        assert not any(_alive(p) for p in [pid, *family])
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika_parameters(n.url))
        n.start()  # recovers from the crash on the same data
        assert get_one(n.url, "crash-q") == b"confirmed before the crash"
        pid, family = n.pid, _descendants(n.pid or 0)
        data = n.dir
    assert pid is not None and not any(_alive(p) for p in [pid, *family])
    assert not data.exists()


@pytest.mark.slow
def test_stop_then_start_and_close_is_idempotent() -> None:
    n = RabbitNode()
    try:
        n.start()
        n.stop()
        assert not n.is_running()
        n.stop()  # nothing to do
        n.kill()  # nothing to do
        n.start()
        assert n.is_running()
    finally:
        n.close()
        n.close()
    assert not n.dir.exists()


# -- TLS -----------------------------------------------------------------------------


@pytest.mark.slow
def test_tls_node_accepts_verified_and_rejects_unverified(tmp_path: Path) -> None:
    with RabbitNode(tls=True) as n:
        assert n.tls_url == f"amqps://guest:guest@localhost:{n.tls_port}/%2F"
        with pika.BlockingConnection(pika_parameters(n.tls_url, ca_file=n.ca_file)) as conn:
            assert conn.is_open
        # pika lets the ssl error through unwrapped: it is not an AMQPError.
        with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
            pika.BlockingConnection(pika.URLParameters(n.tls_url))  # system CAs only
        other_ca = generate_tls_files(tmp_path).ca_file
        with pytest.raises(ssl.SSLCertVerificationError):
            pika.BlockingConnection(pika_parameters(n.tls_url, ca_file=other_ca))
        with pika.BlockingConnection(pika_parameters(n.url)):  # plain listener stays on
            pass


@pytest.mark.slow
def test_node_of_a_killed_test_process_is_swept() -> None:
    code = (
        "from rabbit import RabbitNode\n"
        "n = RabbitNode().start()\n"
        "print(n.dir, n.pid, flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(rabbit.__file__).parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        directory, pid = Path(line.split()[0]), int(line.split()[1])
    finally:
        proc.kill()  # SIGKILL: no fixture teardown, no atexit
        proc.wait()
    assert _alive(pid) and directory.exists()
    rabbit._swept = False
    rabbit._sweep_orphans_once()
    assert not _alive(pid)
    assert not directory.exists()
