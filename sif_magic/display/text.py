"""Text of a job for terminals, scripts and hover boxes: progress lines, a call's
description, a worker's line, an error's traceback.

Pure functions, except ``text_progress``, which blocks the thread that calls it
(the kernel thread of a shell without widgets) until the job ends.
"""

from __future__ import annotations

from typing import Any, TextIO


def progress_line(job: Any) -> str:
    c = job.state_counts()
    return (
        f"[sif_magic] {job.final:,}/{job.n:,} done · {c['running']} running · "
        f"{c['failed']} failed · {job.elapsed:.0f} s"
    )


def text_progress(job: Any, stream: TextIO, interval: float = 1.0) -> None:
    """Print a progress line now and then until the job ends (terminals, scripts)."""
    last = ""
    while not job.wait(interval):
        line = progress_line(job)
        if line != last:
            stream.write(line + "\n")
            stream.flush()
            last = line


def describe_text(d: dict[str, Any]) -> str:
    """A call as ``Job.describe_call`` gives it: index, state, attempt, host, the
    GPUs it ran on, duration, the fraction it reported (while it runs), then its note
    and the last message it reported (``sif_magic.report``) on lines of their own."""
    text = f"call {d['index']} · {d['state']}"
    if d["attempt"] > 1:
        text += f" · attempt {d['attempt']}"
    if d["host"]:
        text += f" · {d['host']}"
    if d.get("devices"):
        text += f" · GPU {d['devices']}"
    if d["duration"] is not None:
        text += f" · {d['duration']:.2f} s"
    if d.get("progress") is not None and d["state"] in ("running", "retrying", "lost"):
        text += f" · {d['progress']:.0%}"
    if d["note"]:
        text += f"\n{d['note']}"
    if d.get("message"):
        text += f"\n» {d['message']}"
    return text


def error_text(err: BaseException, named: bool = True) -> str:
    """A call's exception: the worker's traceback, else the message (``named``:
    after the exception's type)."""
    if hasattr(err, "remote_traceback"):
        return err.remote_traceback()
    return f"{type(err).__name__}: {err}" if named else str(err)


def worker_line(w: dict[str, Any]) -> str:
    """One row of the workers table as ``%sif_workers`` prints it."""
    if w.get("scaler"):
        return f"scaler {w['scaler']} (runtime {w.get('runtime', '?')}): {w.get('state', '')}"
    slurm = f"  SLURM job {w['slurm_job']}" if w.get("slurm_job") else ""
    gpus = f"  GPUs {slot_gpus(w)}" if w.get("gpus") else ""
    return (
        f"{w.get('host', '?'):<20} pid {w.get('pid', '?')!s:<8} runtime {w.get('runtime', '?'):<12} "
        f"slots {w.get('busy', 0)}/{w.get('slots', '?')}  python {w.get('python', '?')}  "
        f"cloudpickle {w.get('cloudpickle', '?')}  {w.get('state', '')}{gpus}{slurm}"
    )


def slot_gpus(w: dict[str, Any]) -> str:
    """A worker's GPUs as its slots hold them: '0 | 1 | 2,3' ('-': a slot without one);
    its device list before any slot said."""
    slots = w.get("slot_devices") or []
    if slots:
        return " | ".join(d or "-" for d in slots)
    return ",".join(w.get("gpus") or [])
