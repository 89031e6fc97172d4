"""SLURM with GPUs: the sbatch lines ``--gpus-per-node`` writes, and a real one-node
SLURM whose node has two fake GPUs (gres.conf naming links to /dev/null: SLURM hands
them out and sets CUDA_VISIBLE_DEVICES / SLURM_STEP_GPUS, nothing behind them is a
GPU). Workers start with ``--gpus auto`` and each call process gets one of them."""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from queues import consumers, delete_queue, task_queue
from test_gpu_pool import meet

from sif_magic.errors import ConfigError
from sif_magic.launch import slurm as sl

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

ROOT = Path(__file__).resolve().parents[1]


def _script(**kw: object) -> str:
    base = dict(runtime="ml", image="/x/ml.sif", container="singularity")
    return sl.render_script(sl.SlurmSpec(**{**base, **kw}))  # type: ignore[arg-type]


def test_gpus_per_node_asks_slurm_passes_nv_and_starts_workers_with_gpus_auto(sif_home) -> None:
    text = _script(gpus_per_node="4", cpus_per_task=16)
    assert "#SBATCH --gres=gpu:4" in text.splitlines()
    assert "export SIF_MAGIC_GPUS=auto" in text
    assert "export SIF_MAGIC_PROCESSES=0" in text  # the worker: a call process per GPU
    run = [ln for ln in text.splitlines() if '"$tool" run' in ln]
    assert len(run) == 1 and " --nv " in run[0]
    per_node = _script(gpus_per_node="a100:2", gpu_request="gpus-per-node")
    assert "#SBATCH --gpus-per-node=a100:2" in per_node.splitlines()
    assert "--gres" not in per_node
    plain = _script()
    plain_run = [ln for ln in plain.splitlines() if '"$tool" run' in ln]
    assert " --nv " not in plain_run[0] and "SIF_MAGIC_GPUS" not in plain
    assert not [
        ln for ln in plain.splitlines() if ln.startswith(("#SBATCH --gres", "#SBATCH --gpus"))
    ]


def test_bad_gpu_options_are_refused(sif_home) -> None:
    with pytest.raises(ConfigError, match="count"):
        _script(gpus_per_node="four")
    with pytest.raises(ConfigError, match="drop --gres"):
        _script(gpus_per_node="2", gres="gpu:2")
    with pytest.raises(ConfigError, match="gres or gpus-per-node"):
        _script(gpus_per_node="2", gpu_request="gpu")
    assert "--gres=gpu:2" in _script(gpus_per_node="2", gres="", gpu_request="gres")


def test_the_magic_takes_the_same_gpu_options(sif_home) -> None:
    from sif_magic.cli.slurm import add_slurm_submit_arguments, slurm_spec_from_args

    parser = argparse.ArgumentParser(prog="%sif_workers slurm")
    add_slurm_submit_arguments(parser)
    args = parser.parse_args(["--image", "/x/ml.sif", "--gpus-per-node", "4"])
    spec = slurm_spec_from_args(args)
    assert (spec.gpus_per_node, spec.gpu_request) == ("4", "gres")
    args = parser.parse_args(["--gpus-per-node", "2", "--gpu-request", "gpus-per-node"])
    assert slurm_spec_from_args(args).gpu_request == "gpus-per-node"


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[SlurmCluster]:
    from slurm_cluster import SlurmCluster, SlurmError, missing_tools

    missing = missing_tools()
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)})")
    cluster = SlurmCluster(gpus=2)
    try:
        cluster.start()
    except SlurmError as e:
        pytest.fail(f"the test SLURM with fake GPUs did not start: {e}")
    yield cluster
    cluster.close()


@pytest.mark.slurm
def test_workers_on_a_node_with_fake_gpus_pin_a_call_process_per_gpu(
    gpu_cluster: SlurmCluster, sif_home, url_file, key_file, broker_url, tmp_path, monkeypatch
) -> None:
    from sif_magic import Executor

    monkeypatch.setenv("SLURM_CONF", str(gpu_cluster.conf))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    runtime = f"gpu-{secrets.token_hex(4)}"
    queue = task_queue(runtime, key_file)
    spec = sl.SlurmSpec(
        runtime=runtime,
        container="none",
        cpus_per_task=1,
        gpus_per_node="2",
        amqp_url_file=str(url_file),
        key_file=str(key_file),
    )
    job = sl.submit(spec)
    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    try:
        assert "#SBATCH --gres=gpu:2" in Path(job.script).read_text()
        assert sl.wait_for(job.job_id, timeout=60).state == "RUNNING"
        deadline = time.monotonic() + 90
        while (consumers(queue) or 0) < 1:
            assert time.monotonic() < deadline, "the worker never joined"
            assert sl.status([job.job_id])[0].state == "RUNNING", "the job ended early"
            time.sleep(0.3)
        calls = ex.map_job(meet(str(tmp_path), 2), range(2), chunksize=1)
        seen = calls.results(timeout=90)
        assert sorted(seen) == ["0", "1"]  # two call processes, a GPU each, at once
        names = (
            "CUDA_VISIBLE_DEVICES",
            "ROCR_VISIBLE_DEVICES",
            "GPU_DEVICE_ORDINAL",
            "ZE_AFFINITY_MASK",
        )  # fmt: skip  (SLURM sets all four)
        alike = ex.map_job(
            lambda x: {__import__("os").environ.get(v) for v in names}, range(4), chunksize=1
        ).results(timeout=90)
        assert all(len(s) == 1 and s <= {"0", "1"} for s in alike)  # narrowed alike
        rows = [w for w in ex.backend.refresh() if w.get("runtime") == runtime]
        assert rows and rows[0]["gpus"] == ["0", "1"] and rows[0]["slots"] == 2
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        sl.cancel([job.job_id])
        delete_queue(queue)
