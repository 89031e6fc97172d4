"""Big arrays under the message limit go through the spill directory when every worker
of the runtime says it sees it, inline otherwise (issue 14 part 3, issue 16 item 3):
real RabbitMQ workers, the heartbeat's ``spill`` field, the slot's fallback when a
file cannot be written, files removed once read, a changed file refused before
anything in it is unpickled (``runner/spill.py``)."""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from segments import segment
from test_arrays import kill_while_stalled, stalls_first
from test_slot import SlotUnderTest

from sif_magic import Executor
from sif_magic.job import Job
from sif_magic.protocol import Heartbeat
from sif_magic.runner import spill
from sif_magic.runner.slotio import DONE, write_msg

MB = 1 << 20


def listing(a):  # noqa: ANN001, ANN201 - the call sees its input and the job's spill files
    import os

    d = os.environ.get("SIF_MAGIC_SPILL_DIR", "")
    names = sorted(os.listdir(d)) if d and os.path.isdir(d) else []
    return a + 1, [n.split("-")[0] for n in names]


def _executor(broker_url: str, runtime: str, key_file: Path, **kw) -> Executor:  # noqa: ANN003
    return Executor(
        backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file), **kw
    )


def _wait_heartbeat(ex: Executor) -> list[dict]:
    deadline = time.time() + 20
    while not ex.backend.live_workers() and time.time() < deadline:
        time.sleep(0.1)
    return ex.backend.live_workers()


@pytest.fixture
def shared(broker_url: str, runtime: str, workers, key_file: Path) -> Iterator[Executor]:  # noqa: ANN001
    """A worker of 2 processes that sees our spill root (the same SIF_MAGIC_HOME), and
    an executor that heard its heartbeat."""
    workers.start(runtime, processes=2)
    ex = _executor(broker_url, runtime, key_file)
    try:
        _wait_heartbeat(ex)
        yield ex
    finally:
        ex.shutdown(cancel_futures=True)


