"""Issue 4, points 6 and 7: bad input ends in a clear message, never in a crash or a hang.

What tests/test_rabbitmq.py already covers (wrong password, missing vhost, refused
port, unknown host, amqps on a plain port, foreign/unsigned/forged/truncated/other
version/50 MB task bodies, incompatible workers, no worker) is not repeated here.
This file adds: TLS with certificate verification on a private node (worker and
client, right CA, no CA, another CA); messages in a job's *result* queue that are
not for it or not ours; signed messages of another type replayed into the task
queue; and an unpicklable function/argument or an oversized payload on the
RabbitMQ backend, each with a run in flight on the same workers left unharmed.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import (
    ROOT,
    FaultWorkers,
    publish_raw,
    take_dead_letters,
    tasks_left,
    wait_until,
)
from queues import scope
from rabbit import RabbitNode, generate_tls_files

from sif_magic import BrokerError, SerializationError, protocol
from sif_magic.protocol import DONE, CallResult, ResultBatch

PASSWORD = "tls-Pa55w0rd-x9"


@pytest.fixture(scope="module")
def tls_node() -> Iterator[RabbitNode]:
    with RabbitNode(tls=True) as n:
        n.add_user("alice", PASSWORD)
        n.set_permissions("/", "alice")
        yield n


# -- TLS -------------------------------------------------------------------------------


@pytest.mark.slow
def test_amqps_with_certificate_verification_end_to_end(
    tls_node: RabbitNode, make_ex, key_file: Path, runtime: str, tmp_path: Path
) -> None:
    url = tls_node.url_for("alice", PASSWORD, tls=True)  # amqps://alice:...@localhost:PORT/
    assert url.startswith("amqps://")
    w = FaultWorkers(url, key_file, tmp_path, admin_url=tls_node.url)
    try:
        w.start(runtime, processes=2, ca_file=tls_node.ca_file)
        ex = make_ex(amqp_url=url, ca_file=str(tls_node.ca_file), runtime=runtime)
        job = ex.map_job(lambda x: x + 100, range(50), chunksize=5)
        assert job.results(timeout=60) == [x + 100 for x in range(50)]
        assert PASSWORD not in repr(ex) and PASSWORD not in repr(job)
    finally:
        w.stop()
    logs = w.logs()
    assert PASSWORD not in logs
    assert key_file.read_bytes().strip().decode(errors="replace") not in logs


@pytest.mark.slow
@pytest.mark.parametrize("ca", ["none", "another-ca"])
def test_amqps_with_an_unverifiable_certificate_says_so(
    tls_node: RabbitNode, key_file: Path, tmp_path: Path, ca: str, make_ex
) -> None:
    url = tls_node.url_for("alice", PASSWORD, tls=True)
    ca_file = str(generate_tls_files(tmp_path / "other").ca_file) if ca == "another-ca" else ""
    t0 = time.time()
    with pytest.raises(BrokerError) as info:
        make_ex(amqp_url=url, ca_file=ca_file, runtime="x").backend  # noqa: B018
    msg = str(info.value)
    assert "could not be verified" in msg and "ca_file" in msg, msg
    assert PASSWORD not in msg
    assert time.time() - t0 < 15

    # a worker without the right CA exits with the same advice (no traceback, no password)
    url_file = tmp_path / "url"
    url_file.write_text(url)
    url_file.chmod(0o600)
    cmd = [sys.executable, "-m", "sif_magic", "worker", "--amqp-url-file", str(url_file)]
    cmd += ["--runtime", "x", "--processes", "1", "--key-file", str(key_file)]
    if ca_file:
        cmd += ["--ca-file", ca_file]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "could not be verified" in out and "Traceback" not in out, out
    assert PASSWORD not in out


# -- the result queue ----------------------------------------------------------------------


class _Evil:
    """Unpickling this creates a file: proof that a body was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_results_that_are_not_for_the_job_leave_it_unharmed(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str, key_file: Path, tmp_path: Path
) -> None:
    from sif_magic._keys import load_key

    key = load_key(key_file=str(key_file))
    fworkers.start(runtime, processes=1)
    ex = make_ex(amqp_url=broker_url, runtime=runtime)

    def slow(x: int) -> int:
        import time

        time.sleep(0.2)
        return x + 1

    job = ex.map_job(slow, range(10), chunksize=1)
    queue = protocol.result_queue(scope(), job.job_id)
    take_dead_letters(broker_url, queue)
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Evil(marker))

    def result(job_id: str, index: int, value: bytes = evil) -> bytes:
        r = CallResult(index=index, status=DONE, value=value, attempt=1, worker="w", host="h")
        return ResultBatch(job_id, 0, [r]).encode()

    other_job = result("0123456789ab", 0)
    out_of_range = result(job.job_id, 10**6)
    negative = result(job.job_id, -1)
    good_body = result(job.job_id, 0)
    events = json.dumps({"job": job.job_id, "worker": "w", "t": 0}).encode()
    # (body, headers, type, dead-lettered?)
    cases = [
        (
            other_job,
            protocol.headers_for(key, "result", other_job),
            "result",
            True,
        ),  # not this job's
        (out_of_range, protocol.headers_for(key, "result", out_of_range), "result", False),
        (negative, protocol.headers_for(key, "result", negative), "result", False),
        (b"garbage" * 100, None, "result", True),  # not ours at all
        (os.urandom(4096), protocol.headers_for(key, "result", b"x"), "result", True),
        (good_body, None, "result", True),  # unsigned
        (good_body, protocol.headers_for(b"another key", "result", good_body), "result", True),
        (good_body[:30], protocol.headers_for(key, "result", good_body[:30]), "result", True),
        (
            good_body,
            {
                **protocol.headers_for(key, "result", good_body),
                protocol.HDR_VERSION: protocol.VERSION + 1,
            },
            "result",
            True,
        ),
        (good_body, protocol.headers_for(key, "result", good_body), None, True),  # no type
        (events, protocol.headers_for(key, "events", events), "events", True),  # wrong kind
        (b"SIF1" + os.urandom(64), protocol.headers_for(key, "result", b"SIF1"), "result", True),
    ]
    signed_garbage = b"SIF1\x00\x00\x00\x02{}"  # well signed, well framed, lacks every field
    cases.append(
        (signed_garbage, protocol.headers_for(key, "result", signed_garbage), "result", True)
    )
    for body, headers, kind, _ in cases:
        publish_raw(broker_url, queue, body, kind=kind, headers=headers)

    assert job.results(timeout=60) == [x + 1 for x in range(10)]  # unharmed
    assert job.state_counts()["done"] == 10
    assert not marker.exists(), "a forged result body was unpickled"
    want = sum(1 for *_, dead in cases if dead)
    dead: list = []
    deadline = time.time() + 15
    while len(dead) < want and time.time() < deadline:
        dead += take_dead_letters(broker_url, queue)
        time.sleep(0.2)
    assert len(dead) == want, f"{len(dead)} of {want} bad messages were dead-lettered"
    print(f"\nFIGURES result-queue: bad-messages={len(cases)} dead-lettered={len(dead)} job-ok")


