"""What a scaler asks SLURM: its jobs by name, one line per array element, and the
site's ``MaxArraySize``.

Threads: the caller's (the scaler's loop); subprocesses only, no state.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass

from ..errors import ConfigError
from .slurm import _tool

#: %i job (or ARRAY_INDEX), %A its own numeric id, %T state, %r reason, %D nodes, %e end
FORMAT = "%i|%A|%T|%r|%D|%e"


@dataclass(frozen=True)
class Row:
    job_id: str  # "127", or "124_3" for an element of array 124
    numeric: str  # the id SLURM_JOB_ID holds inside the job (an element has its own)
    state: str
    reason: str
    nodes: int
    ends: float  # epoch seconds; 0 if SLURM does not say (pending, no limit)


def _epoch(text: str) -> float:
    with contextlib.suppress(ValueError, OverflowError):
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    return 0.0


def jobs_named(name: str) -> list[Row]:
    """This user's jobs called ``name`` that squeue still shows (pending elements of an
    array one by one); ConfigError if squeue fails."""
    res = subprocess.run(
        [_tool("squeue"), "-h", "-r", "--me", "-n", name, "-o", FORMAT],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if res.returncode != 0:
        raise ConfigError(f"squeue failed: {res.stderr.strip()}")
    rows = []
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        i, numeric, state, reason, nodes, ends = parts
        rows.append(
            Row(i, numeric, state, reason, int(nodes) if nodes.isdigit() else 1, _epoch(ends))
        )
    return rows


def max_array_size() -> int:
    """The site's MaxArraySize (an array's indices go up to one less); 0 if arrays are
    off or ``scontrol`` cannot tell."""
    try:
        res = subprocess.run(
            [_tool("scontrol"), "show", "config"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (ConfigError, subprocess.TimeoutExpired):
        return 0
    for line in res.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            value = value.strip()
            return int(value) if value.isdigit() else 0
    return 0
