"""Splitting a running piece (runner/pool.py, slot.py): when nothing is queued and a
slot is idle, a busy slot gives it the calls of its piece it has not started.

Real slot processes; a slow call waits for a file the test writes only once the
calls queued behind it are reported, so without the split the test cannot pass
(it would wait WAIT seconds and fail), and nothing here measures a time.
"""

from __future__ import annotations

import collections
import os
import pickle
import signal
from pathlib import Path

import pytest
import test_pool
from procs import wait_until, waits_at
from test_pool import Recorder, chunk

from sif_magic.protocol import CANCELLED, DONE, FAILED
from sif_magic.runner import slotio
from sif_magic.runner.chunk import Piece
from sif_magic.runner.pool import Pool
from sif_magic.runner.slot import Slot
from sif_magic.runner.slotproc import SlotProc

N, SLOW = 40, 3  # calls of the chunk; the one that waits
pool, rec = test_pool.pool, test_pool.rec  # the fixtures: a pool of 2 slots, its Recorder


def others_reported(rec: Recorder, slow: int = SLOW, n: int = N) -> bool:
    return all(i in rec.outcomes for i in range(n) if i != slow)


def only_the_slow_call_failed(rec: Recorder, etype: str) -> None:
    """Once the chunk is done: its slow call failed with ``etype``, every other is done."""
    rec.wait("the chunk", lambda: rec.chunks_done)
    status, _, error = rec.outcomes[SLOW]
    assert status == FAILED and error["type"] == etype
    assert all(rec.outcomes[i][0] == DONE for i in range(N) if i != SLOW)
    assert rec.chunks_done == [("j", 0)]


