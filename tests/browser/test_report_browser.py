"""``sif_magic.report`` seen in JupyterLab: a running call's cell is partly filled in
the grid, its tooltip says how far it is and what it said last, and the bar
counts the fraction, while the ``%%sifmap`` cell blocks the kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_sifmap_browser import _JS_KERNEL_IDLE_AND_RAN, _JS_PANEL, _panel, open_notebook

pytestmark = pytest.mark.browser
__all__ = ["open_notebook"]  # the fixture, used by name

REPORTING = 2
DONE_RGB = [67, 160, 71]  # COLOURS["done"], #43a047
RUNNING_RGB = [30, 136, 229]  # COLOURS["running"], #1e88e5

_JS_CELL_PIXELS = f"""(index) => {{
  const grid = {_JS_PANEL}.querySelector('.sif-magic-job .sif-grid');
  const cols = +grid.dataset.cols, pitch = +grid.dataset.pitch, size = +grid.dataset.cellSize;
  const ctx = grid.querySelector('canvas').getContext('2d');
  const x = (index % cols) * pitch, y = Math.floor(index / cols) * pitch + Math.floor(size / 2);
  const at = dx => Array.from(ctx.getImageData(x + dx, y, 1, 1).data).slice(0, 3);
  return {{ left: at(0), right: at(size - 1), cells: grid.dataset.progressCells }};
}}"""


def test_a_reported_fraction_fills_part_of_the_calls_cell(
    lab: Any, page: Any, open_notebook: Any, screenshot: Any, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    name = f"report-{int(time.time() * 1000)}.ipynb"
    open_notebook(
        name,
        [
            "%load_ext sif_magic\n%sif_config backend=local processes=2 progress_delay=0.1",
            f"""%%sifmap x in range(4) -o ys
import os, time
import sif_magic
if x == {REPORTING}:
    sif_magic.report(0.5, "half way there")
    while not os.path.exists({str(go)!r}):
        time.sleep(0.05)
x""",
        ],
    )
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    job = _panel(page).locator(".sif-magic-job")
    grid = job.locator(".sif-grid")
    grid.wait_for(state="visible", timeout=30_000)
    page.wait_for_function(
        f"(i) => {{ const p = ({_JS_CELL_PIXELS})(i); return p.cells === '1'"
        " && p.left.join() === '67,160,71' && p.right.join() === '30,136,229'; }",
        arg=REPORTING,
        timeout=30_000,
        polling=100,
    )
    pixels = page.evaluate(_JS_CELL_PIXELS, REPORTING)
    assert pixels["left"] == DONE_RGB and pixels["right"] == RUNNING_RGB, pixels
    # the bar counts the 3 calls that ended and half of the one that reports: 3.5 of 4
    bar = job.locator(".widget-hprogress .progress-bar")
    page.wait_for_function(
        f"() => {_JS_PANEL}.querySelector('.sif-magic-job .widget-hprogress .progress-bar')"
        ".style.width === '87.5%'",
        timeout=15_000,
    )
    # the tooltip (the grid's own: the kernel is busy with the cell) shows the report
    grid.scroll_into_view_if_needed()
    layout = grid.evaluate(
        "el => ({cols: +el.dataset.cols, pitch: +el.dataset.pitch, size: +el.dataset.cellSize})"
    )
    box = grid.locator(".sif-grid-canvas").bounding_box()
    page.mouse.move(
        box["x"] + (REPORTING % layout["cols"]) * layout["pitch"] + layout["size"] / 2,
        box["y"] + (REPORTING // layout["cols"]) * layout["pitch"] + layout["size"] / 2,
    )
    tooltip = grid.locator(".sif-grid-tooltip")
    tooltip.wait_for(state="visible", timeout=5_000)
    text = tooltip.inner_text()
    assert f"call {REPORTING} · running · 50%" in text and "» half way there" in text, text
    screenshot(page, "report-partial-fill", job)
    assert bar.is_visible()
    go.touch()
    page.wait_for_function(_JS_KERNEL_IDLE_AND_RAN, timeout=60_000, polling=250)
    page.wait_for_function(
        f"(i) => ({_JS_CELL_PIXELS})(i).right.join() === '67,160,71'", arg=REPORTING, timeout=15_000
    )
    assert not [e for e in page.console_errors if "sif-magic" in e], page.console_errors
