"""GPUs and per-call resources through the public API, on the local backend and on
real ``sif-magic worker --gpus`` processes over the machine's RabbitMQ. The devices
are simulated (no GPU here): what is checked is the CUDA_VISIBLE_DEVICES each call
sees, which device ``describe_call`` names, and that an impossible request fails at
once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_gpu_pool import meet

from sif_magic import Executor, ResourcesError
from sif_magic.display.text import describe_text, worker_line
from sif_magic.runner.resources import THREAD_VARS

# lambdas: cloudpickle sends them by value (a worker cannot import this test module)
_cuda = lambda x: __import__("os").environ.get("CUDA_VISIBLE_DEVICES", "unset")  # noqa: E731
_threads = lambda x: __import__("os").environ.get("OMP_NUM_THREADS")  # noqa: E731


def test_local_backend_pins_calls_to_devices(tmp_path: Path) -> None:
    with Executor(backend="local", gpus="0,1,2,3", cpus=4) as ex:
        job = ex.map_job(meet(str(tmp_path), 4), range(4), chunksize=1)
        seen = job.results(timeout=60)
        assert sorted(seen) == ["0", "1", "2", "3"]
        for i in range(4):
            d = job.describe_call(i)
            assert d["devices"] == seen[i] and f"GPU {seen[i]}" in describe_text(d)
        two = ex.map_job(_cuda, range(4), chunksize=1, resources={"gpus": 2}).results(timeout=60)
        assert set(two) <= {"0,1", "2,3"}  # two devices each (quick calls: maybe one slot)
        assert ex.map_job(_threads, [0], resources={"cpus": 2}).results(timeout=60) == ["2"]
        row = ex.workers()[0]
        assert row["gpus"] == ["0", "1", "2", "3"] and "GPUs" in worker_line(row)
        t0 = time.monotonic()
        with pytest.raises(ResourcesError, match=r"5 GPU\(s\).*0, 1, 2, 3|5 GPU\(s\).*4 GPU"):
            ex.map_job(_cuda, range(3), resources={"gpus": 5})
        with pytest.raises(ResourcesError, match=r"8 CPU\(s\)"):
            ex.map_job(_cuda, range(3), resources={"cpus": 8})
        assert time.monotonic() - t0 < 30  # at once, not after a timeout (generous: load)


def test_an_executor_wide_request_and_bad_requests() -> None:
    from sif_magic import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        Executor(backend="local", resources={"gpu": 1})
    with Executor(backend="local", gpus="0,1", resources={"gpus": 2}) as ex:
        assert ex.submit(_cuda, 0).result(timeout=60) == "0,1"
        assert ex.map_job(_cuda, [0], resources={}).results(timeout=60) in (["0"], ["1"])
        with pytest.raises(ConfigError, match=">= 0"):
            ex.map_job(_cuda, [0], resources={"gpus": -2})


@pytest.fixture
def ex(broker_url: str, runtime: str, key_file: Path):
    e = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def test_worker_with_gpus_pins_each_call_process(
    workers, ex: Executor, runtime: str, tmp_path: Path
) -> None:
    workers.start(runtime, processes=0, args=("--gpus", "0,1,2,3", "--cpus", "8"))
    job = ex.map_job(meet(str(tmp_path), 4), range(4), chunksize=1)
    seen = job.results(timeout=60)
    assert sorted(seen) == ["0", "1", "2", "3"]  # --processes defaulted to the 4 GPUs
    assert [job.describe_call(i)["devices"] for i in range(4)] == seen
    two = ex.map_job(_cuda, range(4), chunksize=1, resources={"gpus": 2})
    assert set(two.results(timeout=60)) <= {"0,1", "2,3"}
    threads = ex.map_job(_threads, range(2), resources={"cpus": 4}).results(timeout=60)
    assert threads == ["4", "4"]
    rows = [w for w in ex.backend.refresh() if w.get("runtime") == runtime]
    assert rows[0]["gpus"] == ["0", "1", "2", "3"] and rows[0]["cpus"] == 8
    assert rows[0]["slots"] == 4 and len(rows[0]["slot_devices"]) >= 1


def test_a_request_no_worker_can_meet_fails_at_once(workers, ex: Executor, runtime: str) -> None:
    workers.start(runtime, processes=1, args=("--gpus", "0", "--cpus", "2"))
    assert ex.map_job(_cuda, [0]).results(timeout=60) == ["0"]  # the worker is known
    t0 = time.monotonic()
    with pytest.raises(ResourcesError) as e:
        ex.map_job(_cuda, range(5), resources={"gpus": 2, "cpus": 4})
    assert time.monotonic() - t0 < 30  # not the no-worker timeout (generous: load)
    text = str(e.value)
    assert "2 GPU(s) and 4 CPU(s)" in text and "1 GPU(s), 2 CPU(s)" in text
    assert "Nothing was sent" in text
    assert len(ex.jobs) == 1  # the refused job never started


def test_thread_variables_reach_every_library_the_call_imports(tmp_path: Path) -> None:
    with Executor(backend="local", cpus=6, processes=1) as ex:

        def all_vars(x: int) -> dict:
            import os

            return {v: os.environ.get(v) for v in THREAD_VARS}

        got = ex.map_job(all_vars, [0], resources={"cpus": 6}).results(timeout=60)[0]
        assert got == dict.fromkeys(THREAD_VARS, "6")
        assert "OMP_NUM_THREADS" in got  # what torch.get_num_threads() follows
        plain = ex.map_job(all_vars, [0]).results(timeout=60)[0]
        assert plain == {v: os.environ.get(v) for v in THREAD_VARS}  # no request: untouched


def test_sifmap_takes_gpus_and_cpus_per_call(ip) -> None:
    from IPython.core.error import UsageError

    ip.run_line_magic("sif_config", "gpus=0,1,2,3 cpus=8 processes=0")
    ip.user_ns["xs"] = list(range(4))
    cell = "def f(x):\n    import os\n    return os.environ['CUDA_VISIBLE_DEVICES'], os.environ['OMP_NUM_THREADS']\n"
    ip.run_cell_magic("sifmap", "xs -o ys --gpus-per-call 2 --cpus-per-call 4", cell)
    assert {y[0] for y in ip.user_ns["ys"]} <= {"0,1", "2,3"}
    assert {y[1] for y in ip.user_ns["ys"]} == {"4"}
    with pytest.raises(UsageError, match=r"asks for 6 GPU\(s\)"):  # at once, no traceback
        ip.run_cell_magic("sifmap", "xs --gpus-per-call 6", cell)
