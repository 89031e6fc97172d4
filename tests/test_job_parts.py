"""The parts of a Job, each on its own: the outcome table, the log store, the event folder."""

from __future__ import annotations

import pytest
from segments import segment

from sif_magic.job import logs as logs_mod
from sif_magic.job.logs import LogStore
from sif_magic.job.monitor import EventFolder
from sif_magic.job.outcomes import Outcomes
from sif_magic.protocol import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHING,
    QUEUED,
    RUNNING,
    STATE_CODES,
    EventBatch,
)


def with_output(seg, k: int, out: bytes, err: bytes = b"", dropped: int = 0):
    old = seg.extra.get(k, (None, b"", b"", 0, b""))
    seg.extra[k] = (old[0], out, err, dropped, old[4])
    return seg


# -- Outcomes ---------------------------------------------------------------------------


def test_outcomes_fold_a_consecutive_segment_at_once() -> None:
    o = Outcomes(6)
    applied: list[int] = []
    printed: list = []
    o.fold(with_output(segment([2, 3, 4], ["c", "d", "e"]), 1, b"hi\n"), applied, printed)
    assert bytes(o.states) == bytes([QUEUED, QUEUED, DONE, DONE, DONE, QUEUED])
    assert o.counts[DONE] == 3 and o.counts[QUEUED] == 3 and o.final == 3
    assert applied == [2, 3, 4] and printed == [(3, b"hi\n", b"", 0)]
    assert o.describe(3)["host"] == "h1" and o.describe(3)["t_start"] == 3.0
    assert o.value(4) == "e" and o.raw(4) == b""


def test_outcomes_keep_the_first_outcome_and_count_duplicates() -> None:
    o = Outcomes(4)
    o.fold(segment([0, 1], ["a", "b"]), None, [])
    o.fold(segment([1, 2, 3], ["X", "c", ValueError("d")], [DONE, DONE, FAILED], pid=9), None, [])
    assert o.duplicates == 1 and o.final == 4
    assert o.values() == ["a", "b", "c", None]  # a failed call has no value
    assert o.of_state(FAILED) == [3] and o.errors[3]["type"] == "ValueError"
    assert o.describe(1)["pid"] == 7 and o.describe(2)["pid"] == 9


def test_outcomes_decode_puts_exceptions_in_place_and_forgets_the_pickles() -> None:
    o = Outcomes(3)
    o.fold(segment([0, 1, 2], [1, ValueError("x"), 3], [DONE, FAILED, DONE]), None, [])
    asked = []

    def error_of(i: int) -> BaseException:
        asked.append(i)
        return ValueError(f"call {i}")

    values = o.decode(error_of)
    assert values[0] == 1 and values[2] == 3 and str(values[1]) == "call 1" and asked == [1]
    assert o.decode(error_of) is values and asked == [1]  # decoded once
    assert o.value(0) is None  # the pickled bytes are gone


def test_outcomes_show_progress_only_for_calls_without_an_outcome() -> None:
    o = Outcomes(4)
    o.fold(segment([1], ["b"]), None, [])
    running = bytes(c if c in (DONE, FAILED, CANCELLED) else RUNNING for c in range(256))
    o.show(running, 0, 3)
    assert bytes(o.states) == bytes([RUNNING, DONE, RUNNING, RUNNING])
    assert o.counts[RUNNING] == 3 and o.counts[QUEUED] == 0 and o.final == 1
    o.started(1, 5, 9.0, 0)  # has its outcome: untouched
    o.started(2, 300, 9.0, 0)
    assert o.attempts[1] == 1 and o.attempts[2] == 255 and o.t_start[2] == 9.0


def test_outcomes_cancel_the_rest_and_drop_their_late_results() -> None:
    o = Outcomes(3)
    o.fold(segment([0], ["a"]), None, [])
    assert o.cancel_rest() == [1, 2] and o.counts[CANCELLED] == 2 and o.final == 3
    o.fold(segment([1, 2], ["late", "late"]), None, [])
    assert o.duplicates == 2 and o.values()[1:] == [None, None]


# -- LogStore ---------------------------------------------------------------------------


def test_log_store_keeps_lines_per_call_and_the_recent_ones_of_all() -> None:
    store = LogStore()
    store.add(3, 1, "one\n")
    store.add(5, 2, "two\n")
    assert store.entries(3) == ([(1, "one\n")], 0) and store.entries(4) == ([], 0)
    assert list(store.recent) == [(3, 1, "one\n"), (5, 2, "two\n")]
    assert store.seq == 2 and store.size == 8