def test_the_calls_behind_a_slow_one_run_on_the_idle_slot(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    pool.submit(chunk(waits_at(SLOW, go), list(range(N))))
    rec.wait("the calls behind the slow one", lambda: others_reported(rec))
    assert SLOW not in rec.outcomes  # it still waits: the others did not wait for it
    go.touch()
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert rec.chunks_done == [("j", 0)]  # once, after every result (Recorder: each once)
    assert sorted(rec.outcomes) == list(range(N))
    assert all(rec.outcomes[i][:2] == (DONE, 1) and rec.outcomes[i][2][0] == i for i in range(N))
    pid = {i: rec.outcomes[i][2][1] for i in range(N)}
    # every call behind the slow one ran in the other slot, while the slow one ran
    assert all(pid[i] != pid[SLOW] for i in range(SLOW + 1, N)), pid
    assert set(pid.values()) == set(pool.pids)
    assert pool.done_calls == N


def test_retries_of_split_calls_run_and_report_their_last_attempt(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    go, marks = tmp_path / "go", tmp_path / "marks"
    marks.mkdir()
    pool.submit(chunk(waits_at(SLOW, go, marks), list(range(N)), retries=1))
    rec.wait("the calls behind the slow one", lambda: others_reported(rec))
    go.touch()
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert {i: rec.outcomes[i][:2] for i in range(N)} == dict.fromkeys(range(N), (DONE, 2))
    assert sorted(e[1] for e in rec.of("retrying")) == list(range(N))  # each retried once


def test_a_slow_call_of_a_split_chunk_times_out_alone(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    # go never comes: the slow call runs until its time limit kills it
    pool.submit(chunk(waits_at(SLOW, tmp_path / "never"), list(range(N)), timeout=5))
    only_the_slow_call_failed(rec, "sif_magic.errors.CallTimeoutError")


def test_cancel_of_a_split_chunk_settles_every_call_once(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    # two slow calls, one in each half: both slots wait, then the job is cancelled
    go = tmp_path / "never"
    f = waits_at(SLOW, go)

    def two_slow(x: int) -> tuple[int, int]:
        return f(SLOW if x in (SLOW, N - 5) else x)

    pool.submit(chunk(two_slow, list(range(N))))
    both = {("started", SLOW, 1), ("started", N - 5, 1)}  # announced while they run
    rec.wait("both slow calls running", lambda: all(e in rec.events for e in both))
    pool.cancel("j")
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert sorted(rec.outcomes) == list(range(N))
    assert rec.outcomes[SLOW][0] == CANCELLED
    assert {s for s, _, _ in rec.outcomes.values()} <= {DONE, CANCELLED}
    assert rec.chunks_done == [("j", 0)]


def test_a_slot_killed_in_a_split_chunk_loses_nothing(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    pool.submit(chunk(waits_at(SLOW, go), list(range(N))))
    rec.wait("the calls behind the slow one", lambda: others_reported(rec))
    victim = next(s for s in pool.slots if s.piece is not None)  # the one in the slow call
    os.kill(victim.pid, signal.SIGKILL)
    only_the_slow_call_failed(rec, "sif_magic.errors.WorkerLostError")


def test_a_run_that_stops_short_has_the_rest_run_again(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    """The slot's main thread raced past the end the watchdog set (slot.py): it stops
    where it reads the lowered end, says so, and the pool runs the rest."""

    def lowers_the_end(x: int) -> tuple[int, int]:
        import gc
        import os

        if x == 2:  # as if positions 3.. had been given away and the answer were lost
            slot = next(o for o in gc.get_objects() if type(o).__name__ == "Slot")
            slot.end[0] = 3
        return x, os.getpid()

    pool.submit(chunk(lowers_the_end, list(range(8)), func_hash="short"))
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert {i: rec.outcomes[i][:2] for i in range(8)} == dict.fromkeys(range(8), (DONE, 1))


def _slot(tmp_path: Path, claims: list[int]) -> tuple[Slot, int]:
    r, w = os.pipe()
    state = slotio.SharedState(str(tmp_path / "state"), create=True)
    slot = Slot.__new__(Slot)  # no watchdog thread: _give is called by hand
    from sif_magic.runner import records

    slot.records, slot.state, slot.end, slot.phase = records.Records(w), state, [10], 1
    seq = iter(claims)
    slot._claimed = lambda: next(seq)  # type: ignore[method-assign]
    return slot, r


def _answer(r: int) -> tuple:
    return slotio.read_msg(r)


def test_give_takes_the_share_of_the_calls_not_claimed(tmp_path: Path) -> None:
    slot, r = _slot(tmp_path, [3, 3])  # claimed 3: 4..9 not started, half of them go
    slot._give(7, 500)
    assert _answer(r) == ("split", 7, 7, 10) and slot.end == [7]


def test_give_moves_past_a_claim_that_raced_past_its_end(tmp_path: Path) -> None:
    slot, r = _slot(tmp_path, [3, 8, 8])  # after the end was set to 7 the claim read 8
    slot._give(7, 500)
    assert _answer(r) == ("split", 7, 9, 10) and slot.end == [9]


def test_give_answers_none_when_every_call_is_claimed(tmp_path: Path) -> None:
    slot, r = _slot(tmp_path, [9])
    slot._give(7, 500)
    assert _answer(r) == ("split", 7, 10, 10) and slot.end == [10]


def test_the_finished_message_says_where_a_run_stopped() -> None:
    from sif_magic.runner import records

    r, w = os.pipe()
    out = records.Records(w)
    out.start(1, [0, 1, 2])
    out.stopped = 2
    out.flush(final=True)
    msg = slotio.read_msg(r)
    assert msg[0] == "finished" and msg[7] == 2
    assert pickle.loads(msg[2]) == []


def test_the_local_backend_shows_which_slot_ran_each_call_of_a_split_chunk(
    tmp_path: Path,
) -> None:
    from sif_magic import Executor
    from sif_magic.job import Job

    go = tmp_path / "go"
    ex = Executor(backend="local", processes=2)
    try:
        job: Job = ex.map_job(waits_at(SLOW, go), range(N), chunksize=N)  # one chunk
        others = [i for i in range(N) if i != SLOW]
        wait_until(lambda: all(job.describe_call(i)["state"] == "done" for i in others),
                   60, "the calls behind the slow one")  # fmt: skip
        # (shown running by an event batch, up to ~0.2 s after it started: the calls
        # split off may all be done before that)
        wait_until(lambda: job.describe_call(SLOW)["state"] == "running", 60, "the slow call")
        go.touch()
        values = job.results(timeout=60)
        assert [x for x, _ in values] == list(range(N)) and job.state_counts()["done"] == N
        pid = {i: job.describe_call(i)["pid"] for i in range(N)}
        assert pid == {i: values[i][1] for i in range(N)}  # what describe_call says is right
        assert all(pid[i] != pid[SLOW] for i in range(SLOW + 1, N))
        assert all(job.describe_call(i)["attempt"] == 1 for i in range(N))
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def test_one_call_chunks_go_ahead_together_and_come_back_from_behind_a_slow_one(
    pool: Pool, rec: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    send_ahead = SlotProc.send_ahead

    def spy(self: SlotProc, pieces: list) -> None:
        batches.append(len(pieces))
        send_ahead(self, pieces)

    monkeypatch.setattr(SlotProc, "send_ahead", spy)
    go = tmp_path / "go"
    f = waits_at(SLOW, go)
    pool.submit(chunk(f, [1000, 1001], job="warm", first=1000))  # its calls are quick
    rec.wait("the warm-up", lambda: rec.chunks_done)
    # one-call chunks of one job, the slow call first: one slot takes it, the pieces
    # sent ahead to it come back (in halves) to the other slot, which runs them all
    chunks = [chunk(f, [x], number=x, first=x) for x in [SLOW, *range(SLOW + 1, N)]]
    pool.submit_many([(c, False) for c in chunks])
    rec.wait(
        "the calls behind the slow one", lambda: all(i in rec.outcomes for i in range(SLOW + 1, N))
    )
    assert SLOW not in rec.outcomes
    go.touch()
    rec.wait("every chunk", lambda: len(rec.chunks_done) == 1 + N - SLOW)
    assert max(batches) > 1  # several pieces in one request
    assert {i: rec.outcomes[i][:2] for i in range(SLOW, N)} == dict.fromkeys(
        range(SLOW, N), (DONE, 1)
    )
    assert all(rec.outcomes[i][2][0] == i for i in range(SLOW, N))
    assert sorted(rec.chunks_done) == sorted([("warm", 0)] + [("j", x) for x in range(SLOW, N)])
    assert pool.done_calls == 2 + N - SLOW


def test_runs_sent_ahead_are_given_back_from_the_first_not_started(tmp_path: Path) -> None:
    slot, r = _slot(tmp_path, [])
    slot.skip, slot.ctl_fd = set(), -1
    slot.records.run_id = 5  # running run 5; the parent sent up to run 9
    slot.wanted = [(4, slotio.WHOLE, 9)]  # asked from run 4: 6..9 come back
    slot._requests(read=False)
    assert _answer(r) == ("split", 6, 0, -1) and slot.skip == {6, 7, 8, 9}
    slot.wanted = [(5, slotio.WHOLE, 5)]  # run 5 only: it started, nothing comes back
    slot._requests(read=False)
    assert _answer(r) == ("split", 5, -1, -1) and slot.skip == {6, 7, 8, 9}


def test_a_late_none_to_an_older_request_leaves_the_pending_one_alone(
    rec: Recorder, tmp_path: Path
) -> None:
    """The slot answers "none" to a request for a run that ended meanwhile (its watchdog
    found it between runs); that answer may come after the parent asked the next run
    for calls for two idle slots. Those calls, when they come, still go in two pieces
    (one per idle slot), and the request stays pending until its own answer."""
    p = Pool(2, rec, cwd=str(tmp_path))  # not started: this thread is its dispatcher
    try:
        c = chunk(lambda x: x, list(range(10)))
        s = SlotProc.__new__(SlotProc)  # the parent's side only: what _on_split reads
        s.n, s.ahead, s.giving_back = 0, collections.deque(), False
        s.piece, s.run_id = Piece(c, range(10), [1] * 10), 5
        s.asked, s.asked_for = 5, 2  # asked run 5 for calls for 2 idle slots
        p._on_split(s, 4, 7, 7)  # the late "none" for run 4
        assert (s.asked, s.asked_for) == (5, 2)
        p._dispatch = lambda split=True: None  # type: ignore[method-assign]  # no slots here
        p._on_split(s, 5, 6, 10)  # run 5 gives away positions 6..9
        assert [list(q.positions) for q in p.queue] == [[6, 7], [8, 9]]
        assert list(s.piece.positions) == list(range(6)) and (s.asked, s.asked_for) == (0, 0)
    finally:
        p.close()
