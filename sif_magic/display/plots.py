"""``job.plot()``: the pictures of a run as a matplotlib figure (the optional
``plots`` extra): a timeline (a row per worker slot, each call a bar from start
to end coloured by its final state, retried calls hatched) above a histogram
of call durations (log axis when they span decades, median and p95 marked).

The timeline draws the binned table of ``timeline.bin_timeline`` (one
``broken_barh`` per row and state), so a job of 100,000 calls makes a figure
as light as one of 100.

Threads: the caller's (the kernel thread); reads a ``Timings`` copy.
"""

from __future__ import annotations

from typing import Any

from ..protocol import STATE_NAMES
from .html import COLOURS
from .svg import seconds
from .timeline import RETRIED, bin_timeline, durations, histogram

INSTALL_HINT = 'job.plot() needs matplotlib: pip install "sif_magic[plots]"'


def _matplotlib() -> Any:
    try:
        import matplotlib.figure
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return matplotlib.figure


def plot_job(job: Any, *, buckets: int = 800, max_rows: int = 60, figsize: Any = None) -> Any:
    """A ``matplotlib.figure.Figure`` of ``job`` (see the module docstring)."""
    mfigure = _matplotlib()
    t = job.timings()
    binned = bin_timeline(t, buckets=buckets, max_rows=max_rows)
    hist = histogram(durations(t))
    rows = len(binned.rows)
    fig = mfigure.Figure(figsize=figsize or (10, 3 + min(6.0, 0.22 * max(rows, 4))))
    ax_t, ax_h = fig.subplots(2, 1, height_ratios=[max(2, min(6, rows / 4)), 2])
    width = (binned.t1 - binned.t0) / binned.buckets
    seen: set[str] = set()
    for r in range(rows):
        line = binned.cells[r * binned.buckets : (r + 1) * binned.buckets]
        runs: dict[int, list[tuple[float, float]]] = {}
        k = 0
        while k < binned.buckets:
            end = k + 1
            while end < binned.buckets and line[end] == line[k]:
                end += 1
            if line[k]:
                runs.setdefault(line[k], []).append((binned.t0 + k * width, (end - k) * width))
            k = end
        for code, spans in runs.items():
            name = STATE_NAMES[(code & ~RETRIED) - 1]
            label = name if name not in seen else None
            seen.add(name)
            ax_t.broken_barh(
                spans,
                (r - 0.4, 0.8),
                facecolors=COLOURS[name],
                hatch="///" if code & RETRIED else None,
                edgecolor=COLOURS["retrying"] if code & RETRIED else "none",
                linewidth=0,
                label=label,
            )
    ax_t.set_yticks(range(rows), binned.rows, fontsize=7 if rows > 20 else 9)
    ax_t.set_ylim(rows - 0.5, -0.5)
    ax_t.set_xlim(binned.t0, binned.t1)
    ax_t.set_xlabel("seconds since the job started")
    ax_t.set_title(f"{job.name or 'job'} {job.job_id}: {job.n:,} calls on {rows} worker slots")
    if seen:
        ax_t.legend(loc="upper right", fontsize=8)
    if hist["n"]:
        edges, counts = hist["edges"], hist["counts"]
        ax_h.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])],
                 align="edge", color=COLOURS["done"])  # fmt: skip
        if hist["log"]:
            ax_h.set_xscale("log")
        for name, colour in (("median", "#222222"), ("p95", COLOURS["failed"])):
            ax_h.axvline(hist[name], color=colour, linestyle="--",
                         label=f"{name} {seconds(hist[name])}")  # fmt: skip
        ax_h.legend(fontsize=8)
    ax_h.set_xlabel("call duration (s)" + (", log scale" if hist["log"] else ""))
    ax_h.set_ylabel("calls")
    fig.tight_layout()
    return fig