def test_log_store_settle_adds_only_what_the_live_lines_missed() -> None:
    store = LogStore()
    store.add(0, 1, "a\n")
    store.settle(0, b"a\nb\n", b"oops\n", 0)  # the result carries the whole output
    assert store.entries(0)[0] == [(1, "a\n"), (1, "b\n"), (2, "oops\n")]
    store.settle(0, b"a\nb\n", b"oops\n", 0)  # again: nothing new
    assert len(store.entries(0)[0]) == 3 and store.seq == 3


def test_log_store_settle_after_a_cut_head() -> None:
    store = LogStore()
    store.settle(1, b"tail\n", b"", 100)  # the first 100 characters were dropped at the slot
    assert store.entries(1) == ([(1, "tail\n")], 100)


def test_log_store_drops_the_oldest_lines_of_a_call_over_its_limit(monkeypatch) -> None:
    monkeypatch.setattr(logs_mod, "LOG_BYTES_PER_CALL", 10)
    store = LogStore()
    for k in range(4):
        store.add(0, 1, f"line{k}\n")  # 6 characters each
    entries, dropped = store.entries(0)
    assert entries == [(1, "line3\n")] and dropped == 18 and store.size == 6


def test_log_store_stops_keeping_over_the_job_limit(monkeypatch) -> None:
    monkeypatch.setattr(logs_mod, "LOG_BYTES_PER_JOB", 5)
    store = LogStore()
    store.add(0, 1, "123456")
    store.add(1, 1, "more")
    assert store.entries(1) == ([], 0) and store.dropped == 4 and store.seq == 1


# -- EventFolder ------------------------------------------------------------------------


def events(**kw) -> EventBatch:
    return EventBatch(job_id="j", worker="w9", host="h9", t=0.0, **kw)


def test_event_folder_shows_states_clipped_to_the_job() -> None:
    o = Outcomes(5)
    folder = EventFolder(o, LogStore())
    folder.fold(events(states={"running": [[-2, 1]], "retrying": [[3, 99]]}))
    assert [o.states[i] for i in range(5)] == [RUNNING, RUNNING, QUEUED] + [
        STATE_CODES["retrying"]
    ] * 2
    assert folder.batches == 1


def test_event_folder_records_attempts_hosts_notes_and_live_logs() -> None:
    o, store = Outcomes(3), LogStore()
    o.fold(segment([2], ["c"]), None, [])
    folder = EventFolder(o, store)
    folder.fold(
        events(
            calls=[[0, 2, 5.0], [2, 7, 5.0]],
            notes={"0": "worker lost 1 time"},
            logs=[[0, 1, "live\n"], [2, 1, "after the result\n"], [9, 1, "no such call\n"]],
        )
    )
    assert o.attempts[0] == 2 and o.describe(0)["host"] == "h9" and o.describe(0)["t_start"] == 5.0
    assert o.attempts[2] == 1  # call 2 has its outcome: the event does not change it
    assert folder.notes == {0: "worker lost 1 time"}
    assert store.entries(0)[0] == [(1, "live\n")] and store.entries(2)[0] == []
    assert store.entries(9) == ([], 0)


@pytest.mark.parametrize("state", ["done", "failed"])
def test_event_folder_never_makes_an_outcome(state: str) -> None:
    o = Outcomes(2)
    EventFolder(o, LogStore()).fold(events(states={state: [[0, 1]]}))
    assert o.final == 0 and not any(o.have)  # outcomes come only with results


@pytest.mark.parametrize("state", ["done", "failed"])
def test_an_ended_call_is_finishing_until_its_result_comes(state: str) -> None:
    """Issue 12: counts never say done for a call whose result has not arrived; a call
    whose result was lost with its worker's channel shows running again."""
    o = Outcomes(3)
    folder = EventFolder(o, LogStore())
    folder.fold(events(states={"running": [[0, 2]]}))
    folder.fold(events(states={state: [[0, 1]]}))
    assert o.counts[DONE] == o.counts[FAILED] == 0
    assert o.counts[FINISHING] == 2 and o.counts[RUNNING] == 1
    folder.fold(events(states={"running": [[1, 1]]}))  # run again elsewhere
    assert o.states[1] == RUNNING and o.counts[FINISHING] == 1
    o.fold(segment([0], ["v"]), None, [])
    assert o.states[0] == DONE and o.counts[DONE] == 1 and o.counts[FINISHING] == 0
    # its worker died before the result went out: finishing calls of it become lost
    folder.fold(events(calls=[[2, 1, 5.0]], states={state: [[2, 2]]}))
    assert o.states[2] == FINISHING
    assert o.mark_lost("w9") == [2] and o.counts[FINISHING] == 0 and o.counts[DONE] == 1
