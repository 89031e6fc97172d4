"""Job folding results column by column: order, first outcome wins, failures, futures."""

from __future__ import annotations

import pickle

import pytest
from segments import segment

from sif_magic import RemoteError, protocol
from sif_magic.job import Job
from sif_magic.protocol import DONE, FAILED, CallResult, ResultBatch


def test_segments_in_any_order_give_results_in_input_order() -> None:
    job = Job("j", 10)
    job.apply_segments([segment([5, 6, 7, 8, 9], [50, 60, 70, 80, 90])])
    assert job.state_counts()["done"] == 5 and not job.done()
    job.apply_segments([segment([3, 0, 4, 2, 1], [30, 0, 40, 20, 10])])  # not consecutive
    assert job.done() and job.results() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert job.describe_call(6)["t_start"] == 6.0 and job.describe_call(6)["pid"] == 7


def test_the_first_outcome_of_a_call_wins() -> None:
    job = Job("j", 6)
    job.apply_segments([segment([0, 1, 2], ["a", "b", "c"])])
    # a redelivered chunk's results, partly already here, arrive again with other values
    job.apply_segments([segment([1, 2, 3, 4, 5], ["X", "X", "d", "e", "f"], pid=8)])
    assert job.results() == ["a", "b", "c", "d", "e", "f"]
    assert job.duplicates == 2 and job.state_counts()["done"] == 6
    assert job.describe_call(2)["pid"] == 7 and job.describe_call(3)["pid"] == 8


def test_a_failed_call_in_a_segment_raises_with_its_remote_error() -> None:
    job = Job("j", 3, errors="collect")
    seg = segment([0, 1, 2], [1, ValueError("bad"), 3], [DONE, FAILED, DONE])
    seg.extra[1] = seg.extra[1][:2] + (b"oops\n", 0) + seg.extra[1][4:]
    job.apply_segments([seg])
    values = job.results()
    assert values[0] == 1 and values[2] == 3
    assert isinstance(values[1], RemoteError) and "bad" in str(values[1])
    assert isinstance(values[1].exception, ValueError)  # the original, unpickled here
    assert job.output(1) == "oops\n" and job.failed == [1]


def test_futures_resolve_from_segments() -> None:
    job = Job("j", 4)
    futures = job.futures
    job.apply_segments([segment([2, 3], ["c", "d"])])
    assert [f.done() for f in futures] == [False, False, True, True]
    assert futures[3].result(0) == "d"
    job.apply_segments([segment([0, 1], ["a", "b"])])
    assert [f.result(0) for f in futures] == ["a", "b", "c", "d"]


def test_out_of_range_indices_are_ignored() -> None:
    job = Job("j", 2)
    job.apply_segments([segment([-1, 1, 2], ["zz", "b", "zz"])])  # -1 must not wrap to 1
    job.apply_segments([segment([0], ["a"])])
    assert job.results() == ["a", "b"]


def test_result_batch_of_several_segments_round_trips() -> None:
    a = segment([0, 1, 2], ["a", "b", "c"], pid=1)
    b = segment([10, 12], ["x", ValueError("v")], [DONE, FAILED], pid=2)
    b.extra[1] = (b.extra[1][0], b"out", b"err", 3, b.extra[1][4])
    back = ResultBatch.decode(ResultBatch("j", -1, [a, b]).encode())
    assert [s.pid for s in back.segments] == [1, 2]
    assert list(back.segments[1].indices) == [10, 12]
    assert back.segments[1].extra == {1: b.extra[1]}
    rs = back.results
    assert [pickle.loads(r.value) for r in rs[:4]] == ["a", "b", "c", "x"]
    assert rs[4].status == FAILED and rs[4].stdout == b"out" and rs[4].dropped == 3
    assert str(pickle.loads(rs[4].value)) == "v"
    # the per-call form gives the same body
    again = ResultBatch("j", -1, [CallResult(**r.__dict__) for r in rs])
    assert ResultBatch.decode(again.encode()).results == rs


@pytest.mark.parametrize("part", [1, 2, 3, 4, 5, 6])
def test_a_result_batch_whose_columns_disagree_is_refused(part: int) -> None:
    seg = segment([0, 1], ["a", ValueError("b")], [DONE, FAILED])
    body = ResultBatch("j", -1, [seg]).encode()
    meta, parts = protocol.unpack(body, 6)
    parts = [bytes(p) for p in parts]
    # one byte short: index, status, attempt, times, values or output
    parts[part - 1] = parts[part - 1][:-1]
    forged = protocol.pack(meta, *parts)
    with pytest.raises(protocol.ProtocolError):
        ResultBatch.decode(forged)


def test_events_show_progress_without_touching_outcomes() -> None:
    from sif_magic.protocol import EventBatch

    job = Job("j", 8)
    job.apply_segments([segment([5], ["five"])])  # call 5 has its outcome already

    def events(states: dict) -> EventBatch:
        return EventBatch(job_id="j", worker="w", host="h", t=0.0, states=states)

    job.apply_events(events({"running": [[0, 6]], "cancelled": [[7, 9]]}))
    assert [job.state(i) for i in range(8)] == ["running"] * 5 + ["done", "running", "running"]
    job.apply_events(events({"done": [[-3, 1]], "failed": [[6, 6]]}))  # clipped to the job
    # ended on their worker, results not here: finishing, never counted done or failed
    assert [job.state(i) for i in range(8)] == [
        "finishing", "finishing", "running", "running", "running", "done", "finishing",
        "running",
    ]  # fmt: skip
    assert job.state_counts() == {
        "queued": 0, "running": 4, "done": 1, "failed": 0, "cancelled": 0, "retrying": 0,
        "lost": 0, "finishing": 3,
    }  # fmt: skip
    assert not job.done()  # events show outcomes near; only results make them
    job.apply_segments([segment([0, 1, 2, 3, 4, 6, 7], list("abcdegh"))])
    assert job.done() and job.results()[5:] == ["five", "g", "h"]
    assert job.state_counts()["done"] == 8


def test_calls_of_a_worker_that_stopped_are_lost_until_another_runs_them() -> None:
    from sif_magic.protocol import EventBatch

    job = Job("j", 6)

    def events(worker: str, states: dict, started: list[int]) -> EventBatch:
        calls = [[i, 1, 1.0] for i in started]
        return EventBatch(job_id="j", worker=worker, host="h", t=0.0, states=states, calls=calls)

    job.apply_events(events("w1", {"running": [[0, 2]]}, [0, 1, 2]))
    job.apply_events(events("w2", {"running": [[3, 4]]}, [3, 4]))
    job.apply_segments([segment([2], ["two"])])  # w1 finished call 2 before it stopped
    assert job.mark_lost("w1", "worker w1 on h stopped answering") == 2
    assert [job.state(i) for i in range(6)] == [
        "lost", "lost", "done", "running", "running", "queued",
    ]  # fmt: skip
    assert job.describe_call(0)["note"] == "worker w1 on h stopped answering"
    assert job.count("lost") == 2 and "2 lost" in job.summary()
    assert job.mark_lost("w1", "again") == 0  # nothing of w1 runs any more
    # redelivered to w2: running there, then done
    job.apply_events(events("w2", {"running": [[0, 1]]}, [0, 1]))
    assert job.mark_lost("w1", "late") == 0 and job.count("lost") == 0
    job.apply_segments([segment([0, 1, 3, 4, 5], list("ab345"))])
    assert job.results() == ["a", "b", "two", "3", "4", "5"]
