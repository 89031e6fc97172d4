"""The pictures of a run without a browser: the timeline's binning, the duration
histogram, the SVG of the static snapshot and ``job.plot()``."""

from __future__ import annotations

import base64
import math
import pickle
import re
import xml.etree.ElementTree as ET
from array import array

import pytest

from sif_magic.display import html, svg, timeline
from sif_magic.job import Job
from sif_magic.protocol import DONE, FAILED, ResultSegment

T0 = 1_000_000.0  # the job's creation time in these tests


def seg(calls: list[tuple[int, float, float]], pid: int, status=None, attempts=None, host="h1"):
    """A result segment of ``(call, start, end)`` (seconds after T0) from slot ``pid``."""
    idx = [c for c, _, _ in calls]
    status = status or [DONE] * len(idx)
    times = array("d", [T0 + t for _, s, e in calls for t in (s, e)])
    return ResultSegment(
        array("q", idx),
        bytes(status),
        bytes(attempts or [1] * len(idx)),
        times,
        pickle.dumps([c if st == DONE else None for c, st in zip(idx, status)]),
        {},
        "w-" + host,
        host,
        pid,
    )


def straggler_job(n: int = 200) -> Job:
    """Three fast slots (0.1 s a call) and one slow slot (4 s a call, its first failed,
    its second retried)."""
    job = Job("pics", n, errors="collect", created=T0)
    fast = [i for i in range(n) if i % 20 != 0]
    slow = [i for i in range(n) if i % 20 == 0]
    for k, pid in enumerate((101, 102, 103)):
        mine = fast[k::3]
        job.apply_segments([seg([(c, 0.1 * j, 0.1 * j + 0.1) for j, c in enumerate(mine)], pid)])
    job.apply_segments(
        [
            seg(
                [(c, 4.0 * j, 4.0 * j + 4.0) for j, c in enumerate(slow)],
                999,
                status=[FAILED] + [DONE] * (len(slow) - 1),
                attempts=[1, 2] + [1] * (len(slow) - 2),
                host="slow",
            )
        ]
    )
    return job


# -- binning ------------------------------------------------------------------------


def test_the_timeline_has_a_row_per_slot_and_the_straggler_ends_last() -> None:
    job = straggler_job()
    b = timeline.bin_timeline(job.timings(), buckets=100)
    assert b.rows == ["h1:101", "h1:102", "h1:103", "slow:999"]
    assert b.calls == [64, 63, 63, 10] and sum(b.calls) == job.n
    assert b.t0 == 0.0 and b.t1 == pytest.approx(40.0)  # the slow slot's last call ends at 40 s
    ends = [b.last_busy(r) for r in range(4)]
    assert ends[3] == 99 and max(ends[:3]) <= 32, ends  # fast slots idle after ~6.2 s
    # the first slow call failed, the second was retried: both visible in their buckets
    assert b.cell(3, 0) == FAILED + 1
    assert b.cell(3, 12) == (DONE + 1) | timeline.RETRIED
    assert b.cell(3, 50) == DONE + 1 and b.cell(0, 50) == 0


def test_a_failure_is_not_hidden_by_done_calls_in_the_same_bucket() -> None:
    job = Job("f", 3, errors="collect", created=T0)
    job.apply_segments(
        [seg([(0, 0.0, 0.01), (1, 0.01, 0.02), (2, 0.02, 10.0)], 7, status=[DONE, FAILED, DONE])]
    )
    b = timeline.bin_timeline(job.timings(), buckets=10)
    assert b.cell(0, 0) == FAILED + 1  # three calls share bucket 0: the failure shows


def test_a_zoom_window_bins_only_its_span_and_running_calls_reach_now() -> None:
    job = straggler_job()
    b = timeline.bin_timeline(job.timings(), window=(4.0, 6.0), buckets=20)
    assert (b.t0, b.t1) == (4.0, 6.0)
    assert b.cell(0, 0) == DONE + 1 and b.cell(3, 19) == (DONE + 1) | timeline.RETRIED
    running = Job("r", 1, created=T0)
    running._outcomes.started(0, 1, T0 + 1.0, running._outcomes.host_id("w", "h", 5))
    t = running.timings()._replace(now=T0 + 3.0)
    b = timeline.bin_timeline(t, buckets=30)
    assert b.t1 == pytest.approx(3.0) and b.last_busy(0) == 29 and b.cell(0, 29) == 2  # running


def test_many_slots_share_rows() -> None:
    job = Job("many", 500, created=T0)
    job.apply_segments([seg([(i, 0.0, 1.0)], pid=1000 + i) for i in range(500)])
    b = timeline.bin_timeline(job.timings(), buckets=50, max_rows=100)
    assert len(b.rows) == 100 and len(b.cells) == 100 * 50
    assert b.rows[0].endswith("(+4)") and sum(b.calls) == 500


