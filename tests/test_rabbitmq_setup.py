"""A job's setup on the broker (issue 16): its result queue declared ahead, consumed
on the channel the kernel's jobs share; what the broker refuses still reaches the user."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pika
import pytest

from sif_magic import BrokerError, Executor, protocol


@pytest.fixture
def ex(broker_url: str, runtime: str, key_file) -> Iterator[Executor]:
    e = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def _queue_exists(broker_url: str, name: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        conn.close()


def test_jobs_in_a_row_get_their_own_queues_and_every_result(
    workers, ex: Executor, runtime: str, broker_url: str
) -> None:
    workers.start(runtime, processes=2)
    scope = ex.backend.scope
    seen = set()
    for k in range(4):
        job = ex.map_job(lambda x, k=k: x + k, range(5))
        assert job.results(timeout=60) == [x + k for x in range(5)]
        assert job.job_id not in seen
        seen.add(job.job_id)
        assert _queue_exists(broker_url, protocol.result_queue(scope, job.job_id))
        job.close()
        assert not _queue_exists(broker_url, protocol.result_queue(scope, job.job_id))
    # the next job's queue is declared ahead; shutting down deletes it
    spare = ex.backend.spares._next
    assert spare is not None
    deadline = time.time() + 10
    while not spare.ready and time.time() < deadline:
        time.sleep(0.05)
    assert _queue_exists(broker_url, protocol.result_queue(scope, spare.job_id))
    ex.shutdown()
    assert not _queue_exists(broker_url, protocol.result_queue(scope, spare.job_id))


def test_a_refused_result_queue_fails_the_job_and_spares_the_others(
    workers, ex: Executor, runtime: str, broker_url: str
) -> None:
    """The job's result queue exists with another queue type: the broker refuses the
    declare (on the channel the kernel's result consumers share). The user gets an
    error that says what to align; a job running meanwhile keeps its results; the next
    job runs."""
    workers.start(runtime, processes=2)
    scope = ex.backend.scope
    running = ex.map_job(lambda x: (__import__("time").sleep(1.0), x)[1], range(4), chunksize=1)
    bad = "feedfacecafe"
    queue = protocol.result_queue(scope, bad)
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        args = protocol.result_queue_arguments(scope, ex.config.result_ttl, "quorum")
        conn.channel().queue_declare(queue, durable=True, arguments=args)
        ex.backend.new_job_id = lambda: bad  # type: ignore[method-assign]
        with pytest.raises(BrokerError, match="another type.*queue_type"):
            ex.map_job(lambda x: x, range(3))
        del ex.backend.new_job_id
        assert running.results(timeout=60) == [0, 1, 2, 3]
        assert ex.map_job(lambda x: -x, range(3)).results(timeout=60) == [0, -1, -2]
    finally:
        conn.channel().queue_delete(queue)
        conn.close()


def _close_shared_while_consuming(ex: Executor, times: int = 1) -> None:
    """The broker closes the shared result channel while the next job's consume is on
    its way there, for a reason that is not that job's (an ack of an unknown delivery,
    as another job's refused operation or RabbitMQ's consumer_timeout would): each of
    the next ``times`` shared channels gets such an ack right after it is handed out."""
    consumers = ex.backend.conn._consumers
    handed = consumers._channel
    left = [times]

    def channel(c, conn, generation):  # noqa: ANN001, ANN202
        ch = handed(c, conn, generation)
        if c.shared and left[0] > 0:
            left[0] -= 1
            ch._impl.basic_ack(10**6)  # the broker closes the channel: PRECONDITION_FAILED
        return ch

    consumers._channel = channel


def test_a_shared_channel_closed_for_another_reason_does_not_fail_a_job_start(
    workers, ex: Executor, runtime: str
) -> None:
    """The broker closes the channel the kernel's result consumers share while a job
    starts, for a reason not about that job: the job starts on a new channel and runs;
    a job that ran before gets its results all the same."""
    workers.start(runtime, processes=1)
    before = ex.map_job(lambda x: x + 1, range(5))
    assert before.results(timeout=60) == [1, 2, 3, 4, 5]
    _close_shared_while_consuming(ex)
    job = ex.map_job(lambda x: x * 2, range(3))
    assert job.results(timeout=60) == [0, 2, 4]
    assert before.results(timeout=10) == [1, 2, 3, 4, 5]
    assert ex.map_job(lambda x: -x, range(3)).results(timeout=60) == [0, -1, -2]


def test_a_job_that_cannot_start_leaves_no_result_queue(
    workers, ex: Executor, runtime: str, broker_url: str
) -> None:
    """The shared channel is closed under a job's consume twice in a row: the job fails
    with a BrokerError naming the broker's reason, its result queue is deleted, and the
    next job runs."""
    workers.start(runtime, processes=1)
    assert ex.map_job(lambda x: x, range(2)).results(timeout=60) == [0, 1]
    _close_shared_while_consuming(ex, times=2)
    ids: list[str] = []
    take = ex.backend.new_job_id
    ex.backend.new_job_id = lambda: ids.append(take()) or ids[-1]  # type: ignore[method-assign]
    with pytest.raises(BrokerError, match="unknown delivery tag"):
        ex.map_job(lambda x: x, range(3))
    del ex.backend.new_job_id
    queue = protocol.result_queue(ex.backend.scope, ids[0])
    deadline = time.time() + 10
    while _queue_exists(broker_url, queue) and time.time() < deadline:
        time.sleep(0.1)
    assert not _queue_exists(broker_url, queue)
    assert ex.map_job(lambda x: -x, range(3)).results(timeout=60) == [0, -1, -2]


def test_a_failed_start_prepares_the_next_jobs_queue(workers, ex: Executor, runtime: str) -> None:
    """A job that could not start took the queue declared ahead: the next job's is
    declared again, as after a job that ran."""
    workers.start(runtime, processes=1)
    assert ex.map_job(lambda x: x, range(2)).results(timeout=60) == [0, 1]
    _close_shared_while_consuming(ex, times=2)
    with pytest.raises(BrokerError):
        ex.map_job(lambda x: x, range(3))
    assert ex.backend.spares._next is not None


def _spare_queues(broker_url: str, scope: str, ids: list[str]) -> list[str]:
    names = [protocol.result_queue(scope, i) for i in ids]
    return [n for n in names if _queue_exists(broker_url, n)]


def test_spares_dropped_at_once_leave_no_queue(ex: Executor, broker_url: str) -> None:
    """A spare deleted while its declare is still on its way (dropped by the next
    ``take``, or at shutdown) leaves no queue behind; nor does a job that ends after
    the spares were closed, while the executor shuts down."""
    spares, scope = ex.backend.spares, ex.backend.scope
    ids = []
    for _ in range(5):
        spares.close()
        spares._closed = False
        spares.after_job()
        ids.append(spares._next.job_id)  # type: ignore[union-attr]
    spares.close()
    spares.after_job()  # a job that ends between spares.close() and conn.close()
    if spares._next is not None:
        ids.append(spares._next.job_id)
    ex.shutdown()
    assert _spare_queues(broker_url, scope, ids) == []


def test_take_from_two_threads(ex: Executor) -> None:
    """Executor.submit from two threads at once: the thread that took the queue
    declared ahead gets its id, though another took the next id meanwhile."""
    import threading

    from sif_magic.backends.rabbitmq.spare import Spare

    spares = ex.backend.spares
    spares.close()
    spare = Spare("0" * 12, spares._arguments(), ex.backend.conn.generation, ready=True)
    spares._next = spare
    drop = spares._drop
    other: list[str] = []

    def meanwhile(s, wait=False):  # noqa: ANN001, ANN202 - the other thread's take, now
        spares._drop = drop
        t = threading.Thread(target=lambda: other.append(spares.take()))
        t.start()
        t.join()
        drop(s, wait)

    spares._drop = meanwhile
    assert spares.take() == spare.job_id
    assert other and other[0] != spare.job_id


def test_a_spare_taken_by_one_job_is_not_deleted_by_another_jobs_take(
    ex: Executor, broker_url: str
) -> None:
    """Two jobs made at once (Executor.submit on two threads): the second take must
    not delete the queue the first job took and is about to consume (its delete and
    the first job's own declare would race on two channels: results lost)."""
    spares, scope = ex.backend.spares, ex.backend.scope
    deadline = time.time() + 10
    while not (spares._next is not None and spares._next.ready) and time.time() < deadline:
        time.sleep(0.05)
    first = spares.take()
    second = spares.take()
    assert first != second
    time.sleep(0.5)  # a delete posted by the second take would have run by now
    assert _queue_exists(broker_url, protocol.result_queue(scope, first))
    assert spares.started(first) is True  # declared ahead: the job skips its declares
    assert spares.started(second) is False
