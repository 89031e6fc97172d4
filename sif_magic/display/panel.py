"""The side panel's kernel half: the jobs this kernel ran (across cells) and its
workers, answered on the kernel's control channel so that the panel works
while a blocking ``%%sifmap`` holds the shell channel.

Why the control channel: a front-end's comm and widget messages travel on the
shell channel, which a running cell holds until it ends (unless the kernel and
the front-end both do JEP 91 subshells); ipykernel answers control messages on
a thread of its own. ``install`` adds a handler for one message type,
``sif_magic_request``, to the kernel's control handlers; the front-end
(``labextension/src/panel.ts``) sends it with ``sendControlMessage`` and gets a
``sif_magic_reply`` back, and keeps the kernel's busy/idle status of these
requests out of its status display (``untracked_message_types``). A kernel
without sif_magic loaded does not answer; the panel says so.

Requests (``content``): ``{"op": "jobs"}`` lists the jobs (newest last, with
their counts) and the workers table; ``{"op": "job", "job_id": ..., "call": i}``
gives one job's state table, binned timeline, histogram and log lines (of call
``i``, or the last lines of all calls when ``call`` is absent or -1);
``{"op": "timeline", "job_id": ..., "window": [lo, hi]}`` bins a span of its
timeline (the zoom of a job view's Timeline tab). Requests that name a
``widget`` (``select``, ``describe``, ``mode``: clicks and hovers under a cell)
go to that widget (``widgets._control``).

Threads: ``remember`` on the kernel thread (the Executor); ``answer`` on the
kernel's control thread: it only reads Jobs (their readers take the Job's
lock) and asks ``workers_table`` (``squeue`` at most every 2 s, cached).
Owner of ``_JOBS`` (under ``_LOCK``).
"""

from __future__ import annotations

import base64
import json
import threading
import zlib
from collections import OrderedDict
from functools import partial
from typing import Any

from .html import rate_text
from .text import describe_text, error_text
from .timeline import bin_timeline, durations, histogram

MSG = "sif_magic_request"
REPLY = "sif_magic_reply"
KEEP = 20  # finished jobs remembered (running ones always are)
LOG_LINES = 400  # lines of "all calls" a reply carries, at most

_LOCK = threading.Lock()
_JOBS: OrderedDict[str, Any] = OrderedDict()
_INSTALLED = threading.Event()  # this process's kernel answers our control requests


def remember(job: Any) -> None:
    """List ``job`` in the panel (the newest ``KEEP`` finished jobs stay listed)."""
    with _LOCK:
        _JOBS[job.job_id] = job
        finished = [k for k, j in _JOBS.items() if j.done()]
        for k in finished[: max(0, len(finished) - KEEP)]:
            del _JOBS[k]


def jobs() -> list[Any]:
    with _LOCK:
        return list(_JOBS.values())


def install(kernel: Any = None) -> bool:
    """Answer the panel's requests on ``kernel``'s control channel (the running
    IPython kernel by default); False where there is no such kernel."""
    if kernel is None:
        try:
            from IPython import get_ipython

            kernel = getattr(get_ipython(), "kernel", None)
        except ImportError:
            return False
    handlers = getattr(kernel, "control_handlers", None)
    if not isinstance(handlers, dict):
        return False
    handlers[MSG] = partial(_handle, kernel)
    _INSTALLED.set()
    return True


def installed() -> bool:
    """Whether this process's kernel answers ``sif_magic_request`` (``install`` ran)."""
    return _INSTALLED.is_set()


def _handle(kernel: Any, stream: Any, ident: Any, parent: dict[str, Any]) -> None:
    try:
        reply = answer(parent.get("content") or {})
    except Exception as e:  # noqa: BLE001 - the panel shows it; the kernel goes on
        reply = {"error": f"{type(e).__name__}: {e}"}
    kernel.session.send(stream, REPLY, reply, parent, ident)


def answer(content: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request (see the module docstring)."""
    op = content.get("op")
    if "widget" in content:
        from ..widgets import _control  # imports ipywidgets: only once widgets were shown

        return _control.answer(content)
    if op == "jobs":
        listed = jobs()
        return {"jobs": [job_summary(j) for j in listed], "workers": workers(listed)}
    if op in ("job", "timeline"):
        job = next((j for j in jobs() if j.job_id == content.get("job_id")), None)
        if job is None:
            return {"error": f"no job {content.get('job_id')!r} in this kernel"}
        if op == "job":
            return job_detail(job, int(content.get("call", -1)))
        w = content.get("window") or []
        window = (float(w[0]), float(w[1])) if len(w) == 2 and w[1] > w[0] else None
        return {"timeline": timeline_reply(bin_timeline(job.timings(), window=window))}
    return {"error": f"unknown request {op!r}: ask 'jobs', 'job', 'timeline' or a widget"}


def job_summary(job: Any) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "name": job.name,
        "n": job.n,
        "counts": job.state_counts(),
        "done": job.done(),
        "elapsed": job.elapsed,
        "created": job.created,
        "rate": rate_text(job),
        "runtime": job.runtime,
    }


def workers(listed: list[Any]) -> list[dict[str, Any]]:
    """The workers table of every backend the listed jobs used (SLURM rows too)."""
    from ..launch.slurm_rows import workers_table

    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for job in listed:
        backend = job.backend
        if backend is None or id(backend) in seen:
            continue
        seen.add(id(backend))
        try:
            rows += workers_table(backend)
        except Exception as e:  # noqa: BLE001 - a broker away: say so in the table
            rows.append({"host": "?", "state": f"unreachable: {e}"})
    return json.loads(json.dumps(rows, default=str))  # plain JSON for the reply


def job_detail(job: Any, call: int) -> dict[str, Any]:
    """One job: states (zlib, base64), timeline, histogram and log lines."""
    t = job.timings()
    if 0 <= call < job.n:
        entries, dropped = job.call_logs(call)
        lines = [[s, text] for s, text in entries]
        err = job.error(call) if job.state(call) in ("failed", "cancelled") else None
        title = describe_text(job.describe_call(call)).replace("\n", " · ")
        log = {"title": title, "lines": lines, "traceback": error_text(err) if err else ""}
        log["dropped"] = dropped
    else:
        recent = [
            (s, f"[{i}] {ln}") for i, s, text in list(job.recent) for ln in text.splitlines(True)
        ]
        log = {"title": f"all calls · last {len(recent[-LOG_LINES:])} lines", "traceback": ""}
        log["lines"] = [list(e) for e in recent[-LOG_LINES:]]
    return {
        "job": job_summary(job),
        "states_z": base64.b64encode(zlib.compress(t.states, 1)).decode(),
        "timeline": timeline_reply(bin_timeline(t)),
        "hist": histogram(durations(t)),
        "call": call,
        "log": log,
    }


def timeline_reply(binned: Any) -> dict[str, Any]:
    """A binned timeline as JSON (its cells zlib-compressed, in base64)."""
    return {
        "rows": binned.rows,
        "calls": binned.calls,
        "buckets": binned.buckets,
        "t0": binned.t0,
        "t1": binned.t1,
        "cells_z": base64.b64encode(zlib.compress(binned.cells, 1)).decode(),
    }
