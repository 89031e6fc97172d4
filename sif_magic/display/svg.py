"""The pictures of a run as an SVG image, for the static snapshot a saved
notebook keeps (no matplotlib, no browser code: nbviewer and nbconvert show it).

``charts_svg`` draws a binned timeline (``timeline.bin_timeline``: a row per
worker slot, runs of equal cells as one rectangle, retried calls with an orange
top stripe) above a histogram of call durations (``timeline.histogram``: log
axis when they span decades, median and p95 as labelled lines).
``charts_img`` wraps it as an ``<img>`` with a data URI, which Jupyter's HTML
sanitizer keeps in untrusted notebooks (inline ``<svg>`` it would strip).

Pure functions: any thread.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

from ..protocol import STATE_NAMES
from .html import COLOURS
from .timeline import RETRIED, Binned, bin_timeline, durations, histogram

WIDTH = 720
LEFT = 120  # room for the row labels
RIGHT = 16
TEXT = "font-family:sans-serif;font-size:11px;fill:#333"


def seconds(v: float) -> str:
    """A duration for an axis label: 250 ms, 1.5 s, 2.0 min."""
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1.0:
        return f"{v * 1e3:.3g} ms"
    if v < 120.0:
        return f"{v:.3g} s"
    return f"{v / 60:.3g} min"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round values between ``lo`` and ``hi`` for axis ticks."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * step >= raw:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log axis: the decades, with 2 and 5 times them when few decades show."""
    decades = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    inside = [v for v in decades if lo <= v <= hi]
    if len(inside) < 3:
        decades += [m * v for v in decades for m in (2.0, 5.0)]
    return sorted(v for v in decades if lo <= v <= hi)


def colour_of(code: int) -> str:
    state = (code & ~RETRIED) - 1
    return COLOURS[STATE_NAMES[state]] if 0 <= state < len(STATE_NAMES) else "#000000"


def _legend(cells: bytes, top: float, out: list[str]) -> None:
    """The states the timeline shows (and "retried"), right-aligned on its title line."""
    present = set(cells)
    keys = [
        (name, COLOURS[name], 10.0)
        for code, name in enumerate(STATE_NAMES)
        if (code + 1) in present or ((code + 1) | RETRIED) in present
    ]
    if any(c & RETRIED for c in present):
        keys.append(("retried", COLOURS["retrying"], 3.0))
    x = WIDTH - RIGHT
    for name, colour, h in reversed(keys):
        x -= 6.2 * len(name)
        out.append(f'<text x="{x:.1f}" y="{top + 12}" style="{TEXT}">{name}</text>')
        out.append(
            f'<rect x="{x - 14:.1f}" y="{top + 12 - 5 - h / 2:.1f}" width="10" height="{h}" '
            f'fill="{colour}"/>'
        )
        x -= 26


def _timeline(b: Binned, top: float, out: list[str]) -> float:
    """Draw the timeline from ``top``; returns the y below it."""
    plot_w = WIDTH - LEFT - RIGHT
    rows = len(b.rows)
    pitch = max(3.0, min(16.0, 260.0 / max(1, rows)))
    out.append(f'<text x="{LEFT}" y="{top + 12}" style="{TEXT};font-weight:bold">')
    out.append(f"Timeline: {rows} worker slots</text>")
    _legend(b.cells, top, out)
    y0 = top + 20
    for r, label in enumerate(b.rows):
        y = y0 + r * pitch
        if pitch >= 9:
            out.append(
                f'<text x="{LEFT - 6}" y="{y + pitch * 0.75:.1f}" text-anchor="end" '
                f'style="{TEXT};font-size:{min(11, pitch - 1):.0f}px">{html.escape(label)}</text>'
            )
        line = b.cells[r * b.buckets : (r + 1) * b.buckets]
        k = 0
        while k < b.buckets:
            code = line[k]
            end = k + 1
            while end < b.buckets and line[end] == code:
                end += 1
            if code:
                x = LEFT + plot_w * k / b.buckets
                w = plot_w * (end - k) / b.buckets
                h = max(1.0, pitch - 1)
                out.append(
                    f'<rect data-row="{r}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                    f'height="{h:.1f}" fill="{colour_of(code)}"/>'
                )
                if code & RETRIED:
                    out.append(
                        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(1.0, h / 4):.1f}" '
                        f'fill="{COLOURS["retrying"]}"/>'
                    )
            k = end
    bottom = y0 + rows * pitch + 2
    out.append(
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#999"/>'
    )
    for v in nice_ticks(b.t0, b.t1):
        x = LEFT + plot_w * (v - b.t0) / (b.t1 - b.t0)
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#999"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle" style="{TEXT}">'
            f"{seconds(v) if v else '0'}</text>"
        )
    return bottom + 22


