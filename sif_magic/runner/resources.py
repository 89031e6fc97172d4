"""GPUs and CPUs: what a call asks for, what a worker has, what a call process sees.

- ``Need`` (gpus, cpus): what each call of a job asks for; ``request`` checks what a
  user gave (``map_job(resources=...)``, ``--gpus-per-call``) and ``need_of`` reads
  a Task's ``resources`` (``{"gpus": 2, "cpus": 8}``). A call without a request
  runs in a process of the worker's default shape (``default_need``): one GPU on a
  worker that has GPUs, none elsewhere, CPUs not counted.
- ``detect_gpus``: the device ids of ``sif-magic worker --gpus auto|0,1,2,3|none``.
- ``slot_environ``: the variables a call process starts with (set before it
  imports anything): its devices in ``CUDA_VISIBLE_DEVICES`` (and the ROCm /
  oneAPI variables the worker's environment uses), its CPUs in the thread-count
  variables of OpenMP, MKL, OpenBLAS, numexpr, Accelerate (PyTorch's
  ``torch.get_num_threads()`` follows ``OMP_NUM_THREADS``).
- ``can_run`` / ``unsatisfiable``: whether a worker could ever run a request, and
  the error when no worker can.

Standard library only. No state and no threads: pure functions for the pool's
dispatcher, the worker and the client.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
# device visibility: CUDA's, ROCm's, oneAPI's (SLURM's gres/gpu sets CUDA_, ROCR_,
# GPU_DEVICE_ORDINAL and ZE_AFFINITY_MASK alike, to the same physical ids)
DEVICE_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "ZE_AFFINITY_MASK",
)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]*")


class Need(NamedTuple):
    """What a call process holds: ``gpus`` devices of its own, ``cpus`` CPUs (0: no
    count, the thread variables are left as they are)."""

    gpus: int = 0
    cpus: int = 0

    def text(self) -> str:
        parts = [f"{self.gpus} GPU(s)"] if self.gpus else []
        if self.cpus:
            parts.append(f"{self.cpus} CPU(s)")
        return " and ".join(parts) or "no GPU"


def request(resources: Mapping[str, Any] | None) -> dict[str, int] | None:
    """A user's per-call request, checked: ``{"gpus": int >= 0, "cpus": int >= 1}``
    (either may be left out); None or {} for none. ValueError says what is wrong."""
    if not resources:
        return None
    if not isinstance(resources, Mapping):
        raise ValueError(
            f"resources must be a dict like {{'gpus': 1, 'cpus': 4}}, got {resources!r}"
        )
    out = {}
    for key, value in resources.items():
        if key not in ("gpus", "cpus"):
            raise ValueError(f"resources: unknown key {key!r}; known: 'gpus', 'cpus'")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"resources[{key!r}] must be a whole number >= 0, got {value!r}")
        if key == "cpus" and value == 0:
            continue  # no count
        out[key] = int(value)
    return out or None


def need_of(resources: Mapping[str, int] | None) -> Need | None:
    """The Need of a Task's ``resources``; None without a request."""
    if not resources:
        return None
    return Need(int(resources.get("gpus", 0)), int(resources.get("cpus", 0)))


def default_need(devices: Sequence[str]) -> Need:
    """The shape of a call without a request: a GPU of its own where there are GPUs."""
    return Need(1 if devices else 0, 0)


def can_run(need: Need, gpus: int, cpus: int) -> bool:
    """Whether a worker with ``gpus`` devices and ``cpus`` CPUs could ever run it."""
    return need.gpus <= gpus and need.cpus <= cpus


def unsatisfiable(need: Need, where: str, workers: Sequence[Mapping[str, Any]]) -> str:
    """The error when no worker of ``where`` can run a call asking for ``need``:
    the request and what each worker has (rows with ``worker``, ``gpus``, ``cpus``)."""
    have = "; ".join(
        f"{w.get('worker', '?')}: {len(w.get('gpus') or [])} GPU(s), {w.get('cpus') or '?'} CPU(s)"
        for w in workers[:8]
    )
    more = f" (and {len(workers) - 8} more)" if len(workers) > 8 else ""
    return (
        f"each call asks for {need.text()}, and no live worker of {where} has that "
        f"({have or 'no workers'}{more}). Ask for less, or start workers that have it "
        "(sif-magic worker --gpus auto --cpus N; %sif_workers slurm --gpus-per-node N)."
    )


# -- the devices a worker has ---------------------------------------------------


def _ids(text: str) -> list[str]:
    """'0,1,3-4' -> ['0', '1', '3', '4']; a range only between whole numbers."""
    out: list[str] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        a, sep, b = part.partition("-")
        if sep and a.isdigit() and b.isdigit():
            out += [str(i) for i in range(int(a), int(b) + 1)]
        else:
            out.append(part)
    return out


def parse_devices(spec: str) -> list[str]:
    """The ids of ``--gpus 0,1,2,3`` (also UUIDs such as GPU-5f2a...); ValueError if bad."""
    ids = _ids(spec)
    bad = [i for i in ids if not _ID.fullmatch(i)]
    if bad or not ids:
        raise ValueError(
            f"--gpus {spec!r}: give device ids separated by commas (0,1,2,3), auto, or none"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {spec!r} names a device twice")
    return ids


def nvidia_smi_devices(timeout: float = 10.0) -> list[str]:
    """The indices ``nvidia-smi -L`` lists ('GPU 0: ... (UUID: ...)'); [] without it."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        res = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    if res.returncode != 0:
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", res.stdout, re.MULTILINE)]


def detect_gpus(spec: str, environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """(device ids, where they came from) for ``--gpus SPEC``: ``none``/'' gives none;
    a list gives itself; ``auto`` reads ``CUDA_VISIBLE_DEVICES`` (and ROCm's
    ``ROCR_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES``, oneAPI's ``ZE_AFFINITY_MASK``),
    then SLURM's ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS``, then ``nvidia-smi -L``."""
    env = os.environ if environ is None else environ
    spec = spec.strip()
    if spec in ("", "none", "0 gpus"):
        return [], "none"
    if spec != "auto":
        return parse_devices(spec), "--gpus"
    for var in (*DEVICE_VARS[:3], DEVICE_VARS[4], "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = env.get(var)
        if value is None:
            continue
        ids = [i for i in _ids(value) if _ID.fullmatch(i)]
        if value.strip() in ("-1", "NoDevFiles"):
            ids = []
        return ids, var
    return nvidia_smi_devices(), "nvidia-smi -L"


# -- what a call process sees -----------------------------------------------------


def slot_environ(
    devices: Sequence[str],
    held: Sequence[int],
    cpus: int,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables a call process holding ``devices[k]`` for ``k`` in ``held`` and
    ``cpus`` CPUs starts with ({} on a worker without GPUs and a call without CPUs).

    Devices: ``CUDA_VISIBLE_DEVICES`` always; each other variable of DEVICE_VARS the
    worker's environment sets, too, as SLURM sets them: a variable whose list has
    an entry per device gets its own entries at ``held``; else the device ids. A
    process that holds no device sees none (empty lists)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    if devices:
        for var in DEVICE_VARS:
            if var != "CUDA_VISIBLE_DEVICES" and var not in env:
                continue
            own = _ids(env.get(var, ""))
            if len(own) == len(devices):
                out[var] = ",".join(own[k] for k in held)
            else:
                out[var] = ",".join(devices[k] for k in held)
    if cpus > 0:
        out.update(dict.fromkeys(THREAD_VARS, str(cpus)))
    return out
