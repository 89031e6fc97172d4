"""A %%sifmap run on the local backend, watched in JupyterLab in Chromium as a user sees it.

One notebook: ``%load_ext sif_magic``, then a ``%%sifmap`` cell of 40 calls on 2
processes that print lines; call 7 raises, call 13 prints a line and then sleeps
3 s. While the run goes the test watches the log viewer (mode "all") for call
13's line and proves it arrived before the call finished (the call writes the
time it woke up into a file). After the run: the bar is full with the danger
style and the counts say "39 done" and "1 failed"; the grid paints call 7 in
the failure colour; clicking it shows its printed lines and traceback; the
saved notebook keeps a text/html snapshot of the outcome.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

N = 40
FAILED = 7
LONG = 13
LONG_SLEEP = 3.0
FAILURE_RGB = [229, 57, 53]  # COLOURS["failed"], #e53935
RUNNING_RGB = [30, 136, 229]  # COLOURS["running"], #1e88e5
DONE_RGB = [67, 160, 71]  # COLOURS["done"], #43a047


def _cells(marker: Path) -> list[str]:
    return [
        "%load_ext sif_magic\n%sif_config backend=local processes=2 progress_delay=0.2",
        f"""%%sifmap x in range({N}) -o ys
import time
print(f"start {{x}}")
if x == {LONG}:
    print("long call {LONG} is sleeping")
    time.sleep({LONG_SLEEP})
    with open({str(marker)!r}, "w") as f:
        f.write(repr(time.time()))
if x == {FAILED}:
    print("about to fail")
    raise ValueError("bad input {FAILED}")
time.sleep(0.3)
print(f"end {{x}}")
x * x""",
    ]


# Everything below is asked inside the notebook panel that is in front, so other
# notebooks a session left open (hidden tabs) cannot answer for it.
_JS_PANEL = "window.jupyterapp.shell.currentWidget.node"

_JS_KERNEL_IDLE_AND_RAN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') { return false; }
  const cells = w.content.model.cells;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type === 'code' && !cell.executionCount) { return false; }
  }
  return true;
}"""

# Truthy once the log viewer shows call LONG's line; returns what the page showed then.
_JS_LIVE_LINE = f"""(line) => {{
  const job = {_JS_PANEL}.querySelector('.sif-magic-job');
  const lines = Array.from(job.querySelectorAll('.sif-log-line')).map(el => el.textContent.trim());
  if (!lines.includes(line)) {{ return false; }}
  const bar = job.querySelector('.widget-hprogress .progress-bar');
  return {{ seenAt: Date.now() / 1000, lines, bar: bar ? bar.style.width : null,
            mode: job.querySelector('.sif-log-mode').value }};
}}"""

_JS_PIXEL = f"""(index) => {{
  const grid = {_JS_PANEL}.querySelector('.sif-magic-job .sif-grid');
  const cols = +grid.dataset.cols, pitch = +grid.dataset.pitch;
  const ctx = grid.querySelector('canvas').getContext('2d');
  return Array.from(ctx.getImageData((index % cols) * pitch,
                                     Math.floor(index / cols) * pitch, 1, 1).data);
}}"""

_JS_BAR_FULL = f"""() => {{
  const bar = {_JS_PANEL}.querySelector('.sif-magic-job .widget-hprogress .progress-bar');
  return !!bar && bar.style.width === '100%' && bar.classList.contains('progress-bar-danger');
}}"""


def _saved_snapshot(path: Path, cell: int, timeout: float) -> dict[str, Any] | None:
    """The output of code cell ``cell`` in the saved file that holds the HTML snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            outputs = json.loads(path.read_text())["cells"][cell]["outputs"]
        except (OSError, ValueError, KeyError, IndexError):
            outputs = []
        for out in outputs:
            html = out.get("data", {}).get("text/html", "")
            if "sif-magic-summary" in "".join(html):
                return out
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


def _wait_pixel(page: Any, index: int, rgb: list[int], timeout_ms: float) -> None:
    """Wait until call ``index``'s cell of the grid is painted ``rgb``."""
    page.wait_for_function(
        f"([i, rgb]) => {{ const p = ({_JS_PIXEL})(i); "
        "return p[0] === rgb[0] && p[1] === rgb[1] && p[2] === rgb[2]; }",
        arg=[index, rgb],
        timeout=timeout_ms,
    )