def test_100000_calls_bin_into_a_bounded_table() -> None:
    n = 100_000
    job = Job("big", n, created=T0)
    job.apply_segments(
        [
            seg([(i, 0.001 * (i // 8), 0.001 * (i // 8) + 0.001) for i in range(k, n, 8)], k)
            for k in range(8)
        ]  # fmt: skip
    )
    b = timeline.bin_timeline(job.timings())
    assert len(b.cells) == 8 * timeline.BUCKETS and sum(b.calls) == n


# -- histogram ------------------------------------------------------------------------


def test_histogram_is_log_when_durations_span_decades_with_median_and_p95() -> None:
    h = timeline.histogram(timeline.durations(straggler_job().timings()))
    assert h["n"] == 200 and h["log"] and sum(h["counts"]) == 200
    # 10 of 200 calls took 4 s: the p95 falls between the last fast call and the first slow one
    assert h["median"] == pytest.approx(0.1, rel=1e-6)
    assert h["p95"] == pytest.approx(0.1 + 0.05 * 3.9, rel=1e-6)
    assert h["edges"][0] == pytest.approx(0.1, rel=1e-6) and h["edges"][-1] == pytest.approx(
        4.0, rel=1e-6
    )
    ratios = [b / a for a, b in zip(h["edges"], h["edges"][1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)  # log-spaced
    assert h["counts"][0] == 190 and h["counts"][-1] == 10


def test_histogram_is_linear_for_durations_of_one_magnitude() -> None:
    h = timeline.histogram([1.0, 1.5, 2.0, 2.0, 3.0], bins=4)
    assert not h["log"] and h["edges"] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert h["counts"] == [1, 1, 2, 1] and h["median"] == 2.0
    assert timeline.histogram([])["n"] == 0
    assert timeline.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


# -- the SVG of the static snapshot ----------------------------------------------------


def _svg_of(snapshot_html: str) -> ET.Element:
    m = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', snapshot_html)
    assert m, snapshot_html[:300]
    return ET.fromstring(base64.b64decode(m.group(1)))


def test_the_snapshot_embeds_an_svg_of_the_timeline_and_the_histogram() -> None:
    job = straggler_job()
    out = html.snapshot(job)["text/html"]
    assert "sif-magic-summary" in out and 'class="sif-magic-charts"' in out
    root = _svg_of(out)
    ns = "{http://www.w3.org/2000/svg}"
    texts = ["".join(t.itertext()) for t in root.iter(f"{ns}text")]
    assert "Timeline: 4 worker slots" in texts and "slow:999" in texts
    assert any(t.startswith("Call durations: 200 calls (log scale)") for t in texts)
    assert "median 100 ms" in texts and "p95 295 ms" in texts
    rects = [r.attrib for r in root.iter(f"{ns}rect")]
    failed = [r for r in rects if r["fill"] == html.COLOURS["failed"]]
    assert failed  # the slow slot's failed first call
    # the straggler's row reaches the right end of the plot; the fast rows stop early
    right = svg.WIDTH - svg.RIGHT
    ends = [0.0] * 4
    for r in rects:
        if "data-row" in r:
            row = int(r["data-row"])
            ends[row] = max(ends[row], float(r["x"]) + float(r["width"]))
    assert math.isclose(ends[3], right, abs_tol=1.0), ends
    assert max(ends[:3]) < svg.LEFT + 0.2 * (right - svg.LEFT), ends


def test_a_job_without_started_calls_has_no_image() -> None:
    assert "<img" not in html.snapshot(Job("empty", 3))["text/html"]


def test_axis_labels_are_readable_durations() -> None:
    assert [svg.seconds(v) for v in (2e-5, 0.25, 1.5, 600)] == [
        "20 µs",
        "250 ms",
        "1.5 s",
        "10 min",
    ]
    assert svg.nice_ticks(0, 20, 5) == [0, 5, 10, 15, 20]
    assert svg.log_ticks(0.1, 4.0) == [0.1, 0.2, 0.5, 1.0, 2.0]  # one decade: 2 and 5 too
    assert svg.log_ticks(1e-3, 20.0) == [1e-3, 1e-2, 0.1, 1.0, 10.0]


# -- job.plot() -------------------------------------------------------------------------


def test_job_plot_returns_a_matplotlib_figure() -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the plots extra)")
    fig = straggler_job().plot()
    ax_t, ax_h = fig.axes[:2]
    assert [t.get_text() for t in ax_t.get_yticklabels()] == [
        "h1:101", "h1:102", "h1:103", "slow:999"
    ]  # fmt: skip
    assert ax_h.get_xscale() == "log"
    legend = [t.get_text() for t in ax_h.get_legend().get_texts()]
    assert legend == ["median 100 ms", "p95 295 ms"]
    assert ax_t.get_xlim() == pytest.approx((0.0, 40.0))
    fig.savefig(__import__("io").BytesIO(), format="png")  # it renders


def test_job_plot_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'pip install "sif_magic\[plots\]"'):
        straggler_job().plot()