def test_signed_messages_of_another_kind_in_the_task_queue_are_dead_lettered(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str, key_file: Path, tmp_path: Path
) -> None:
    """Binding the type into the MAC: a signed events/result/control body replayed as a
    task (with its own type, or relabelled 'task') is refused unread."""
    from sif_magic._keys import load_key

    key = load_key(key_file=str(key_file))
    (worker,) = fworkers.start(runtime, processes=1)
    queue = protocol.task_queue(scope(), runtime)
    take_dead_letters(broker_url, queue)
    ex = make_ex(amqp_url=broker_url, runtime=runtime)
    job = ex.map_job(lambda x: x * 2, range(30), chunksize=3)
    control = protocol.Control(op="shutdown").encode()
    events = json.dumps({"job": "j", "worker": "w", "t": 0}).encode()
    result = ResultBatch("j", 0, [CallResult(index=0, status=DONE)]).encode()
    cases = [
        (events, protocol.headers_for(key, "events", events), "events"),
        (events, protocol.headers_for(key, "events", events), "task"),  # relabelled
        (control, protocol.headers_for(key, "control", control), "control"),
        (control, protocol.headers_for(key, "control", control), "task"),
        (result, protocol.headers_for(key, "result", result), "task"),
        (result, protocol.headers_for(key, "task", result), "task"),  # signed, not a task
    ]
    for body, headers, kind in cases:
        publish_raw(
            broker_url,
            queue,
            body,
            kind=kind,
            headers=headers,
            arguments=protocol.task_queue_arguments(scope()),
        )
    assert job.results(timeout=60) == [x * 2 for x in range(30)]
    dead = wait_until(
        lambda: take_dead_letters(broker_url, queue) or None,
        20,
        "dead letters from the task queue",
    )
    while len(dead) < len(cases):
        more = take_dead_letters(broker_url, queue)
        if not more:
            time.sleep(0.2)
            more = take_dead_letters(broker_url, queue)
            if not more:
                break
        dead += more
    assert len(dead) == len(cases)
    assert worker.poll() is None  # the signed 'shutdown' relabelled as a task did nothing
    assert ex.map_job(abs, [-9]).results(timeout=30) == [9]


# -- what cannot be sent ----------------------------------------------------------------------


def test_unpicklable_or_oversized_input_on_rabbitmq_fails_before_sending(
    fworkers: FaultWorkers, make_ex, broker_url: str, runtime: str
) -> None:
    fworkers.start(runtime, processes=2)
    ex = make_ex(amqp_url=broker_url, runtime=runtime, max_message_mb=1)

    def slow(x: int) -> int:
        import time

        time.sleep(0.1)
        return x

    in_flight = ex.map_job(slow, range(20), chunksize=2)
    lock = threading.Lock()

    def holds_a_lock(x: int) -> bool:
        return lock.locked() or x

    with pytest.raises(SerializationError, match="'lock'"):
        ex.map_job(holds_a_lock, range(3))
    with pytest.raises(SerializationError, match="input #2"):
        ex.map_job(abs, [1, 2, threading.Lock()])
    # an input over the limit spills (tests/test_spill.py); where it cannot, nothing is sent
    unwritable = make_ex(
        amqp_url=broker_url, runtime=runtime, max_message_mb=1, spill_dir="/proc/sif-no-dir"
    )
    with pytest.raises(SerializationError, match=r"input #1: cannot write 2.0 MB .*spill_dir"):
        unwritable.map_job(len, [b"", os.urandom(2 * 1024 * 1024)])
    assert in_flight.results(timeout=60) == list(range(20))
    assert set(ex.jobs) == {in_flight.job_id} and not unwritable.jobs  # the refused never started
    assert tasks_left(broker_url, runtime) == 0