class _Clip:
    """A page region the ``screenshot`` fixture can shoot like a locator."""

    def __init__(self, page: Any, *locators: Any) -> None:
        boxes = [loc.bounding_box() for loc in locators]
        x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
        x1 = max(b["x"] + b["width"] for b in boxes)
        y1 = max(b["y"] + b["height"] for b in boxes)
        self.page, self.clip = page, {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}

    def screenshot(self, path: str) -> None:
        self.page.screenshot(path=path, clip=self.clip)


_JS_OPENED = """(name) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session
    && w.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && !!w.context && w.context.path.endsWith(name)
    && w.content.widgets.length > 0;
}"""


@pytest.fixture
def open_notebook(lab: Any, page: Any) -> Iterator[Callable[[str, list[str]], None]]:
    """``open_notebook(name, cells)``: write, then open in a JupyterLab workspace of its own.

    With the default workspace a notebook left open here would be restored into
    the pages of later tests (where page-wide locators would find our widgets).
    The notebook's kernel is shut down after the test.
    """
    opened: list[str] = []

    def open_(name: str, cells: list[str]) -> None:
        lab.write_notebook(name, cells)
        page.goto(f"{lab.url}lab/workspaces/{Path(name).stem}/tree/{name}")
        page.wait_for_function(_JS_OPENED, arg=name, timeout=120_000, polling=250)
        opened.append(name)

    yield open_
    if opened:
        try:
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception as e:  # noqa: BLE001 - the server stops its kernels at the end anyway
            print(f"could not shut the kernel of {opened[-1]} down: {e}")


def _panel(page: Any) -> Any:
    panel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return page.locator(f"[id='{panel_id}']")


