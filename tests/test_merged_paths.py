"""Where features written apart meet: each test failed before its fix (a review of the
merged branches showed it on the machine's RabbitMQ), and passes now.

- a task handed back for a worker with the GPUs it asks for runs (it was refused as a
  replay by the worker that handed it back, its call never ran);
- claims on quorum queues end without breaking the connection (a delete with
  ``if_empty`` is a connection error there);
- a pipeline's inputs of a local class reach its workers (the upstream job's shipped
  modules travel again);
- resume keeps a spilled result's values, and an edited local module makes new keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest
from userfolder import write_folder
from workers import WorkerProcs

from sif_magic import Executor

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this file


def _devices(x: int) -> str:
    import os
    import time

    time.sleep(0.2)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def _slow(x: int) -> int:
    import time

    time.sleep(2.5)
    return x


def _big(x: int) -> bytes:
    return bytes([x]) * (3 << 20)


def _make_point(x: int) -> object:
    import ucpkg

    return ucpkg.Point(x, x)


def _get_x(p: object) -> int:
    return p.x + 1  # type: ignore[attr-defined]


@pytest.fixture
def rabbit_ex(broker_url: str, runtime: str, key_file: Path):  # noqa: ANN201
    made: list[Executor] = []

    def make(**settings: object) -> Executor:
        ex = Executor(
            backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file),
            **settings,
        )  # fmt: skip
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(wait=False, cancel_futures=True)


def test_tasks_handed_back_for_gpus_run_on_the_worker_that_has_them(
    workers, rabbit_ex, runtime: str
) -> None:
    workers.start(runtime, processes=1, args=("--gpus", "0", "--cpus", "2"))
    workers.start(runtime, processes=1, args=("--gpus", "0,1", "--cpus", "2"))
    job = rabbit_ex().map_job(_devices, range(12), chunksize=1, resources={"gpus": 2})
    assert job.results(timeout=120) == ["0,1"] * 12
    assert "a replay" not in workers.logs()


def test_claims_on_quorum_queues_end_without_breaking_the_connection(
    broker_url: str, runtime: str, tmp_path: Path
) -> None:
    from queues import delete_task_queues

    from sif_magic import protocol
    from sif_magic._keys import load_key

    key_file = tmp_path / "quorum-key"  # a scope of its own: its queues are all quorum
    scope = protocol.key_id(load_key(key_file=str(key_file)))
    procs = WorkerProcs(broker_url, key_file, tmp_path, queue_type="quorum")
    ex = Executor(
        backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file),
        queue_type="quorum",
    )  # fmt: skip
    try:
        procs.start(runtime, processes=2, args=("--claim-after", "0.5", "--lease", "10"))
        job = ex.map_job(_slow, range(6), chunksize=1)
        assert job.results(timeout=120) == list(range(6))
        assert [job.describe_call(i)["attempt"] for i in range(6)] == [1] * 6
        log = procs.logs()
        assert "claimed in" in log, log[-2000:]  # the calls were claimed, then ended
        assert "NOT_IMPLEMENTED" not in log and "lost the broker connection" not in log
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        procs.stop()
        delete_task_queues(runtime, broker_url, (scope,))


def test_a_pipeline_over_instances_of_a_local_class(
    workers, rabbit_ex, runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_folder(tmp_path / "project")
    monkeypatch.syspath_prepend(str(folder))
    workers.start(runtime, processes=1)
    ex = rabbit_ex()
    up = ex.map_job(_make_point, range(3))
    down = ex.map_job(_get_x, up)
    assert down.results(timeout=60) == [1, 2, 3]
    assert "ucpkg" in {p.name for p in down.shipment.parts}
    for name in [m for m in sys.modules if m.startswith("ucpkg")]:
        del sys.modules[name]


def test_resume_keeps_a_spilled_result(workers, rabbit_ex, runtime: str, tmp_path: Path) -> None:
    workers.start(runtime, processes=1)
    ex = rabbit_ex(
        max_message_mb=2, spill_dir=str(tmp_path / "spill"), cache_dir=str(tmp_path / "cache")
    )
    first = ex.map_job(_big, [7], resume=True).results(timeout=60)
    again = ex.map_job(_big, [7], resume=True)
    assert again.reused == 1
    assert again.results(timeout=60) == first == [bytes([7]) * (3 << 20)]


def test_an_edited_local_module_makes_new_resume_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from sif_magic.cache.keys import function_key

    (tmp_path / "edited_mod.py").write_text("def f(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_mod

    def use(x: int) -> int:
        return edited_mod.f(x)

    before = function_key(use, False, {})
    assert function_key(use, False, {}) == before  # stable while nothing changes
    (tmp_path / "edited_mod.py").write_text("def f(x):\n    return x + 100\n")
    importlib.reload(edited_mod)
    assert function_key(use, False, {}) != before
    del sys.modules["edited_mod"]
