"""The pictures of a run and the side panel, in JupyterLab in Chromium.

One notebook: a ``%%sifmap`` of 200 calls on 4 processes where the first
process to claim a marker file is slow (0.8 s a call, the others 0.02 s); then
a second ``%%sifmap`` that blocks until the test writes a release file.

- The first job's Timeline tab: its canvas has a row per slot and the slow
  slot's row (found by the pid the marker file holds) is the only one painted
  near the right end; the histogram is on a log axis with its median and p95,
  and painted bars at both ends.
- While the second cell blocks, the side panel lists both jobs (the second
  running) and the workers; clicking the first job opens its log viewer with
  its lines, clicking a call in its grid shows that call. The release file is
  written only after that, so none of it can have waited for the cell to end.
- The saved notebook keeps the pictures as an SVG image in the snapshot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_sifmap_browser import _JS_KERNEL_IDLE_AND_RAN, _JS_PANEL, _panel, _saved_snapshot
from test_sifmap_browser import open_notebook as _open_notebook

open_notebook = _open_notebook  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.browser

N = 200
DONE_RGB = [67, 160, 71]


def _cells(mark: Path, release: Path) -> list[str]:
    return [
        "%load_ext sif_magic\n%sif_config backend=local processes=4 progress_delay=0.2",
        f"""%%sifmap x in range({N}) -o ys --chunksize 4
