"""Inputs and results over the message limit go through spill_dir (issue 14, part 3):
real RabbitMQ workers with the default limit, the slot reading a reference it cannot
follow, and the files' checks and cleanup (``runner/spill.py``)."""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path

import cloudpickle
import pytest
from test_slot import SlotUnderTest

from sif_magic import Executor
from sif_magic.runner import spill
from sif_magic.runner.slotio import FAILED, write_msg

MB = 1024 * 1024


@pytest.fixture
def rabbit(broker_url: str, runtime: str, workers, tmp_path: Path):  # noqa: ANN001, ANN201
    workers.start(runtime, processes=1)
    spill_root = tmp_path / "spill"
    ex = Executor(
        backend="rabbitmq", amqp_url=broker_url, runtime=runtime, spill_dir=str(spill_root)
    )
    yield ex, spill_root
    ex.shutdown(cancel_futures=True)


def test_a_100_mb_input_spills_and_its_files_go_afterwards(rabbit) -> None:  # noqa: ANN001
    ex, root = rabbit
    assert ex.config.max_message_mb == 64  # the default limit
    big = bytes(range(256)) * (100 * MB // 256)

    def digest(data: bytes) -> tuple[int, str, list[str]]:
        import hashlib
        import os

        spilled = sorted(os.listdir(os.environ["SIF_MAGIC_SPILL_DIR"]))
        return len(data), hashlib.sha256(data).hexdigest(), spilled

    job = ex.map_job(digest, [b"small", big])
    small, large = job.results(timeout=300)
    assert small[:2] == (5, hashlib.sha256(b"small").hexdigest())
    assert large[:2] == (100 * MB, hashlib.sha256(big).hexdigest())
    assert [name.split("-")[0] for name in large[2]] == ["input"]  # it went by file
    assert job.spill_dir == str(root / job.job_id)
    assert not os.path.exists(job.spill_dir)  # read: gone


def test_a_result_over_the_limit_comes_back_through_a_file(rabbit) -> None:  # noqa: ANN001
    ex, root = rabbit
    ex.config.max_message_mb = 8
    job = ex.map_job(lambda n: b"r" * n, [10, 12 * MB])
    seen = []
    while not job.done():  # the result's file, while it waits to be read
        seen = [p.name.split("-")[0] for p in (root / job.job_id).glob("*")] or seen
        time.sleep(0.05)
    seen = [p.name.split("-")[0] for p in (root / job.job_id).glob("*")] or seen
    assert seen == ["result"]
    assert [len(v) for v in job.results(timeout=120)] == [10, 12 * MB]
    assert not (root / job.job_id).exists()


def test_a_reference_the_worker_cannot_follow_says_what_to_set(tmp_path: Path) -> None:
    ref = spill.write(str(tmp_path / "job"), "input", pickle.dumps([1, 2]))
    spill.remove(str(tmp_path / "job"))  # as if the worker saw another filesystem
    slot = SlotUnderTest(tmp_path)
    try:
        write_msg(
            slot.req_w,
            ("run", 1, "h", cloudpickle.dumps(len), ref, [0, 1], [7, 8], [1, 1], False, {}, []),
        )
        msg = slot.read()
        while msg[0] != "finished":
            msg = slot.read()
    finally:
        slot.proc.kill()
        slot.proc.wait()
    special = msg[5]
    assert special[0][0] == special[1][0] == FAILED
    error = special[0][1]
    assert error["type"] == "sif_magic.errors.SerializationError"  # arrives as ours
    assert f"{tmp_path / 'job'}/input-" in error["message"]
    assert "cannot be read on" in error["message"]
    assert "%sif_config spill_dir=/shared/dir" in error["message"]


def test_a_changed_file_is_refused_and_old_directories_are_swept(tmp_path: Path) -> None:
    ref = spill.write(str(tmp_path / "a"), "input", b"payload")
    assert bytes(spill.load_parts(ref)[0]) == b"payload" and spill.load_parts(ref)[1] == []
    assert spill.load_parts(b"plain") == (b"plain", ())
    (path,) = (tmp_path / "a").iterdir()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "a").stat().st_mode & 0o777) == "0o700"
    path.write_bytes(b"PAYLOAD")
    with pytest.raises(spill.SpillError, match="changed after it was spilled"):
        spill.load_parts(ref)
    (tmp_path / "b").mkdir()
    os.utime(tmp_path / "a", (time.time() - 100, time.time() - 100))
    spill.sweep(str(tmp_path), older_than=50)
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    # a job's start sweeps: a process lists the root at most every SWEEP_EVERY seconds
    os.utime(tmp_path / "b", (time.time() - 100, time.time() - 100))
    spill.sweep(str(tmp_path), older_than=50)
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
