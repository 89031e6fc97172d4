"""The backend registry, the Backend interface's defaults, and the workers table
(backend workers plus SLURM jobs submitted from here that have not joined yet)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sif_magic import ConfigError, Executor, backends
from sif_magic.backends import Backend, make_backend
from sif_magic.launch.slurm import JobStatus
from sif_magic.launch.slurm_rows import PendingSlurmJobs, workers_table


class Quiet(Backend):
    """A backend that runs nothing: only what the interface requires."""

    name = "quiet"

    def __init__(self, config: Any = None, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows = rows or []

    def slots(self) -> int:
        return 0

    def start_job(self, job: Any, task: Any) -> None:
        pass

    def cancel(self, job: Any) -> None:
        job.mark_cancelled()

    def workers(self) -> list[dict[str, Any]]:
        return list(self.rows)

    def close(self) -> None:
        pass


def test_built_in_backends_are_registered_by_name() -> None:
    assert backends.names()[:2] == ("local", "rabbitmq")


def test_an_unknown_backend_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'nope': use one of local, rabbitmq"):
        make_backend(SimpleNamespace(backend="nope"))  # type: ignore[arg-type]


def test_executor_with_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="nope.*'local', 'rabbitmq'"):
        Executor(backend="nope")


def test_a_registered_backend_is_made_by_name(monkeypatch) -> None:
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))
    backends.register("quiet", Quiet)
    assert "quiet" in backends.names()
    assert isinstance(make_backend(SimpleNamespace(backend="quiet")), Quiet)  # type: ignore[arg-type]


def test_the_interface_has_defaults_where_a_backend_has_nothing_to_do() -> None:
    b = Quiet(rows=[{"worker": "w", "state": "up"}])
    with pytest.raises(ConfigError, match="the quiet backend cannot re-attach jobs"):
        b.attach("0123456789ab")
    assert b.refresh() == b.workers() == [{"worker": "w", "state": "up"}]
    assert b.reachable() is True and b.release(None) is None  # type: ignore[arg-type]
    assert b.describe() == "quiet" and b.runtime == ""


def test_a_job_asks_its_backend_whether_the_broker_is_down() -> None:
    from sif_magic.job import Job

    class Down(Quiet):
        up = True

        def reachable(self) -> bool:
            return self.up

    b = Down()
    job = Job("j", 1, backend=b)
    assert job.broker_down is False
    b.up = False
    assert job.broker_down is True
    assert job.cancel() and job.cancel_requested and job.state(0) == "cancelled"


# -- SLURM rows and the workers table ----------------------------------------------------


class Squeue:
    """squeue as the rows see it: a state per job id, and how often it was run."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.runs = 0

    def __call__(self, ids: list[str]) -> list[JobStatus]:
        self.runs += 1
        return [JobStatus(i, self.states.get(i, "GONE"), reason="Priority") for i in ids]


def test_slurm_rows_show_jobs_of_the_runtime_until_their_workers_join() -> None:
    squeue = Squeue({"11": "PENDING", "12": "PENDING", "13": "PENDING"})
    pending = PendingSlurmJobs(squeue)
    pending.add("11", "ml")
    pending.add("12", "ml")
    pending.add("13", "other")
    rows = pending.rows("ml", joined={"12"})
    assert [(r["worker"], r["slurm_job"], r["runtime"]) for r in rows] == [("slurm-11", "11", "ml")]
    assert rows[0]["state"] == "SLURM pending (Priority)" and rows[0]["host"] == "(not joined yet)"


def test_slurm_rows_ask_squeue_at_most_every_two_seconds_and_forget_gone_jobs() -> None:
    squeue = Squeue({"21": "RUNNING"})
    pending = PendingSlurmJobs(squeue)
    pending.add("21", "ml")
    pending.add("22", "ml")  # unknown to squeue: finished
    assert [r["slurm_job"] for r in pending.rows("ml", set())] == ["21"]
    assert [r["slurm_job"] for r in pending.rows("ml", set())] == ["21"]
    assert squeue.runs == 1
    pending.add("23", "ml")  # a new job is asked about at once
    squeue.states["23"] = "PENDING"
    assert [r["slurm_job"] for r in pending.rows("ml", set())] == ["21", "23"]
    assert squeue.runs == 2


def test_slurm_rows_say_when_squeue_cannot_run() -> None:
    def broken(ids: list[str]) -> list[JobStatus]:
        raise ConfigError("squeue not found")

    pending = PendingSlurmJobs(broken)
    pending.add("31", "ml")
    (row,) = pending.rows("ml", set())
    assert row["state"] == "SLURM unknown (squeue not found)"


def test_workers_table_puts_backend_workers_first_then_slurm_rows(monkeypatch) -> None:
    from sif_magic.launch import slurm_rows

    pending = PendingSlurmJobs(Squeue({"41": "PENDING", "42": "RUNNING"}))
    monkeypatch.setattr(slurm_rows, "PENDING", pending)
    pending.add("41", "ml")
    pending.add("42", "ml")
    b = Quiet(rows=[{"worker": "w1", "state": "up", "slurm_job": "42"}])
    b.runtime = "ml"
    assert [r["worker"] for r in workers_table(b)] == ["w1", "slurm-41"]
    b.runtime = ""  # calls that go to no queue: no SLURM worker serves them
    assert [r["worker"] for r in workers_table(b)] == ["w1"]