import os, time
try:
    fd = os.open({str(mark)!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
except FileExistsError:
    pass
slow = open({str(mark)!r}).read() == str(os.getpid())
print(f"call {{x}} on {{os.getpid()}}{{' (slow)' if slow else ''}}")
time.sleep(0.8 if slow else 0.02)
x""",
        f"""%%sifmap x in range(8) -o zs
import os, time
print(f"waiting {{x}}")
while not os.path.exists({str(release)!r}):
    time.sleep(0.05)
x""",
    ]


_JS_CHARTS = f"() => {_JS_PANEL}.querySelectorAll('.sif-magic-job .sif-charts')"

# The timeline's geometry and, per row, whether its pixel near the right end is painted.
_JS_TIMELINE = f"""() => {{
  const charts = {_JS_PANEL}.querySelectorAll('.sif-magic-job .sif-charts')[0];
  const d = charts.dataset;
  const canvas = charts.querySelector('.sif-charts-timeline-canvas');
  const ctx = canvas.getContext('2d');
  const pitch = +d.pitch, left = +d.left, w = +d.plotWidth;
  const rows = JSON.parse(d.labels || '[]');
  const probe = (x, r) => Array.from(ctx.getImageData(x, r * pitch + Math.floor(pitch / 2), 1, 1).data);
  return {{
    rows, pitch, left, w, log: d.log, median: +d.median, p95: +d.p95, calls: +d.calls,
    right: rows.map((_, r) => probe(left + w - 3, r)),
  }};
}}"""

_JS_HISTOGRAM = f"""() => {{
  const canvas = {_JS_PANEL}.querySelector('.sif-magic-job .sif-charts-histogram');
  const ctx = canvas.getContext('2d');
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const cols = new Set();
  for (let y = 0; y < canvas.height; y++) {{
    for (let x = 0; x < canvas.width; x++) {{
      const o = 4 * (y * canvas.width + x);
      if (data[o] === 67 && data[o + 1] === 160 && data[o + 2] === 71) {{ cols.add(x); }}
    }}
  }}
  const xs = Array.from(cols);
  return {{ width: canvas.width, height: canvas.height, min: Math.min(...xs), max: Math.max(...xs) }};
}}"""


def test_timeline_histogram_and_side_panel_in_jupyterlab(
    lab: Any, page: Any, open_notebook: Any, screenshot: Any, tmp_path: Path
) -> None:
    mark, release = tmp_path / "slow-pid", tmp_path / "release"
    name = f"pictures-{int(time.time() * 1000)}.ipynb"
    open_notebook(name, _cells(mark, release))
    panel = _panel(page)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        _check_pictures(page, panel, mark, screenshot)
        _check_side_panel(page, screenshot)
    finally:
        release.write_text("go")
    page.wait_for_function(_JS_KERNEL_IDLE_AND_RAN, timeout=60_000, polling=250)

    # The saved notebook keeps the pictures: an SVG image in the first job's snapshot.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    snap = _saved_snapshot(lab.root_dir / name, cell=1, timeout=15)
    assert snap is not None, f"no snapshot in the saved {name}"
    html = "".join(snap["data"]["text/html"])
    assert 'class="sif-magic-charts"' in html and "data:image/svg+xml;base64," in html
    assert not [e for e in page.console_errors if "sif-magic" in e], page.console_errors


def _check_pictures(page: Any, panel: Any, mark: Path, screenshot: Any) -> None:
    job = panel.locator(".sif-magic-job").first
    # the first job ends: its bar full (the second cell then blocks)
    page.wait_for_function(
        f"() => {{ const b = {_JS_PANEL}.querySelector('.sif-magic-job .widget-hprogress .progress-bar');"
        " return !!b && b.style.width === '100%'; }",
        timeout=120_000,
        polling=250,
    )
    charts, tl = _check_timeline(page, job, mark)
    screenshot(page, "pictures-timeline", charts)

    # Dragging across the timeline zooms: the view stretches the part dragged over at
    # once; the kernel then sends that span binned anew (the data's t0/t1 follow)
    canvas = charts.locator(".sif-charts-timeline-canvas")
    box = canvas.bounding_box()
    whole = float(charts.get_attribute("data-hi")) - float(charts.get_attribute("data-lo"))
    y = box["y"] + 4
    x0 = box["x"] + tl["left"] + 10
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x0 + 150, y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        f"() => {{ const d = ({_JS_CHARTS})()[0].dataset; return +d.hi - +d.lo < {whole} * 0.5; }}",
        timeout=5_000,
    )
    # ... and the kernel sends the span binned anew on its control channel, while the
    # next cell blocks the shell channel (where the widget's own message waits)
    page.wait_for_function(
        f"() => {{ const d = ({_JS_CHARTS})()[0].dataset; return d.zoomSource === 'control'"
        f" && +d.t1 - +d.t0 < {whole} * 0.5 && +d.t0 > 0; }}",
        timeout=15_000,
    )
    screenshot(page, "pictures-timeline-zoomed", charts)
    charts.locator(".sif-charts-timeline-canvas").dblclick()


def _check_timeline(page: Any, job: Any, mark: Path) -> tuple[Any, dict[str, Any]]:
    """Open the job's Timeline tab: the slow slot's row is the only one painted near
    the right end; the histogram has a log axis, its median and p95, bars at both ends."""
    job.locator(".widget-tab .lm-TabBar-tab").filter(has_text="Timeline").click()
    charts = job.locator(".sif-charts")
    charts.wait_for(state="visible", timeout=15_000)
    page.wait_for_function(
        f"() => {{ const c = ({_JS_CHARTS})()[0]; return !!c && +c.dataset.calls === {N}"
        " && +c.dataset.rows >= 2 && !!c.dataset.labels; }",
        timeout=30_000,
        polling=250,
    )
    tl = page.evaluate(_JS_TIMELINE)
    slow_pid = mark.read_text().strip()
    slow_rows = [r for r, label in enumerate(tl["rows"]) if label.endswith(f":{slow_pid}")]
    assert len(slow_rows) == 1, (slow_pid, tl["rows"])
    slow = slow_rows[0]
    painted = [r for r, px in enumerate(tl["right"]) if px[3] > 0]
    assert painted == [slow], f"rows painted at the right end: {painted}, slow row {slow}: {tl}"
    assert tl["right"][slow][:3] == DONE_RGB
    assert tl["log"] == "true" and tl["calls"] == N
    assert 0.01 < tl["median"] < 0.5 and tl["p95"] >= tl["median"], tl
    hist = page.evaluate(_JS_HISTOGRAM)
    # bars of the fast calls at the left, of the slow calls at the right
    assert hist["min"] < hist["width"] * 0.35 and hist["max"] > hist["width"] * 0.8, hist
    return charts, tl


def _check_side_panel(page: Any, screenshot: Any) -> None:
    page.evaluate("() => window.jupyterapp.shell.activateById('sif-magic-panel')")
    side = page.locator("#sif-magic-panel")
    side.wait_for(state="visible", timeout=15_000)
    # both jobs, the second still running (its calls wait for the release file)
    page.wait_for_function(
        "() => { const p = document.getElementById('sif-magic-panel');"
        " const jobs = p.querySelectorAll('.sif-panel-job');"
        " return jobs.length === 2 && jobs[0].dataset.done === 'false'"
        " && p.querySelectorAll('.sif-panel-worker').length > 0; }",
        timeout=60_000,
        polling=250,
    )
    # the panel's requests do not make the notebook look idle while its cell runs
    busy = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
    )
    assert busy == "busy", busy
    texts = side.locator(".sif-panel-job").all_inner_texts()
    assert f"{N} calls · finished" in texts[1] and "8 calls · running" in texts[0], texts
    workers = side.locator(".sif-panel-worker").all_inner_texts()
    assert any("up" in w for w in workers), workers
    screenshot(page, "panel-jobs-while-blocking", side)

    # clicking the first job opens its log viewer (and grid, timeline, histogram)
    side.locator(".sif-panel-job").nth(1).click()
    page.wait_for_function(
        "() => { const p = document.getElementById('sif-magic-panel');"
        " const lines = p.querySelectorAll('.sif-panel-log .sif-log-line');"
        " return lines.length > 0 && !!p.querySelector('.sif-panel-grid[data-drawn]'); }",
        timeout=30_000,
        polling=250,
    )
    lines = side.locator(".sif-panel-log .sif-log-line").all_inner_texts()
    assert any(line.startswith("[") and " on " in line for line in lines), lines[:5]
    assert side.locator(".sif-panel-grid").get_attribute("data-drawn") == str(N)
    # a click on call 3 in the panel's grid shows that call's line
    grid = side.locator(".sif-panel-grid")
    cell = int(grid.get_attribute("data-cell"))
    gbox = grid.bounding_box()
    page.mouse.click(gbox["x"] + 3 * cell + cell / 2, gbox["y"] + cell / 2)
    page.wait_for_function(
        "() => document.querySelector('#sif-magic-panel .sif-panel-log-title')"
        ".textContent.startsWith('call 3 · done')",
        timeout=30_000,
    )
    call_lines = side.locator(".sif-panel-log .sif-log-line").all_inner_texts()
    assert call_lines and call_lines[0].startswith("call 3 on "), call_lines
    screenshot(page, "panel-job-logview", side)
    print(json.dumps({"workers": workers}))


def test_timeline_and_panel_in_notebook7(
    notebook7: Any, page: Any, screenshot: Any, tmp_path: Path
) -> None:
    mark = tmp_path / "slow-pid"
    notebook7.run_notebook_cells(page, _cells(mark, tmp_path)[:2], name="pictures-nb7.ipynb")
    job = page.locator(".sif-magic-job").first
    charts, _ = _check_timeline(page, job, mark)
    screenshot(page, "pictures-timeline-notebook7", charts)
    page.evaluate("() => window.jupyterapp.shell.activateById('sif-magic-panel')")
    side = page.locator("#sif-magic-panel")
    side.wait_for(state="visible", timeout=15_000)
    page.wait_for_function(
        "() => document.querySelectorAll('#sif-magic-panel .sif-panel-job').length === 1",
        timeout=30_000,
        polling=250,
    )
    assert f"{N} calls · finished" in side.locator(".sif-panel-job").inner_text()
    screenshot(page, "panel-notebook7", side)
