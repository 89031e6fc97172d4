"""The low findings of issue 13 on messages and broker URLs, each attack performed.

- A ``sif-sig`` header that is not 64 hex digits raised TypeError in
  ``hmac.compare_digest`` (non-ASCII text): one such message ended ``sif-magic logs``,
  and the monitor logged a traceback per message.
- ``amqp://`` with ``ca_file`` silently ran without TLS; ``require_tls`` refuses plain.
- pika's parse error of a URL whose password holds '/' quoted part of the password.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pika
import pytest
from test_cli import sif

from sif_magic import BrokerError, Executor, protocol
from sif_magic._keys import load_key
from sif_magic.transport import connection_parameters, declare_topology

BAD_SIGS = ["é" * 64, "z" * 64, "ab" * 31, "AB" * 32, b"\xff" * 64, 12345, ["x"]]


@pytest.mark.parametrize("sig", BAD_SIGS, ids=range(len(BAD_SIGS)))
def test_a_malformed_signature_is_a_protocol_error(sig: object) -> None:
    body = b"{}"
    headers = {**protocol.headers_for(b"k" * 32, "events", body), protocol.HDR_SIG: sig}
    with pytest.raises(protocol.ProtocolError):  # before: TypeError for the first and fifth
        protocol.verify(b"k" * 32, "events", body, headers)


def _publish(url: str, exchange: str, key: str, body: bytes, kind: str, headers: dict) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_publish(exchange, key, body, pika.BasicProperties(type=kind, headers=headers))
    finally:
        conn.close()


def test_logs_and_the_monitor_survive_malformed_signatures(
    broker_url: str, key_file: Path, url_file: Path, workers, runtime: str
) -> None:
    key = load_key(key_file=str(key_file))
    scope = protocol.key_id(key)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    declare_topology(conn.channel(), scope)
    conn.close()
    batch = protocol.EventBatch("j-sig", "w", "h", time.time(), logs=[(0, 1, "after the bad ones")])
    body = batch.encode()
    good = protocol.headers_for(key, "events", body)

    import subprocess
    import sys

    from test_cli import ROOT

    logs = subprocess.Popen(
        [sys.executable, "-m", "sif_magic", "logs", "j-sig", "--seconds", "8",
         "--amqp-url-file", str(url_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), SIF_MAGIC_KEY_FILE=str(key_file)),
    )  # fmt: skip
    try:
        time.sleep(3)  # it binds its queue
        workers.start(runtime, processes=1)
        ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime)
        ex.backend  # noqa: B018 - connected: its monitor queue is bound
        try:
            for sig in ("é" * 64, "ab" * 31):
                _publish(broker_url, protocol.monitor_exchange(scope), "job.j-sig.events", body,
                         "events", {**good, protocol.HDR_SIG: sig})  # fmt: skip
                _publish(broker_url, protocol.monitor_exchange(scope), "worker.x.heartbeat",
                         body, "heartbeat", {**good, protocol.HDR_SIG: sig})  # fmt: skip
            _publish(broker_url, protocol.monitor_exchange(scope), "job.j-sig.events", body,
                     "events", good)  # fmt: skip
            # the worker meets one in its task queue: refused, it goes on
            task = protocol.task_queue(scope, runtime)
            _publish(broker_url, protocol.direct_exchange(scope), task, body, "task",
                     {**good, protocol.HDR_SIG: "é" * 64})  # fmt: skip
            assert ex.map_job(lambda x: -x, range(5)).results(timeout=60) == [0, -1, -2, -3, -4]
            assert ex.backend.monitor.rejected >= 2  # ignored, counted, no traceback
        finally:
            ex.shutdown(wait=False)
        out, err = logs.communicate(timeout=30)
    finally:
        if logs.poll() is None:
            logs.kill()
    assert logs.returncode == 0, err
    assert "after the bad ones" in out and "Traceback" not in err, (out, err)
    assert "malformed sif-sig header" in workers.logs() and "Traceback" not in workers.logs()


def test_a_plain_url_with_a_ca_file_or_require_tls_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = "amqp://u:secret@127.0.0.1:5672/%2F"
    with pytest.raises(BrokerError, match="plain amqp:// .*ca_file is set.*use amqps://"):
        connection_parameters(plain, 1, ca_file=str(tmp_path / "ca.pem"))
    with pytest.raises(BrokerError, match="require_tls is set"):
        connection_parameters(plain, 1, require_tls=True)
    monkeypatch.setenv("SIF_MAGIC_REQUIRE_TLS", "1")
    with pytest.raises(BrokerError, match="require_tls is set") as info:
        Executor(backend="rabbitmq", amqp_url=plain, runtime="x").backend  # noqa: B018
    assert "secret" not in str(info.value)
    assert connection_parameters("amqps://u:p@h.example/%2F", 1).ssl_options is not None
    r = sif("worker", "--amqp-url-file", _url_file(tmp_path, plain), "--runtime", "x")
    assert r.returncode != 0 and "require_tls is set" in r.stderr, r.stderr


def _url_file(tmp_path: Path, url: str) -> str:
    path = tmp_path / "url"
    path.write_text(url)
    path.chmod(0o600)
    return str(path)


def test_a_url_that_does_not_parse_never_shows_its_password(tmp_path: Path) -> None:
    url = "amqp://alice:se/cr3t@127.0.0.1:5672/%2F"  # '/' not percent-encoded
    with pytest.raises(BrokerError) as info:
        connection_parameters(url, 1)
    text = str(info.value)
    assert "'se'" not in text and "cr3t" not in text, text  # pika said: "as 'se'"
    assert "%2F" in text and "percent-encoded" in text
    r = sif("hello", "--backend", "rabbitmq", "--amqp-url-file", _url_file(tmp_path, url))
    assert "cr3t" not in r.stdout + r.stderr and "'se'" not in r.stdout + r.stderr
    assert "percent-encoded" in r.stdout + r.stderr