def _histogram(h: dict[str, Any], top: float, out: list[str]) -> float:
    plot_w = WIDTH - LEFT - RIGHT
    height = 110.0
    scale = "log scale" if h["log"] else "linear scale"
    out.append(f'<text x="{LEFT}" y="{top + 12}" style="{TEXT};font-weight:bold">')
    out.append(f"Call durations: {h['n']:,} calls ({scale})</text>")
    y0, y1 = top + 22, top + 22 + height
    edges, counts = h["edges"], h["counts"]
    lo, hi = edges[0], edges[-1]

    def xpos(v: float) -> float:
        if h["log"]:
            f = (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            f = (v - lo) / (hi - lo)
        return LEFT + plot_w * min(1.0, max(0.0, f))

    peak = max(counts) or 1
    out.append(f'<text x="{LEFT - 6}" y="{y0 + 8}" text-anchor="end" style="{TEXT}">{peak}</text>')
    for k, c in enumerate(counts):
        if c:
            xa, xb = xpos(edges[k]), xpos(edges[k + 1])
            bh = height * c / peak
            out.append(
                f'<rect x="{xa:.1f}" y="{y1 - bh:.1f}" width="{max(1.0, xb - xa - 1):.1f}" '
                f'height="{bh:.1f}" fill="{COLOURS["done"]}"/>'
            )
    out.append(f'<line x1="{LEFT}" y1="{y1}" x2="{WIDTH - RIGHT}" y2="{y1}" stroke="#999"/>')
    for v in log_ticks(lo, hi) if h["log"] else nice_ticks(lo, hi, 5):
        if lo <= v <= hi:
            x = xpos(v)
            out.append(
                f'<text x="{x:.1f}" y="{y1 + 15}" text-anchor="middle" style="{TEXT}">{seconds(v)}</text>'
            )
    legend_x = WIDTH - RIGHT  # the median and p95: dashed lines, named at the top right
    for name, colour in (("p95", COLOURS["failed"]), ("median", "#222")):
        x = xpos(h[name])
        dash = 'stroke-dasharray="4 3" stroke-width="1.5"'
        out.append(
            f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="{colour}" {dash}/>'
        )
        label = f"{name} {seconds(h[name])}"
        out.append(
            f'<text x="{legend_x}" y="{top + 12}" text-anchor="end" '
            f'style="{TEXT};fill:{colour}">{label}</text>'
        )
        width = 6.2 * len(label)  # about 11px sans-serif
        out.append(
            f'<line x1="{legend_x - width - 22:.1f}" y1="{top + 8}" x2="{legend_x - width - 6:.1f}" '
            f'y2="{top + 8}" stroke="{colour}" {dash}/>'
        )
        legend_x -= width + 32
    return y1 + 24


def charts_svg(binned: Binned, hist: dict[str, Any]) -> str:
    """An SVG document: the timeline, then the histogram (when calls ended)."""
    out: list[str] = []
    y = _timeline(binned, 4.0, out) if binned.rows else 4.0
    if hist["n"]:
        y = _histogram(hist, y, out)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0f}" '
        f'viewBox="0 0 {WIDTH} {y:.0f}"><rect width="100%" height="100%" fill="#fff"/>'
        + "".join(out)
        + "</svg>"
    )


def charts_img(binned: Binned, hist: dict[str, Any]) -> str:
    """``charts_svg`` as an ``<img>`` (a data URI); "" when no call started."""
    if not binned.rows and not hist["n"]:
        return ""
    data = base64.b64encode(charts_svg(binned, hist).encode()).decode()
    return (
        f'<img class="sif-magic-charts" alt="timeline and call durations" '
        f'src="data:image/svg+xml;base64,{data}"/>'
    )


SNAPSHOT_BUCKETS = 240
SNAPSHOT_ROWS = 40


def job_charts(job: Any) -> str:
    """The snapshot's image of ``job`` (a ``Job``): "" before any call started."""
    t = job.timings()
    binned = bin_timeline(t, buckets=SNAPSHOT_BUCKETS, max_rows=SNAPSHOT_ROWS)
    return charts_img(binned, histogram(durations(t)))
