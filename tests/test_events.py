"""EventBuffer: what a worker sees, batched per job and interval (no broker, no threads
but the buffer's own)."""

from __future__ import annotations

import time
from array import array

from sif_magic.protocol import DONE, FAILED, RETRYING, RUNNING, SKIP, EventBatch
from sif_magic.runner.events import MAX_LOG_BYTES_PER_FLUSH, EventBuffer


def _buffer() -> tuple[EventBuffer, list[EventBatch]]:
    batches: list[EventBatch] = []
    return EventBuffer("w1", "h1", batches.append), batches


def test_one_batch_per_job_with_the_last_state_of_each_call() -> None:
    ev, batches = _buffer()
    ev.state("a", 0, RUNNING, attempt=1, t=10.0)
    ev.state("a", 1, RUNNING, attempt=1, t=10.5)
    ev.state("a", 1, RETRYING, attempt=2, t=11.0)
    ev.state("b", 7, RUNNING, attempt=1, t=12.0)
    ev.flush()
    by_job = {b.job_id: b for b in batches}
    assert set(by_job) == {"a", "b"}
    a = by_job["a"]
    assert a.worker == "w1" and a.host == "h1"
    assert a.states == {"running": [[0, 0]], "retrying": [[1, 1]]}
    assert a.calls == [[0, 1, 10.0], [1, 1, 10.5], [1, 2, 11.0]]  # every attempt's start
    assert by_job["b"].states == {"running": [[7, 7]]}
    batches.clear()
    ev.flush()
    assert batches == []  # nothing new: nothing sent


def test_consecutive_calls_done_travel_as_one_range_and_win_over_earlier_states() -> None:
    ev, batches = _buffer()
    for i in range(100):
        ev.state("a", i, RUNNING, attempt=1, t=1.0)
    ev.outcomes("a", array("q", range(0, 50)), bytes([DONE]) * 50)
    ev.outcomes("a", array("q", range(50, 60)), bytes([DONE]) * 10)
    ev.flush()
    (batch,) = batches
    assert batch.states["done"] == [[0, 59]]
    assert batch.states["running"] == [[60, 99]]


def test_mixed_outcomes_are_kept_call_by_call_and_a_skip_is_no_outcome() -> None:
    ev, batches = _buffer()
    ev.state("a", 2, RUNNING)
    status = bytes([DONE, FAILED, SKIP, DONE])
    ev.outcomes("a", array("q", [0, 1, 2, 5]), status)
    ev.flush()
    (batch,) = batches
    assert batch.states == {"done": [[0, 0], [5, 5]], "failed": [[1, 1]], "running": [[2, 2]]}


def test_notes_and_logs_and_the_cap_on_log_bytes_per_interval() -> None:
    ev, batches = _buffer()
    ev.note("a", 3, "attempt 1 failed: boom")
    ev.log("a", 3, 1, "hello\n")
    big = "x" * (MAX_LOG_BYTES_PER_FLUSH - len("hello\n") - 2)  # 2 bytes of room left
    ev.log("a", 4, 2, big)
    ev.log("a", 5, 1, "cut\n")  # over the cap: counted, not sent
    ev.flush()
    (batch,) = batches
    assert batch.logs == [[3, 1, "hello\n"], [4, 2, big]]
    assert batch.notes["3"] == "attempt 1 failed: boom"
    assert batch.notes["-1"] == "4 bytes of log lines cut in this interval (rate limit)"
    batches.clear()
    ev.log("a", 5, 1, "next interval\n")  # the cap is per interval
    ev.flush()
    assert batches[0].logs == [[5, 1, "next interval\n"]]


def test_a_sink_that_fails_does_not_stop_the_buffer() -> None:
    calls = []

    def sink(batch: EventBatch) -> None:
        calls.append(batch.job_id)
        raise RuntimeError("broker down")

    ev = EventBuffer("w", "h", sink)
    ev.state("a", 0, RUNNING)
    ev.state("b", 0, RUNNING)
    ev.flush()  # no exception
    assert sorted(calls) == ["a", "b"]


def test_the_flusher_thread_sends_every_interval_and_stop_sends_the_rest() -> None:
    ev, batches = _buffer()
    ev.interval = 0.02
    ev.start()
    try:
        ev.state("a", 0, RUNNING)
        deadline = time.time() + 5
        while not batches and time.time() < deadline:
            time.sleep(0.01)
        assert [b.states for b in batches] == [{"running": [[0, 0]]}]
    finally:
        ev.state("a", 1, RUNNING)
        ev.stop()
    assert batches[-1].states == {"running": [[1, 1]]}
