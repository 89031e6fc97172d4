"""GPUs and CPUs without a GPU (runner/resources.py): where ``--gpus auto`` finds the
devices (each variable it reads, and a fake ``nvidia-smi`` on PATH), what a call
process is started with, how requests are checked, and the wire fields."""

from __future__ import annotations

import os
import pickle
import stat
from array import array
from pathlib import Path

import pytest

from sif_magic import protocol as P
from sif_magic.runner.resources import (
    THREAD_VARS,
    Need,
    detect_gpus,
    need_of,
    request,
    slot_environ,
    unsatisfiable,
)


@pytest.mark.parametrize(
    "var, value, ids",
    [
        ("CUDA_VISIBLE_DEVICES", "2,3", ["2", "3"]),
        ("CUDA_VISIBLE_DEVICES", "GPU-5f2a,GPU-77b1", ["GPU-5f2a", "GPU-77b1"]),
        ("CUDA_VISIBLE_DEVICES", "", []),  # set and empty: this process sees no GPU
        ("CUDA_VISIBLE_DEVICES", "-1", []),
        ("ROCR_VISIBLE_DEVICES", "0,1,2", ["0", "1", "2"]),
        ("HIP_VISIBLE_DEVICES", "1", ["1"]),
        ("ZE_AFFINITY_MASK", "0,1", ["0", "1"]),
        ("SLURM_STEP_GPUS", "0,1,2,3", ["0", "1", "2", "3"]),
        ("SLURM_JOB_GPUS", "4-6", ["4", "5", "6"]),
    ],
)
def test_auto_reads_each_variable(var: str, value: str, ids: list[str]) -> None:
    assert detect_gpus("auto", {var: value, "PATH": "/nonexistent"}) == (ids, var)


def test_auto_prefers_the_step_over_the_job_and_cuda_over_slurm() -> None:
    env = {"SLURM_JOB_GPUS": "0,1,2,3", "SLURM_STEP_GPUS": "2,3"}
    assert detect_gpus("auto", env) == (["2", "3"], "SLURM_STEP_GPUS")
    assert detect_gpus("auto", {**env, "CUDA_VISIBLE_DEVICES": "0"})[0] == ["0"]


def _fake_nvidia_smi(folder: Path, text: str, code: int = 0) -> None:
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 9\ncat <<'EOF'\n{text}EOF\nexit {code}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_auto_asks_nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(
        tmp_path,
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
        "  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)\n",
    )
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                "ZE_AFFINITY_MASK", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert detect_gpus("auto") == (["0", "1"], "nvidia-smi -L")
    _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed\n", code=9)  # a driver that is not there
    assert detect_gpus("auto") == ([], "nvidia-smi -L")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert detect_gpus("auto") == ([], "nvidia-smi -L")


def test_a_list_none_and_bad_lists() -> None:
    assert detect_gpus("0,1,2,3", {"CUDA_VISIBLE_DEVICES": "7"}) == (["0", "1", "2", "3"], "--gpus")
    assert detect_gpus("none") == ([], "none") and detect_gpus("") == ([], "none")
    for bad in ("0,0", "0;1", ",", "$(reboot)"):
        with pytest.raises(ValueError, match="--gpus"):
            detect_gpus(bad)


def test_a_call_process_sees_its_devices_and_cpus() -> None:
    devices = ["0", "1", "2", "3"]
    assert slot_environ(devices, (2,), 0, {}) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert slot_environ(devices, (0, 1), 0, {}) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert slot_environ(devices, (), 0, {}) == {"CUDA_VISIBLE_DEVICES": ""}  # sees none
    assert slot_environ([], (), 0, {}) == {}  # a worker without GPUs leaves them alone
    env = slot_environ([], (), 8, {})
    assert env == dict.fromkeys(THREAD_VARS, "8") and "OMP_NUM_THREADS" in env
    # devices named by UUID in the worker's CUDA_VISIBLE_DEVICES: the slot gets its own
    uuids = {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}
    assert slot_environ(["GPU-a", "GPU-b"], (1,), 0, uuids) == {"CUDA_VISIBLE_DEVICES": "GPU-b"}
    # oneAPI, where the worker's environment uses it: by position in its own list
    ze = {"ZE_AFFINITY_MASK": "0.0,0.1"}
    assert slot_environ(["0", "1"], (1,), 0, ze) == {
        "CUDA_VISIBLE_DEVICES": "1",
        "ZE_AFFINITY_MASK": "0.1",
    }


def test_every_device_variable_slurm_sets_is_narrowed_alike() -> None:
    # what SLURM's gres/gpu sets in a step with GPUs 4-7 (NVIDIA or not: all of them)
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "ROCR_VISIBLE_DEVICES": "4,5,6,7",
           "GPU_DEVICE_ORDINAL": "4,5,6,7", "ZE_AFFINITY_MASK": "4,5,6,7"}  # fmt: skip
    got = slot_environ(["4", "5", "6", "7"], (2, 3), 0, env)
    assert got == dict.fromkeys(env, "6,7")


def test_requests_are_checked() -> None:
    assert request({"gpus": 2, "cpus": 8}) == {"gpus": 2, "cpus": 8}
    assert request(None) is None and request({}) is None and request({"cpus": 0}) is None
    assert request({"gpus": 0}) == {"gpus": 0}  # a call that wants no GPU: it sees none
    for bad, word in (({"gpu": 1}, "unknown key"), ({"gpus": -1}, ">= 0"),
                      ({"gpus": 1.5}, ">= 0"), ({"gpus": True}, ">= 0"), ([1], "dict")):  # fmt: skip
        with pytest.raises(ValueError, match=word):
            request(bad)  # type: ignore[arg-type]
    assert need_of({"gpus": 2}) == Need(2, 0) and need_of(None) is None
    text = unsatisfiable(Need(8, 4), "runtime 'ml'", [{"worker": "w1", "gpus": ["0"], "cpus": 2}])
    assert "8 GPU(s) and 4 CPU(s)" in text and "w1: 1 GPU(s), 2 CPU(s)" in text


def test_wire_fields_are_optional_and_round_trip() -> None:
    plain = P.Task("j", 0, [0], "r", b"F", b"A")
    assert P.Task("j", 0, [0], "r", b"F", b"A", resources=None).encode() == plain.encode()
    t = P.Task("j", 0, [0], "r", b"F", b"A", resources={"gpus": 2, "cpus": 8})
    assert P.Task.decode(t.encode()).resources == {"gpus": 2, "cpus": 8}
    bad = P.Task("j", 0, [0], "r", b"F", b"A", resources={"gpus": "2"})  # type: ignore[dict-item]
    with pytest.raises(P.ProtocolError, match="resources"):
        P.Task.decode(bad.encode())
    hb = P.Heartbeat("w", "h", 1, "rt", 4, 0, "3.11", "3", "0", 1.0, gpus=["0", "1"], cpus=16,
                     slot_devices=["0", "1"])  # fmt: skip
    assert P.Heartbeat.decode(hb.encode()) == hb
    assert b"gpus" not in P.Heartbeat("w", "h", 1, "rt", 4, 0, "3", "3", "0", 1.0).encode()
    seg = P.ResultSegment(array("q", [0]), bytes([P.DONE]), b"\x01", array("d", [1, 2]),
                          pickle.dumps([7]), {}, "w", "h", 9, "2,3")  # fmt: skip
    back = P.ResultBatch.decode(P.ResultBatch("j", 0, [seg]).encode()).segments[0]
    assert back.devices == "2,3" and back.results()[0].devices == "2,3"
