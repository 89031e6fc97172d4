"""HTML of a job and of the workers table: the snapshot a saved notebook keeps,
the counts line of the live view, the colours of the states.

Pure functions of what they are given (a Job is only read): any thread.
"""

from __future__ import annotations

import html
import time
from typing import Any

from ..protocol import STATE_NAMES
from .text import slot_gpus

COLOURS = {
    "queued": "#9e9e9e",
    "running": "#1e88e5",
    "done": "#43a047",
    "failed": "#e53935",
    "cancelled": "#616161",
    "retrying": "#fb8c00",
    "lost": "#8e24aa",
    "finishing": "#81c784",  # light green: ended on its worker, result on its way
}
WORKER_COLUMNS = (
    "host",
    "pid",
    "runtime",
    "slots",
    "busy",
    "GPUs",
    "python",
    "cloudpickle",
    "container",
    "last heartbeat",
    "state",
)


def rate_text(job: Any) -> str:
    """Calls per second so far and, while running, the time left at that rate."""
    done = job.final
    el = job.elapsed
    if done == 0 or el <= 0:
        return ""
    rate = done / el
    text = f"{rate:,.0f} calls/s" if rate >= 10 else f"{rate:.2f} calls/s"
    if not job.done() and done < job.n:
        left = (job.n - done) / rate
        text += f", ~{left:,.0f} s left" if left >= 1 else ", <1 s left"
    return text


def badges_html(counts: dict[str, int]) -> str:
    """A coloured square and count per state that has calls."""
    return " ".join(
        f'<span style="color:{COLOURS[name]}">&#9632; {counts[name]:,} {name}</span>'
        for name in STATE_NAMES
        if counts[name]
    )


def summary_html(job: Any) -> str:
    """The static view of a job: name, id, size, a bar and the counts."""
    counts = job.state_counts()
    failed = counts["failed"] > 0
    colour = COLOURS["failed"] if failed else COLOURS["done"]
    if not job.done():
        colour = COLOURS["running"]
    pct = 100.0 * job.final / job.n if job.n else 100.0
    status = "finished" if job.done() else "running"
    return (
        '<div class="sif-magic-summary" style="font-family:var(--jp-ui-font-family,sans-serif)">'
        f"<b>{html.escape(job.name or 'job')}</b> · job <code>{job.job_id}</code> · "
        f"{job.n:,} calls {status} in {job.elapsed:.1f} s"
        f'<div style="background:#eee;height:8px;width:100%;max-width:40em;margin:3px 0">'
        f'<div style="background:{colour};height:8px;width:{pct:.1f}%"></div></div>'
        f"{badges_html(counts)} <span style='color:#777'>{html.escape(rate_text(job))}</span>"
        f"{notes_html(job)}</div>"
    )


def notes_html(job: Any) -> str:
    """What travelled with the function, and the job's advice (a module its workers
    lack), under the counts; "" when there is neither."""
    lines = []
    shipment = getattr(job, "shipment", None)
    if shipment is not None and shipment.parts:
        lines.append(f"shipped with the function: {html.escape(shipment.describe())}")
    if shipment is not None:
        lines += [f"not shipped: {html.escape(note)}" for note in shipment.notes]
    hints = job.hints() if hasattr(job, "hints") else []
    lines += [f"<b style='color:{COLOURS['failed']}'>&#9888; {html.escape(h)}</b>" for h in hints]
    if not lines:
        return ""
    return "<div style='color:#555;font-size:90%'>" + "<br>".join(lines) + "</div>"


def snapshot(job: Any) -> dict[str, str]:
    """The text and HTML a saved notebook keeps of a job (no widgets needed): the
    summary, then the pictures of the run as an embedded image (``svg``)."""
    from .svg import job_charts

    return {"text/plain": job.summary(), "text/html": summary_html(job) + job_charts(job)}


def counts_html(
    job: Any, counts: dict[str, int], rows: list[dict[str, Any]] | None, broker_down: bool
) -> str:
    """The live view's line: counts, time, rate, live workers (when ``rows`` are
    given) and a warning while the broker is unreachable."""
    live = "" if rows is None else f" · {sum(1 for r in rows if r.get('state') == 'up')} workers"
    note = " <b style='color:#e53935'>broker unreachable: reconnecting…</b>" if broker_down else ""
    return (
        f"{badges_html(counts)} · {job.elapsed:.1f} s · {html.escape(rate_text(job))}{live}{note}"
    )


def workers_html(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """The workers table (``rows`` as ``workers_table`` gives them)."""
    if not rows:
        return "<i>no workers seen yet</i>"
    now = time.time() if now is None else now
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{h}</th>" for h in WORKER_COLUMNS)
    body = []
    for r in rows:
        state = r.get("state", "")
        if r.get("scaler"):  # what the scaler decided last: one line across the table
            text = f"scaler {r['scaler']}: {state}"
            body.append(
                f"<tr><td colspan='{len(WORKER_COLUMNS)}' style='padding:0 8px;"
                f"font-style:italic'>{html.escape(text)}</td></tr>"
            )
            continue
        colour = {"up": COLOURS["done"], "lost": COLOURS["lost"]}.get(state, COLOURS["cancelled"])
        ago = now - float(r.get("last_seen") or now)
        cells = (
            r.get("host", ""),
            r.get("pid", ""),
            r.get("runtime", ""),
            r.get("slots", ""),
            r.get("busy", ""),
            slot_gpus(r),
            r.get("python", ""),
            r.get("cloudpickle", ""),
            r.get("container", "") + (f" (SLURM {r['slurm_job']})" if r.get("slurm_job") else ""),
            f"{ago:.0f} s ago",
        )
        tds = "".join(f"<td style='padding:0 8px'>{html.escape(str(c))}</td>" for c in cells)
        body.append(
            f"<tr>{tds}<td style='padding:0 8px;color:{colour}'>{html.escape(state)}</td></tr>"
        )
    return f"<table class='sif-magic-workers'><tr>{head}</tr>{''.join(body)}</table>"


def workers_details(rows: list[dict[str, Any]]) -> str:
    """The workers table folded under a "Workers" summary line."""
    return f"<details><summary>Workers</summary>{workers_html(rows)}</details>"