def test_sifmap_run_live_in_jupyterlab(
    lab: Any, page: Any, open_notebook: Any, screenshot: Any, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    marker = tmp_path / f"call{LONG}-woke"
    name = f"sifmap-{int(time.time() * 1000)}.ipynb"
    open_notebook(name, _cells(marker))
    panel = _panel(page)
    # Not awaited: the command's promise settles only when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    # The job view appears under the cell (after progress_delay) with all its parts.
    job = panel.locator(".sif-magic-job")
    job.wait_for(state="visible", timeout=30_000)
    for part in (".widget-hprogress .progress-bar", ".sif-grid", ".sif-log"):
        job.locator(part).first.wait_for(state="visible", timeout=15_000)
    assert job.locator(".sif-log-mode").input_value() == "all"

    # (d) Call LONG's printed line shows up in the log viewer while the call sleeps.
    live_line = f"[{LONG}] long call {LONG} is sleeping"
    seen = page.wait_for_function(
        _JS_LIVE_LINE, arg=live_line, timeout=30_000, polling=50
    ).json_value()
    assert not marker.exists(), f"call {LONG} had finished before its line was seen: {seen}"
    assert seen["mode"] == "all"
    assert seen["bar"] != "100%", seen
    # Meanwhile the grid paints the call as running (its table is inflated and drawn
    # apart from the log viewer's update: give it a few frames).
    _wait_pixel(page, LONG, RUNNING_RGB, 2_000)
    assert not marker.exists(), f"call {LONG} ended before the grid showed it running"
    screenshot(page, "sifmap-live-logview", job.locator(".sif-log"))
    screenshot(page, "sifmap-live-job", job)

    # The run ends: kernel idle, every cell ran (the %%sifmap cell raises call 7's error).
    page.wait_for_function(_JS_KERNEL_IDLE_AND_RAN, timeout=60_000, polling=250)
    woke_at = float(marker.read_text())
    assert seen["seenAt"] < woke_at, (seen["seenAt"], woke_at)
    print(f"call {LONG}'s line was in the page {woke_at - seen['seenAt']:.2f} s before it ended")

    # (a) The bar reaches the end, in the danger style; the counts line has the outcome.
    page.wait_for_function(_JS_BAR_FULL, timeout=15_000)
    counts = job.locator(".widget-html").filter(has_text=re.compile(r"\d+ done"))
    counts_text = counts.inner_text()
    assert f"{N - 1} done" in counts_text and "1 failed" in counts_text, counts_text
    assert "queued" not in counts_text and "running" not in counts_text, counts_text
    screenshot(page, "sifmap-bar", _Clip(page, job.locator(".widget-hprogress"), counts))

    # (b) The grid: call FAILED in the failure colour, its neighbours done (green).
    grid = job.locator(".sif-grid")
    page.wait_for_function(
        f"() => {_JS_PANEL}.querySelector('.sif-magic-job .sif-grid').dataset.drawn === '{N}'",
        timeout=15_000,
    )
    _wait_pixel(page, FAILED, FAILURE_RGB, 15_000)
    assert page.evaluate(_JS_PIXEL, FAILED)[:3] == FAILURE_RGB
    for i in (0, FAILED + 1, LONG, N - 1):
        assert page.evaluate(_JS_PIXEL, i)[:3] == DONE_RGB, f"call {i} is not drawn as done"
    legend = grid.locator(".sif-grid-legend").inner_text()
    assert f"done {N - 1}" in legend and "failed 1" in legend, legend
    screenshot(page, "sifmap-grid", grid)

    # (c) Clicking the failed call shows its lines and traceback in the log viewer.
    grid.scroll_into_view_if_needed()
    layout = grid.evaluate(
        "el => ({cols: +el.dataset.cols, pitch: +el.dataset.pitch, size: +el.dataset.cellSize})"
    )
    box = grid.locator(".sif-grid-canvas").bounding_box()
    x = box["x"] + (FAILED % layout["cols"]) * layout["pitch"] + layout["size"] / 2
    y = box["y"] + (FAILED // layout["cols"]) * layout["pitch"] + layout["size"] / 2
    page.mouse.click(x, y)
    logview = job.locator(".sif-log")
    title = logview.locator(".sif-log-title")
    page.wait_for_function(
        f"() => {_JS_PANEL}.querySelector('.sif-magic-job .sif-log-title')"
        f".textContent.startsWith('call {FAILED} · failed')",
        timeout=15_000,
    )
    assert logview.locator(".sif-log-mode").input_value() == "call"
    lines = [t.strip() for t in logview.locator(".sif-log-line").all_inner_texts()]
    assert lines == [f"start {FAILED}", "about to fail"], lines
    traceback = logview.locator(".sif-log-traceback")
    assert traceback.is_visible()
    tb = traceback.inner_text()
    assert f"ValueError: bad input {FAILED}" in tb and "raise ValueError" in tb, tb
    page.mouse.move(0, 0)  # the tooltip would cover the log viewer's title
    job.locator(".sif-grid-tooltip").wait_for(state="hidden", timeout=5_000)
    screenshot(page, "sifmap-logview", logview)
    screenshot(page, "sifmap-job", job)
    print(f"title after click: {title.inner_text()!r}")

    # The cell itself re-raised call FAILED's error with the worker's traceback.
    outputs = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.model.cells.get(1).outputs.toJSON()"
    )
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert errors and "bad input" in errors[0]["evalue"], outputs

    # (e) The saved notebook keeps a static text/html snapshot next to the widget view.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    snapshot = _saved_snapshot(lab.root_dir / name, cell=1, timeout=15)
    assert snapshot is not None, f"no text/html snapshot in the saved {name}"
    html = "".join(snapshot["data"]["text/html"])
    assert "finished" in html and f"{N - 1} done" in html and "1 failed" in html, html
    assert "application/vnd.jupyter.widget-view+json" in snapshot["data"]
    assert f"{N - 1} done" in "".join(snapshot["data"]["text/plain"])

    assert not [e for e in page.console_errors if "sif-magic" in e], page.console_errors
    print(f"test took {time.monotonic() - t0:.1f} s (without the server start)")


def test_all_calls_view_keeps_lines_printed_at_the_end(page: Any, open_notebook: Any) -> None:
    """Every line of every call is in the "All calls" view once the run is over."""
    n = 4
    name = f"sifmap-all-{int(time.time() * 1000)}.ipynb"
    open_notebook(
        name,
        [
            "%load_ext sif_magic\n%sif_config backend=local processes=2 progress_delay=0.1",
            f"%%sifmap x in range({n}) -o ys\nimport time\nprint(f'start {{x}}')\n"
            "time.sleep(0.5)\nprint(f'end {x}')\nx",
        ],
    )
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(_JS_KERNEL_IDLE_AND_RAN, timeout=60_000, polling=250)
    logview = _panel(page).locator(".sif-magic-job .sif-log")
    logview.wait_for(timeout=15_000)
    assert logview.locator(".sif-log-mode").input_value() == "all"
    expected = sorted(f"[{i}] {what} {i}" for i in range(n) for what in ("start", "end"))
    deadline = time.monotonic() + 5
    while True:
        lines = sorted(t.strip() for t in logview.locator(".sif-log-line").all_inner_texts())
        if lines == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines == expected
