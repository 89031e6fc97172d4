"""When a worker's allocation ends, and what it still takes (worker/walltime.py): pure
decisions, no broker (the real runs: tests/faults/test_walltime.py, tests/test_slurm.py)."""

from __future__ import annotations

import time

import pytest

from sif_magic.protocol import Task
from sif_magic.worker.walltime import Walltime, job_end


def task(calls: int = 2, timeout: float | None = None, only: list[int] | None = None) -> Task:
    return Task("j", 0, list(range(calls)), "r", b"f", b"a", timeout=timeout, only=only)


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_JOB_END_TIME", "SIF_MAGIC_JOB_END", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)


def test_the_end_comes_from_slurm_or_the_lifetime_whichever_is_first(monkeypatch) -> None:
    assert job_end(0, 1000.0) == (None, "")
    assert job_end(60, 1000.0) == (1060.0, "--lifetime 60")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SIF_MAGIC_JOB_END", "1030")  # what the job script read from squeue
    assert job_end(60, 1000.0) == (1030.0, "SLURM job 42")
    monkeypatch.setenv("SLURM_JOB_END_TIME", "1020")  # SLURM's own, first
    assert job_end(0, 1000.0) == (1020.0, "SLURM job 42")
    assert job_end(10, 1000.0) == (1010.0, "--lifetime 10")
    monkeypatch.setenv("SLURM_JOB_END_TIME", "Unknown")
    assert job_end(0, 1000.0) == (1030.0, "SLURM job 42")


def test_no_end_takes_everything() -> None:
    wt = Walltime(None, "", time.time(), 30)
    assert wt.deadline is None and not wt.due()
    assert wt.refuse(task(1000), 3600.0) == ""


def test_a_chunk_is_taken_only_if_it_can_finish_before_the_deadline() -> None:
    now = time.time()
    wt = Walltime(now + 100, "SLURM job 7", now - 3500, 30)  # deadline: 70 s from now
    assert 69 < wt.left() <= 70
    assert wt.refuse(task(2), 30.0) == ""  # 60 s of calls fit
    why = wt.refuse(task(3), 30.0)  # 90 s do not
    assert why.startswith("returned unstarted") and "SLURM job 7" in why and "~90 s" in why
    assert wt.refuse(task(3, only=[0, 1]), 30.0) == ""  # only what it runs counts
    # no history: a time limit bounds it, else only plentiful time takes it
    assert wt.refuse(task(2, timeout=20), None) == ""
    assert "by its time limit" in wt.refuse(task(2, timeout=50), None)
    assert "no call of this function ran here yet" in wt.refuse(task(1), None)


def test_unknown_calls_are_taken_while_half_the_life_is_left() -> None:
    now = time.time()
    fresh = Walltime(now + 60, "--lifetime 60", now, 30)  # margin: 12 s (a fifth of 60)
    assert 47 < fresh.left() <= 48
    assert fresh.refuse(task(1), None) == ""
    late = Walltime(now + 20, "--lifetime 60", now - 40, 30)
    assert late.refuse(task(1), None) != ""
    assert Walltime(now - 1, "x", now - 60, 0).due()
