"""The pool (runner/pool.py) with real slot processes and a recording Reporter:
order, ahead-of-time sends, retries, cancel, time limits, a slot that dies."""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from sif_magic.protocol import CANCELLED, DONE, FAILED, SKIP, Task
from sif_magic.runner.chunk import Chunk
from sif_magic.runner.pool import Pool

WAIT = 60  # seconds a test waits for what must happen


class Recorder:
    """A Reporter that keeps everything it is told, and which thread told it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple] = []
        self.outcomes: dict[int, tuple[int, int, Any]] = {}  # index -> status, attempt, value
        self.chunks_done: list[tuple[str, int]] = []
        self.threads: set[str] = set()
        self.hold: threading.Event | None = None  # results wait for this when set

    def _add(self, *event: Any) -> None:
        with self.cond:
            self.threads.add(threading.current_thread().name)
            self.events.append(event)
            self.cond.notify_all()

    def started(self, chunk: Chunk, index: int, attempt: int, t: float) -> None:
        self._add("started", index, attempt)

    def retrying(self, chunk: Chunk, index: int, attempt: int, note: str) -> None:
        self._add("retrying", index, attempt, note)

    def output(self, chunk: Chunk, index: int, stream: int, data: bytes) -> None:
        self._add("output", index, stream, data)

    def progress(self, chunk: Chunk, index: int, fraction: float, message: str) -> None:
        self._add("progress", index, fraction, message)

    def results(self, chunk: Chunk, seg: Any) -> None:
        values = pickle.loads(seg.values)
        with self.cond:
            for k, index in enumerate(seg.indices):
                if seg.status[k] == SKIP:
                    continue
                error = seg.extra.get(k, (None,))[0]
                value = error if seg.status[k] == FAILED else values[k]
                assert index not in self.outcomes, f"call {index} reported twice"
                self.outcomes[index] = (seg.status[k], seg.attempts[k], value)
        self._add("results", chunk.job_id, chunk.chunk, list(seg.indices))

    def chunk_done(self, chunk: Chunk) -> None:
        with self.cond:
            self.chunks_done.append((chunk.job_id, chunk.chunk))
        self._add("chunk_done", chunk.job_id, chunk.chunk)

    def wait(self, what: str, cond: Any) -> None:
        with self.cond:
            assert self.cond.wait_for(cond, WAIT), f"waited {WAIT} s for {what}"

    def of(self, kind: str) -> list[tuple]:
        with self.cond:
            return [e for e in self.events if e[0] == kind]


def chunk(
    func: Any, items: list, job: str = "j", number: int = 0, first: int = 0, **kw: Any
) -> Chunk:
    """A chunk as the worker builds it from a task: calls ``first``, ``first + 1``, ..."""
    data = cloudpickle.dumps(func)
    task = Task(
        job_id=job,
        chunk=number,
        calls=list(range(first, first + len(items))),
        reply_to="",
        func=data,
        args=cloudpickle.dumps(items),
        func_hash=kw.pop("func_hash", str(hash(data))),
        **kw,
    )
    return Chunk.from_task(task)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def pool(rec: Recorder, tmp_path: Path):
    p = Pool(2, rec, cwd=str(tmp_path), worker="w", host="h").start()
    yield p
    p.close()


def test_every_call_reports_once_in_order_and_each_chunk_is_done_after_its_results(
    pool: Pool, rec: Recorder
) -> None:
    for k in range(6):
        pool.submit(
            chunk(lambda x: x * x, list(range(50 * k, 50 * k + 50)), number=k, first=50 * k)
        )
    rec.wait("six chunks", lambda: len(rec.chunks_done) == 6)
    assert rec.outcomes == {i: (DONE, 1, i * i) for i in range(300)}
    for k in range(6):
        segments = [e[3] for e in rec.of("results") if e[2] == k]
        indices = [i for seg in segments for i in seg]
        assert indices == list(range(50 * k, 50 * k + 50))  # a slot runs a piece in order
        assert rec.events.index(("chunk_done", "j", k)) > max(
            n for n, e in enumerate(rec.events) if e[0] == "results" and e[2] == k
        )
    assert pool.done_calls == 300 and pool.failed_calls == 0
    assert rec.threads == {"sif-pool"}  # the one thread that reports (and owns the state)


def test_submit_many_queues_each_chunk_in_order_and_front_ones_first(
    rec: Recorder, tmp_path: Path
) -> None:
    pool = Pool(1, rec, cwd=str(tmp_path)).start()
    try:
        pool.submit(chunk(time.sleep, [0.5], number=0, first=0))
        rec.wait("call 0 running", lambda: any(e[1] == 0 for e in rec.of("started")))
        pool.submit_many(
            [
                (chunk(abs, [1], number=1, first=1), False),
                (chunk(abs, [2], number=2, first=2), False),
                (chunk(abs, [3], number=3, first=3), True),  # a retry: before the others
            ]
        )
        rec.wait("four chunks", lambda: len(rec.chunks_done) == 4)
        assert [n for _, n in rec.chunks_done] == [0, 3, 1, 2]
        assert {i: rec.outcomes[i][0] for i in range(4)} == dict.fromkeys(range(4), DONE)
    finally:
        pool.close()


def test_a_quick_piece_of_the_same_job_goes_ahead_to_a_busy_slot(
    rec: Recorder, tmp_path: Path
) -> None:
    def _peek(wait: float) -> bool:
        """Whether the slot running this call has a request waiting in its pipe (its next
        piece, sent ahead) within ``wait`` seconds: the request pipe is argv[1] of the slot."""
        import select

        with open("/proc/self/cmdline", "rb") as f:
            fd = int(f.read().split(b"\0")[2])
        return bool(select.select([fd], [], [], wait)[0])

    pool = Pool(1, rec, cwd=str(tmp_path)).start()
    try:
        pool.submit(chunk(_peek, [0.0] * 20, func_hash="peek"))  # now known to be quick
        rec.wait("the first chunk", lambda: len(rec.chunks_done) == 1)
        # a call that waits for its slot's next request, then a quick piece of that job
        pool.submit(chunk(_peek, [30.0], func_hash="peek", number=1, first=20))
        pool.submit(chunk(_peek, [0.0], func_hash="peek", number=2, first=21))
        rec.wait("both", lambda: len(rec.chunks_done) == 3)
        assert rec.outcomes[20] == (DONE, 1, True)  # it came while the call ran
        # a piece of another job waits until the slot is idle
        pool.submit(chunk(_peek, [1.0], func_hash="peek", job="x", first=30))
        pool.submit(chunk(_peek, [0.0], func_hash="peek", job="y", first=31))
        rec.wait("both", lambda: len(rec.chunks_done) == 5)
        assert rec.outcomes[30] == (DONE, 1, False)
    finally:
        pool.close()


def test_a_failed_call_runs_again_and_reports_its_last_attempt(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"

    def flaky(x: int) -> int:
        if x == 1:
            with open(marker, "a") as f:
                f.write("x")
            if len(open(marker).read()) < 3:
                raise RuntimeError("not yet")
        return x

    pool.submit(chunk(flaky, [0, 1, 2], retries=2))
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert rec.outcomes == {0: (DONE, 1, 0), 1: (DONE, 3, 1), 2: (DONE, 1, 2)}
    retries = rec.of("retrying")
    assert [(e[1], e[2]) for e in retries] == [(1, 2), (1, 3)]
    assert retries[0][3] == "attempt 1 failed: RuntimeError: not yet"


def test_a_call_that_fails_every_attempt_is_reported_failed_once(pool: Pool, rec: Recorder) -> None:
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    pool.submit(chunk(boom, [5], retries=1))
    rec.wait("the chunk", lambda: rec.chunks_done)
    status, attempt, error = rec.outcomes[0]
    assert (status, attempt) == (FAILED, 2) and error["type"] == "ValueError"
    assert pool.failed_calls == 1


def test_cancel_kills_the_running_call_drops_the_queued_and_spares_the_other_job(
    rec: Recorder, tmp_path: Path
) -> None:
    pool = Pool(1, rec, cwd=str(tmp_path)).start()
    try:
        first = pool.pids
        pool.submit(chunk(time.sleep, [60, 60], job="a", number=0))
        pool.submit(chunk(time.sleep, [60], job="a", number=1, first=2))
        pool.submit(chunk(abs, [-7], job="b", number=0, first=10))
        rec.wait("call a/0 running", lambda: ("started", 0, 1) in rec.events)
        pool.cancel("a")
        rec.wait("every chunk", lambda: len(rec.chunks_done) == 3)
        assert rec.outcomes[0][0] == rec.outcomes[1][0] == rec.outcomes[2][0] == CANCELLED
        assert sorted(rec.chunks_done) == [("a", 0), ("a", 1), ("b", 0)]
        b = [e for e in rec.of("results") if e[1] == "b"]
        assert len(b) == 1 and rec.outcomes[10] == (DONE, 1, 7)  # job b ran
        # a chunk of the cancelled job that comes later never runs
        pool.submit(chunk(time.sleep, [60], job="a", number=2, first=3))
        rec.wait("the late chunk", lambda: len(rec.chunks_done) == 4)
        assert rec.outcomes[3][0] == CANCELLED
        rec.wait("a new slot", lambda: len(pool.pids) == 1 and pool.pids != first)
    finally:
        pool.close()


def test_a_call_past_its_time_limit_is_killed_and_named(pool: Pool, rec: Recorder) -> None:
    pool.submit(chunk(time.sleep, [0, 60, 0], timeout=0.3))
    rec.wait("the chunk", lambda: rec.chunks_done)
    assert rec.outcomes[0][0] == rec.outcomes[2][0] == DONE
    status, _, error = rec.outcomes[1]
    assert status == FAILED and error["type"] == "sif_magic.errors.CallTimeoutError"
    assert error["message"] == "call 1 ran past its 0.3 s time limit and was killed"


def test_a_slot_that_dies_fails_its_call_and_the_rest_run_again(pool: Pool, rec: Recorder) -> None:
    def crash(x: int) -> int:
        import os

        if x == 2:
            os._exit(3)
        return x

    before = set(pool.pids)
    pool.submit(chunk(crash, list(range(6))))
    rec.wait("the chunk", lambda: rec.chunks_done)
    status, attempt, error = rec.outcomes[2]
    assert status == FAILED and error["type"] == "sif_magic.errors.WorkerLostError"
    assert error["message"] == "call 2 did not finish: its process exited with code 3"
    assert {i: rec.outcomes[i][0] for i in (0, 1, 3, 4, 5)} == dict.fromkeys((0, 1, 3, 4, 5), DONE)
    rec.wait("a new slot", lambda: len(pool.pids) == 2 and set(pool.pids) != before)


def test_output_is_streamed_while_the_call_runs_and_completed_after(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    go = tmp_path / "go"

    def talk(x: int) -> int:
        import os
        import time

        print("before", flush=True)
        while not os.path.exists(go):
            time.sleep(0.01)
        print("after")
        return x

    pool.submit(chunk(talk, [0]))
    rec.wait("the live line", lambda: ("output", 0, 1, b"before\n") in rec.events)
    assert not rec.outcomes
    go.touch()
    rec.wait("the chunk", lambda: rec.chunks_done)
    out = b"".join(e[3] for e in rec.of("output") if e[1] == 0 and e[2] == 1)
    assert out == b"before\nafter\n"  # every byte once: live, then the rest


def test_drop_queued_forgets_matching_pieces_without_a_word(rec: Recorder, tmp_path: Path) -> None:
    go = tmp_path / "go"

    def wait_go(x: int) -> int:
        import os
        import time

        while not os.path.exists(go):
            time.sleep(0.01)
        return x

    pool = Pool(1, rec, cwd=str(tmp_path)).start()
    try:
        pool.submit(chunk(wait_go, [0], number=0))
        rec.wait("the first call running", lambda: ("started", 0, 1) in rec.events)
        for k, tag in ((1, "old"), (2, "new"), (3, "old")):
            c = chunk(wait_go, [k], number=k, first=k)
            c.tag = tag
            pool.submit(c)
        dropped: list[list] = []
        pool.drop_queued(lambda c: c.tag == "old", dropped.append)
        go.touch()
        rec.wait("chunks 0 and 2", lambda: len(rec.chunks_done) == 2)
        assert [sorted(c.chunk for c in cs) for cs in dropped] == [[1, 3]]
        assert sorted(rec.chunks_done) == [("j", 0), ("j", 2)]
        assert set(rec.outcomes) == {0, 2}
    finally:
        pool.close()


def test_close_stops_every_slot_and_removes_its_files(rec: Recorder, tmp_path: Path) -> None:
    pool = Pool(2, rec, cwd=str(tmp_path)).start()
    pids = pool.pids
    workdir = pool.workdir
    pool.submit(chunk(time.sleep, [60, 60]))
    rec.wait("a call running", lambda: rec.of("started"))
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(workdir)


def test_a_pool_that_never_started_or_is_closed_twice_closes_quietly(rec: Recorder) -> None:
    idle = Pool(1, rec)
    workdir = idle.workdir
    idle.close()
    assert not os.path.exists(workdir)
    pool = Pool(1, rec).start()
    pool.close()
    pool.close()
    assert pool.pids == []


def test_reported_progress_reaches_the_reporter_newest_only(
    pool: Pool, rec: Recorder, tmp_path: Path
) -> None:
    flag = tmp_path / "go"

    def busy(path: str) -> str:
        import os
        import time

        import sif_magic

        for k in range(20001):
            sif_magic.report(k / 40000, f"step {k}")  # ends at 0.5, "step 20000"
        while not os.path.exists(path):
            time.sleep(0.01)
        return "ok"

    pool.submit(chunk(busy, [str(flag)]))
    rec.wait("the last progress", lambda: ("progress", 0, 0.5, "step 20000") in rec.events)
    assert len(rec.of("progress")) < 20001  # read at the pool's tick, not one per report
    flag.write_text("go")
    rec.wait("the call's outcome", lambda: 0 in rec.outcomes)
    assert rec.outcomes[0] == (DONE, 1, "ok")


def test_a_chunk_submitted_as_the_pool_closes_starts_no_slot_and_runs_nothing(
    rec: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's last burst of deliveries can reach the pool after it began to close:
    it started a new slot for it (the killed one had freed its place), ran the call,
    and close() waited 10 s for a dispatcher that never finished, leaving that slot."""
    p = Pool(1, rec, cwd=str(tmp_path)).start()
    closer = threading.Thread(target=p.close)
    closer.start()
    time.sleep(0.001)  # the submit lands while the old slot dies (as a worker's can)
    p.submit(chunk(abs, [-5]))
    closer.join()
    assert p.slots == () and not rec.outcomes
    assert "did not stop" not in caplog.text