def test_arrays_go_through_the_shared_directory_and_its_files_go_once_read(
    shared: Executor,
) -> None:
    ex = shared
    (w,) = ex.backend.live_workers()
    root = spill.default_dir()
    assert w["spill"] == [root, spill.root_id(root)]
    arrays = [np.full(MB // 4, float(i)) for i in range(6)]  # 2 MB each: under the limit
    job = ex.map_job(listing, arrays, chunksize=3)
    assert job.wait(120)
    blocks = job._outcomes._blocks
    assert blocks and all(spill.is_reference(b.values) for b in blocks)  # results by file
    assert sorted(os.listdir(job.spill_dir)) and all(
        n.startswith("result-") for n in os.listdir(job.spill_dir)
    )  # the inputs went when the job ended; the results wait to be read
    out = job.results()
    for i, (plus, files) in enumerate(out):
        assert plus.shape == (MB // 4,) and plus[0] == plus[-1] == i + 1
        assert plus.flags.writeable
        assert files.count("input") == 2  # both chunks' inputs came by file
    assert not os.path.exists(job.spill_dir)  # read: gone
    small = ex.map_job(listing, [np.zeros(10)]).results(timeout=60)
    assert small[0][1] == []  # small arrays stay in the message


def test_a_worker_that_cannot_see_the_directory_still_gets_the_arrays(
    broker_url: str, runtime: str, workers, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    monkeypatch.setenv("SIF_MAGIC_SPILL_DIR", "/proc/sif-no-such-dir")  # the worker's root
    workers.start(runtime, processes=1)
    monkeypatch.delenv("SIF_MAGIC_SPILL_DIR")
    ex = _executor(broker_url, runtime, key_file)
    try:
        (w,) = _wait_heartbeat(ex)
        assert w["spill"] == []  # it said it sees none
        arrays = [np.full(MB // 4, float(i)) for i in range(4)]
        job = ex.map_job(listing, arrays, chunksize=2)
        out = job.results(timeout=120)
        assert [(p[0], files) for p, files in out] == [(i + 1.0, []) for i in range(4)]
        assert not os.path.exists(job.spill_dir)  # nothing was written there
    finally:
        ex.shutdown(cancel_futures=True)


class _Planted:
    """Unpickling it creates a file: proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_an_input_file_changed_on_disk_is_refused_before_unpickling(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    (proc,) = workers.start(runtime, processes=1)
    ex = _executor(broker_url, runtime, key_file)
    try:
        _wait_heartbeat(ex)
        os.kill(proc.pid, signal.SIGSTOP)  # it takes nothing while the file is changed
        try:
            job = ex.map_job(listing, [np.zeros(MB // 4)])
            deadline = time.time() + 20
            names: list[str] = []
            while time.time() < deadline and not names:  # written whole (renamed from .part)
                time.sleep(0.01)
                if os.path.isdir(job.spill_dir):
                    names = [n for n in os.listdir(job.spill_dir) if not n.endswith(".part")]
            (name,) = names
            path = Path(job.spill_dir) / name
            planted = tmp_path / "unpickled"
            evil = pickle.dumps([_Planted(str(planted))], protocol=5)
            data = bytearray(path.read_bytes())
            data[: len(evil)] = evil  # same size: only the hash can tell
            path.write_bytes(bytes(data))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        (err,) = job.results(timeout=120, errors="collect")
        assert type(err).__name__ == "SerializationError", err
        assert "changed after it was spilled" in str(err)
        assert not planted.exists()
    finally:
        ex.shutdown(cancel_futures=True)


def _spilled_job(tmp_path: Path, values: list) -> tuple[Job, Any, Path]:
    """A job of one call, and a result segment whose values are in a spill file."""
    ref = spill.write(str(tmp_path / "job"), "result", pickle.dumps(values, protocol=5))
    seg = segment([0], [None])
    seg.values = ref
    job = Job("j", 1, spill_dir=str(tmp_path / "job"))
    return job, seg, next((tmp_path / "job").iterdir())


def test_result_files_are_read_as_they_arrive_and_a_changed_one_is_refused(
    tmp_path: Path,
) -> None:
    job, seg, path = _spilled_job(tmp_path / "a", [b"value"])
    job.apply_segments([seg])
    deadline = time.time() + 20
    while job._outcomes._blocks[0]._loaded is None and time.time() < deadline:
        time.sleep(0.01)
    path.unlink()  # read and checked already: the values are here
    assert job.results() == [b"value"]
    planted = tmp_path / "unpickled"
    job, seg, path = _spilled_job(tmp_path / "b", [b"x" * 100])
    evil = pickle.dumps([_Planted(str(planted))], protocol=5)
    data = bytearray(path.read_bytes())
    data[: len(evil)] = evil
    path.write_bytes(bytes(data))  # before it arrives: the read-ahead refuses it too
    job.apply_segments([seg])
    with pytest.raises(spill.SpillError, match="changed after it was spilled"):
        job.results()
    assert not planted.exists()


def test_results_whose_file_cannot_be_written_come_back_inline(tmp_path: Path) -> None:
    slot = SlotUnderTest(tmp_path)
    env = {
        spill.ENV_DIR: "/proc/sif-no-such-dir/job",
        spill.ENV_OVER: str(64 * MB),
        spill.ENV_ARRAYS: str(MB),
    }
    args = pickle.dumps([3 * MB], protocol=5)
    try:
        write_msg(
            slot.req_w,
            ("run", 1, "h", cloudpickle.dumps(bytearray), args, [0], [7], [1], False, env, []),
        )
        msgs = [slot.read()]
        while msgs[-1][0] != "finished":
            msgs.append(slot.read())
    finally:
        slot.proc.kill()
        slot.proc.wait()
    (msg,) = [m for m in msgs if m[0] in ("results", "finished") and m[3]]  # the call's
    _, _, values, n, _, special, oob = msg[:7]  # ("finished" adds where a run stopped)
    assert n == 1 and special.get(0, [DONE])[0] == DONE
    assert not spill.is_reference(values)  # inline: the file only spared the broker
    (value,) = pickle.loads(values, buffers=oob)
    assert len(value) == 3 * MB


def test_a_spill_root_has_one_id_and_an_unusable_one_none(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    first = spill.root_id(root)
    assert len(first) == 32 and spill.root_id(root) == first  # made once, then read
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    assert spill.root_id("/proc/sif-no-such-dir") == ""
    hb = Heartbeat("w", "h", 1, "rt", 2, 0, "3.11", "3.1", "0", 1.0)
    assert b'"spill"' not in hb.encode()  # absent when unset: the bytes of before
    seen = Heartbeat("w", "h", 1, "rt", 2, 0, "3.11", "3.1", "0", 1.0, spill=[root, first])
    assert Heartbeat.decode(seen.encode()).spill == [root, first]


def plus_one(a):  # noqa: ANN001, ANN201
    return a + 1


def test_a_pipeline_sends_its_upstream_arrays_on_by_file(shared: Executor) -> None:
    first = shared.map_job(plus_one, [np.full(MB // 4, float(i)) for i in range(4)], chunksize=2)
    second = shared.map_job(listing, first, chunksize=2)
    out = second.results(timeout=120)
    assert [p[0] for p, _ in out] == [i + 2.0 for i in range(4)]
    assert all("input" in files for _, files in out)  # the upstream values went by file
    first.results()
    assert not os.path.exists(second.spill_dir) and not os.path.exists(first.spill_dir)


def test_a_chunk_of_arrays_is_written_when_it_is_sent_and_inline_if_it_cannot_be(
    tmp_path: Path,
) -> None:
    from sif_magic._serialize import make_chunks

    items = [np.full(MB // 8, float(i)) for i in range(4)]  # 1 MB each
    job_dir = tmp_path / "job"
    chunks = make_chunks(items, 2, 64 * MB, 1000, None, str(job_dir), arrays_over=MB)
    assert [list(c.calls) for c in chunks] == [[0, 1], [2, 3]]
    assert not job_dir.exists()  # nothing written before the chunks are sent
    args, buffers = chunks[0].sendable()
    assert spill.is_reference(args) and buffers == []
    assert chunks[0].sendable() == (args, [])  # written once
    assert len(list(job_dir.iterdir())) == 1 and chunks[0].payload() == len(args)
    blob, bufs = spill.load_parts(args)
    assert [a[0] for a in pickle.loads(blob, buffers=bufs)] == [0.0, 1.0]
    small = make_chunks([np.zeros(10)], 1, 64 * MB, 1000, None, str(job_dir), arrays_over=MB)
    assert not spill.is_reference(small[0].sendable()[0])  # under the threshold: inline
    bad = make_chunks(items[:1], 1, 64 * MB, 1000, None, "/proc/sif-no-dir/job", arrays_over=MB)
    args, buffers = bad[0].sendable()
    assert not spill.is_reference(args) and len(buffers) == 1  # no file: in the message


def test_map_resolves_futures_of_spilled_values_and_removes_each_file_once_read(
    shared: Executor,
) -> None:
    arrays = [np.full(MB // 4, float(i)) for i in range(6)]
    out = list(shared.map(plus_one, arrays, timeout=120))  # futures, no results()
    assert [a[0] for a in out] == [i + 1.0 for i in range(6)]
    (job,) = shared.jobs.values()
    assert job.spill_dir and os.path.isdir(job.spill_dir)  # it did go by file
    assert os.listdir(job.spill_dir) == []  # each file went once its values were read


def test_spilled_results_are_kept_by_resume_and_come_back_from_the_cache(
    shared: Executor, tmp_path: Path
) -> None:
    shared.config.cache_dir = str(tmp_path / "cache")
    arrays = [np.full(MB // 4, float(i)) for i in range(4)]
    first = shared.map_job(plus_one, arrays, chunksize=2, resume=True)
    got = [f.result(timeout=120) for f in first.futures]  # read by the read-ahead thread
    assert [a[0] for a in got] == [1.0, 2.0, 3.0, 4.0]
    assert first._outcomes._blocks and all(b.spilled for b in first._outcomes._blocks)
    again = shared.map_job(plus_one, arrays, chunksize=2, resume=True)
    assert again.reused == 4  # every result was kept, though its file went
    back = again.results(timeout=60)
    assert all(np.array_equal(a + 1, b) and b.flags.writeable for a, b in zip(arrays, back))


def stalls_first_listing(mark: str):  # noqa: ANN201
    """As ``stalls_first``, returning also the input files of the job the call sees."""
    stalled = stalls_first(mark)

    def call(x):  # noqa: ANN001, ANN202
        import os

        out = stalled(x)
        d = os.environ.get("SIF_MAGIC_SPILL_DIR", "")
        return out, sorted(n for n in os.listdir(d) if n.startswith("input"))

    return call


def test_a_redelivered_chunk_that_came_by_file_is_split_and_runs_again(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    (victim,) = workers.start(runtime, processes=1)
    mark = str(tmp_path / "running")
    items = [np.full(MB // 8, float(i)) for i in range(4)]  # 1 MB each, one chunk
    ex = _executor(broker_url, runtime, key_file)
    try:
        _wait_heartbeat(ex)
        job = ex.map_job(stalls_first_listing(mark), items, chunksize=4)
        wait_file = time.monotonic() + 60
        while not os.path.exists(mark) and time.monotonic() < wait_file:
            time.sleep(0.05)
        assert [n.split("-")[0] for n in os.listdir(job.spill_dir)] == ["input"]  # by file
        second = kill_while_stalled(mark, victim, workers, runtime)
        out = job.results(timeout=120)
    finally:
        ex.shutdown(cancel_futures=True)
    assert all(np.array_equal(a * 3, b) for a, (b, _) in zip(items, out))
    assert job.describe_call(0)["attempt"] >= 2  # it did come back
    assert "could not re-pack" not in Path(second.log_path).read_text()
    # the chunk's file and one per call it was split into: no array went through the broker
    assert len(out[0][1]) == 1 + 4, out[0][1]


def test_a_chunk_whose_inputs_are_in_a_file_counts_the_file(tmp_path: Path) -> None:
    """What a split or a send-ahead weighs: a piece given to another slot makes it read
    the whole file, so a 3 MB file is 3 MB, not the 100-byte reference."""
    from sif_magic.protocol import Task
    from sif_magic.runner.chunk import Chunk

    data = pickle.dumps([bytes(3 * MB)], protocol=5)
    ref = spill.write(str(tmp_path), "in", data)
    task = Task(job_id="j", chunk=0, calls=[0], reply_to="", func=b"f", args=ref, func_hash="h")
    assert len(ref) < 1000 and Chunk.from_task(task).nbytes >= len(data)


def test_a_result_file_of_duplicates_only_is_not_read_ahead(tmp_path: Path) -> None:
    """A segment all of whose calls already have a result (a redelivered chunk run
    again) is dropped: its file is not read and hashed for nothing."""
    from segments import segment

    from sif_magic.job.outcomes import Outcomes

    o = Outcomes(2)
    first, again = segment([0, 1], [1, 2]), segment([0, 1], [1, 2])
    for seg in (first, again):
        seg.values = spill.write(str(tmp_path), "out", seg.values)
    o.fold(first, [], [])
    assert len(o.to_read) == 1
    o.to_read.clear()
    o.fold(again, [], [])  # call by call: both duplicates
    assert o.to_read == [] and o.duplicates == 2


def test_done_callbacks_run_without_the_job_lock_and_may_ask_the_job(shared: Executor) -> None:
    """A future's done callback (run by the read-ahead thread for values read from spill
    files) and the job's own may wait for another thread that asks the job: no deadlock,
    because no user code runs while the job's lock is held."""
    import threading

    job = shared.map_job(plus_one, [np.full(MB // 4, float(i)) for i in range(4)], chunksize=2)
    answered: list[str] = []

    def ask_from_elsewhere(_: Any) -> None:  # waits for a thread that needs the job's lock
        t = threading.Thread(target=lambda: answered.append(job.describe_call(0)["state"]))
        t.start()
        t.join(30)
        if t.is_alive():
            answered.append("blocked")

    for f in job.futures:
        f.add_done_callback(ask_from_elsewhere)
    job.add_done_callback(ask_from_elsewhere)
    got = [f.result(timeout=120) for f in job.futures]
    assert job.wait(120)
    deadline = time.time() + 60  # the job's callback runs after its waiters may wake
    while len(answered) < 5 and time.time() < deadline:
        time.sleep(0.05)
    assert [a[0] for a in got] == [1.0, 2.0, 3.0, 4.0]
    assert job._outcomes._blocks and all(b.spilled for b in job._outcomes._blocks)
    assert len(answered) == 5 and "blocked" not in answered  # each callback was answered


def waits_for(path: str):  # noqa: ANN201 - a call that waits until ``path`` exists
    def call(a):  # noqa: ANN001, ANN202
        import os
        import time

        deadline = time.time() + 120
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        return float(a[0]) + 1

    return call


def start_elsewhere(workers, runtime: str, tmp_path: Path, mp: pytest.MonkeyPatch, **kw):  # noqa: ANN001, ANN003, ANN201
    """A worker on another filesystem: in its own mount namespace, a fresh tmpfs covers
    the spill root (the same path, other files: it gives that root another id)."""
    import shutil
    import sys

    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to give a worker its own mounts")
    wrapper = tmp_path / "python-elsewhere"
    ns = "-m" if os.geteuid() == 0 else "-U -r -m"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec unshare {ns} sh -c \'mount -t tmpfs none "$0" && exec "$@"\' '
        f'"{spill.default_dir()}" "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o700)
    with mp.context() as m:
        m.setattr(sys, "executable", str(wrapper))
        return workers.start(runtime, **kw)


def _spilled_inputs_queued(job: Job, n: int) -> None:
    deadline = time.time() + 60
    while len(job.spilled_calls) < n and time.time() < deadline:
        time.sleep(0.05)
    assert sorted(job.spilled_calls) == list(range(n))  # every chunk's inputs went by file


@pytest.fixture
def one_seeing(broker_url: str, runtime: str, workers, key_file: Path):  # noqa: ANN001, ANN201
    """A worker of one process that sees our spill root, and an executor that heard it."""
    (proc,) = workers.start(runtime, processes=1)
    ex = _executor(broker_url, runtime, key_file)
    try:
        _wait_heartbeat(ex)
        yield proc, ex
    finally:
        ex.shutdown(cancel_futures=True)


def _gated_spilled_job(ex: Executor, go: Path, n: int) -> Job:
    """``n`` calls, each a chunk whose 1 MB array went by file, that wait for ``go``."""
    job = ex.map_job(waits_for(str(go)), [np.full(MB // 8, float(i)) for i in range(n)])
    _spilled_inputs_queued(job, n)
    return job


def test_a_late_worker_that_cannot_see_the_directory_leaves_spilled_calls_to_one_that_can(
    one_seeing, runtime: str, workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    seeing, ex = one_seeing
    go = tmp_path / "go"
    try:
        job = _gated_spilled_job(ex, go, 12)
        (late,) = start_elsewhere(workers, runtime, tmp_path, monkeypatch, processes=2)
        deadline = time.time() + 60  # the late worker took some and said why it gave them back
        while time.time() < deadline and "cannot read" not in Path(late.log_path).read_text():
            time.sleep(0.1)
        notes: list[str] = []
        while time.time() < deadline and not any(notes):  # its note reaches the job's view
            time.sleep(0.1)
            notes = [job.describe_call(i)["note"] for i in range(12)]
        go.touch()
        out = job.results(timeout=300)
    finally:
        go.touch()
    assert out == [i + 1.0 for i in range(12)]  # none failed: all ran where the files are
    log = Path(late.log_path).read_text()
    assert "cannot read" in log and "SIF_MAGIC_SPILL_DIR=" in log and "spill_arrays_mb=0" in log
    assert any("cannot read the job's spill_dir" in n for n in notes), notes
    assert seeing.poll() is None


def test_spilled_calls_fail_clearly_once_no_live_worker_sees_the_directory(
    one_seeing, runtime: str, workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    seeing, ex = one_seeing
    go = tmp_path / "go"
    try:
        job = _gated_spilled_job(ex, go, 6)
        seeing.terminate()  # it hands back what it holds and says goodbye
        seeing.wait(60)
        start_elsewhere(workers, runtime, tmp_path, monkeypatch, processes=1)
        go.touch()
        assert job.wait(120)  # it does not wait for ever for a worker that sees the files
    finally:
        go.touch()
    errors = job.results(errors="collect")
    done = [e for e in errors if not isinstance(e, BaseException)]
    failed = [e for e in errors if isinstance(e, BaseException)]
    assert failed and len(done) + len(failed) == 6  # (a call may have ended before the stop)
    for e in failed:
        assert type(e).__name__ == "ConfigError", e
        assert spill.default_dir() in str(e) and "spill_arrays_mb=0" in str(e)


def slow_sum(a):  # noqa: ANN001, ANN201 - runs longer than spillwatch.GRACE
    import time

    time.sleep(12)
    return float(a.sum())


def test_a_worker_with_another_spill_root_on_the_same_filesystem_runs_spilled_calls(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    """Its heartbeat names another root, but it reads the job's files: its call runs to
    the end, not failed after GRACE as if no worker saw them (an input over the message
    limit spills even with spill_arrays_mb=0)."""
    monkeypatch.setenv("SIF_MAGIC_SPILL_DIR", str(tmp_path / "worker_root"))
    workers.start(runtime, processes=1)
    monkeypatch.delenv("SIF_MAGIC_SPILL_DIR")
    ex = _executor(
        broker_url, runtime, key_file, spill_dir=str(tmp_path / "client_root"),
        max_message_mb=2, spill_arrays_mb=0,
    )  # fmt: skip
    try:
        (w,) = _wait_heartbeat(ex)
        assert w["spill"][0] == str(tmp_path / "worker_root")  # not the client's root
        job = ex.map_job(slow_sum, [np.ones(3 * MB // 8)])
        (out,) = job.results(timeout=120, errors="collect")
    finally:
        ex.shutdown(cancel_futures=True)
    assert job.spilled_calls == [0]  # its input went by file
    assert out == 3 * MB // 8, out


def test_a_job_that_waits_longer_than_result_ttl_keeps_its_input_files(
    broker_url: str, runtime: str, workers, key_file: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    """The sweep of old spill folders (at a job's start, in any kernel) spares the folder
    of a job a client still follows, however old its files are."""
    workers.start(runtime, processes=1)
    ttl = 8.0  # the kernel marks its jobs' folders every ttl / 4 s
    ex = _executor(broker_url, runtime, key_file, result_ttl=ttl)
    go = tmp_path / "go"
    try:
        _wait_heartbeat(ex)
        job = _gated_spilled_job(ex, go, 3)  # the first runs; the others' inputs wait
        day_ago = time.time() - 86400
        os.utime(job.spill_dir, (day_ago, day_ago))  # as if it had waited a day
        deadline = time.time() + 4 * ttl
        while os.stat(job.spill_dir).st_mtime < time.time() - ttl and time.time() < deadline:
            time.sleep(0.2)
        spill._swept.clear()  # another kernel's sweep, due now
        spill.sweep(os.path.dirname(job.spill_dir), ttl)
        go.touch()
        out = job.results(timeout=120)
    finally:
        go.touch()
        ex.shutdown(cancel_futures=True)
    assert out == [1.0, 2.0, 3.0]  # their inputs were still there


def test_a_lost_input_file_in_a_directory_the_worker_sees_fails_its_call_saying_so(
    one_seeing, tmp_path: Path
) -> None:  # noqa: ANN001
    """Not handed back for ever: a worker that has the client's spill root (path and id)
    sees that the file is missing, not that the directory is elsewhere."""
    seeing, ex = one_seeing
    os.kill(seeing.pid, signal.SIGSTOP)  # it takes nothing while the file goes
    try:
        job = _gated_spilled_job(ex, tmp_path / "go", 1)
        spill.remove(job.spill_dir, "input")
    finally:
        os.kill(seeing.pid, signal.SIGCONT)
    (err,) = job.results(timeout=120, errors="collect")
    assert type(err).__name__ == "SerializationError", err
    assert "cannot be read" in str(err) and "No such file" in str(err)
