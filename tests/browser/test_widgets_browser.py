"""CallGrid and LogView in a real JupyterLab, in Chromium: drawing, hover, click, logs."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser


def _rgba(state: str) -> list[int]:
    from sif_magic.display import COLOURS

    hex_ = COLOURS[state]
    return [int(hex_[k : k + 2], 16) for k in (1, 3, 5)] + [255]


N = 100_000
FAILED_INDEX = 7  # first row: easy to reach with the mouse

SETUP = f"""
import random
import time
from ipywidgets import Output
from sif_magic.protocol import STATE_NAMES
from sif_magic.widgets import CallGrid, LogView

N = {N}
states = bytearray([2]) * N  # done
rng = random.Random(0)
for i in rng.sample(range(N), 200) + [{FAILED_INDEX}]:
    states[i] = 3  # failed
states[N - 5000:] = bytes(5000)  # queued
states[N - 5100:N - 5000] = bytes([1]) * 100  # running
states[11] = 5  # retrying
states[12] = 6  # lost
states[13] = 4  # cancelled

def describe(i):
    return f"call {{i}} · {{STATE_NAMES[states[i]]}} · host node{{i % 4}}"

grid = CallGrid(N, describe=describe)
grid.set_states(states)
out = Output()
grid.on_select(lambda i: out.append_stdout(f"selected {{i}}\\n"))
log = LogView()
log.on_mode_change(lambda m: out.append_stdout(f"mode {{m}}\\n"))
log.show(
    "call {FAILED_INDEX} · failed",
    [(1, "processing {FAILED_INDEX}\\n"), (2, "warning: odd input\\n"), (1, "still going\\n")],
    traceback="Traceback (most recent call last):\\n  File \\"<cell>\\", line 3, in work\\nValueError: bad {FAILED_INDEX}",
    dropped=2048,
)
display(grid, out, log)
"""


def _cell_centre(page: Any, index: int) -> tuple[float, float]:
    """Page coordinates of call ``index``'s cell, from the layout the view publishes."""
    layout = page.evaluate(
        """() => { const el = document.querySelector('.sif-grid');
                   return { cols: +el.dataset.cols, pitch: +el.dataset.pitch,
                            size: +el.dataset.cellSize }; }"""
    )
    box = page.locator(".sif-grid-canvas").bounding_box()
    x = box["x"] + (index % layout["cols"]) * layout["pitch"] + layout["size"] / 2
    y = box["y"] + (index // layout["cols"]) * layout["pitch"] + layout["size"] / 2
    return x, y


def _pixel(page: Any, index: int) -> list[int]:
    return page.evaluate(
        """(index) => {
             const el = document.querySelector('.sif-grid');
             const canvas = el.querySelector('canvas');
             const cols = +el.dataset.cols, pitch = +el.dataset.pitch;
             const x = (index % cols) * pitch, y = Math.floor(index / cols) * pitch;
             return Array.from(canvas.getContext('2d').getImageData(x, y, 1, 1).data);
           }""",
        index,
    )


def test_callgrid_and_logview_in_jupyterlab(
    page: Any, run_notebook_cells: Any, kernel_exec: Any, screenshot: Any
) -> None:
    run_notebook_cells(page, [SETUP], name="widgets.ipynb")
    grid = page.locator(".sif-grid")
    grid.wait_for(state="visible", timeout=30_000)
    page.wait_for_function(
        f"() => document.querySelector('.sif-grid').dataset.drawn === '{N}'", timeout=30_000
    )
    draw_ms = page.evaluate("() => document.querySelector('.sif-grid').dataset.drawMs")
    print(f"CallGrid: {N} calls drawn in {draw_ms} ms")
    screenshot(page, "widgets-lab")
    screenshot(page, "widgets-grid", grid)

    # The canvas draws every state in its colour (the Python side's, display.COLOURS).
    assert _pixel(page, FAILED_INDEX) == _rgba("failed") == [229, 57, 53, 255]  # red
    assert _pixel(page, 0) == _rgba("done") == [67, 160, 71, 255]  # green
    assert _pixel(page, N - 1) == _rgba("queued")
    assert _pixel(page, N - 5050) == _rgba("running")
    assert _pixel(page, 11) == _rgba("retrying")
    assert _pixel(page, 12) == _rgba("lost")
    assert _pixel(page, 13) == _rgba("cancelled")
    counts = kernel_exec(page, "print(grid.counts()['failed'], grid.counts()['queued'])").split()
    legend = page.locator(".sif-grid-legend").inner_text()
    assert f"failed {counts[0]}" in legend and f"queued {counts[1]}" in legend, legend

    # Hover: the tooltip shows the kernel's describe(i) text.
    x, y = _cell_centre(page, FAILED_INDEX)
    page.mouse.move(x, y)
    tooltip = page.locator(".sif-grid-tooltip")
    tooltip.wait_for(state="visible", timeout=5_000)
    page.wait_for_function(
        "() => document.querySelector('.sif-grid-tooltip').dataset.source === 'kernel'",
        timeout=15_000,
    )
    assert tooltip.inner_text() == f"call {FAILED_INDEX} · failed · host node{FAILED_INDEX % 4}"
    screenshot(page, "widgets-tooltip", grid)

    # Click: `selected` changes in the kernel and the on_select callback runs.
    page.mouse.click(x, y)
    page.get_by_text(f"selected {FAILED_INDEX}").wait_for(timeout=15_000)
    assert kernel_exec(page, "print(grid.selected)").strip() == str(FAILED_INDEX)

    # LogView: stderr in red, the traceback in its own block, the dropped note.
    logview = page.locator(".sif-log")
    stderr_line = logview.locator(".sif-log-stderr")
    assert stderr_line.inner_text().strip() == "warning: odd input"
    colour = stderr_line.evaluate("el => getComputedStyle(el).color")
    r, g, b = (int(v) for v in colour[colour.index("(") + 1 : -1].split(",")[:3])
    assert r > 150 and g < 100 and b < 100, colour
    assert logview.locator(".sif-log-line").count() == 3
    traceback = logview.locator(".sif-log-traceback")
    assert traceback.is_visible() and f"ValueError: bad {FAILED_INDEX}" in traceback.inner_text()
    assert logview.locator(".sif-log-dropped").inner_text() == "2048 earlier bytes dropped"
    assert logview.locator(".sif-log-title").inner_text() == f"call {FAILED_INDEX} · failed"

    # Search filters and highlights lines in the browser.
    logview.locator(".sif-log-search").fill("still")
    page.wait_for_function("() => document.querySelectorAll('.sif-log-line').length === 1")
    assert logview.locator(".sif-log-line mark").inner_text() == "still"
    assert logview.locator(".sif-log-matches").inner_text() == "1 of 3 lines"
    screenshot(page, "widgets-logview-search", logview)
    logview.locator(".sif-log-search").fill("")

    # The mode dropdown reaches the kernel's on_mode_change hook.
    logview.locator(".sif-log-mode").select_option("failures")
    page.get_by_text("mode failures").wait_for(timeout=15_000)
    assert kernel_exec(page, "print(log.mode)").strip() == "failures"

    # A kernel-side update reaches the open view (one message for all four traits).
    kernel_exec(
        page,
        "log.show('call 8 · running', [(1, f'line {i}\\n') for i in range(6000)])",
    )
    # The newest 5000 lines are put in the page, with a note for the rest.
    page.wait_for_function("() => document.querySelectorAll('.sif-log-line').length === 5000")
    hidden = logview.locator(".sif-log-hidden").inner_text()
    assert hidden.startswith("1000 earlier lines not shown"), hidden
    assert logview.locator(".sif-log-line").last.inner_text().strip() == "line 5999"
    assert not traceback.is_visible()
    # Following: the newest line is scrolled into view.
    assert page.evaluate(
        """() => { const b = document.querySelector('.sif-log-body');
                   return b.scrollHeight - b.scrollTop - b.clientHeight < 4; }"""
    )
    screenshot(page, "widgets-logview-follow", logview)
    assert not [e for e in page.console_errors if "sif-magic" in e], page.console_errors


def test_live_grid_updates_cost_one_message_each(
    page: Any, run_notebook_cells: Any, kernel_exec: Any, screenshot: Any
) -> None:
    """A pusher thread updates 100,000 calls 10 times a second: messages and bytes seen."""
    run_notebook_cells(
        page,
        [
            f"from sif_magic.widgets import CallGrid\ngrid = CallGrid({N})\ndisplay(grid)",
        ],
        name="live.ipynb",
    )
    page.locator(".sif-grid").wait_for(state="visible", timeout=30_000)
    page.evaluate(
        """() => {
             const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
             window.__sifIopub = { comm: 0, bytes: 0 };
             kernel.iopubMessage.connect((_, msg) => {
               if (msg.header.msg_type === 'comm_msg') {
                 window.__sifIopub.comm++;
                 for (const b of (msg.buffers || [])) { window.__sifIopub.bytes += b.byteLength; }
               }
             });
           }"""
    )
    pushes = 30
    kernel_exec(
        page,
        f"""
import threading, time
def push():
    states = bytearray({N})
    for step in range(1, {pushes} + 1):
        done = step * {N} // {pushes}
        states[:done] = bytes([2]) * done
        states[done:done + 100] = bytes([1]) * len(states[done:done + 100])
        for i in range(0, done, 997):
            states[i] = 3
        grid.set_states(states)
        time.sleep(0.1)
t = threading.Thread(target=push)
t.start()
t.join()
print(grid.updates_sent)
""",
    )
    expected_failed = len(range(0, N, 997))
    page.wait_for_function(
        f"() => document.querySelector('.sif-grid-legend').innerText.includes('failed {expected_failed}')",
        timeout=15_000,
    )
    seen = page.evaluate("() => window.__sifIopub")
    screenshot(page, "widgets-live-grid", page.locator(".sif-grid"))
    print(f"{pushes} pushes of {N} calls: {seen['comm']} comm messages, {seen['bytes']} bytes")
    assert seen["comm"] <= pushes
    assert seen["bytes"] < 64_000 * pushes
    assert "done" in page.locator(".sif-grid-legend").inner_text()


def test_widgets_render_in_notebook7(notebook7: Any, page: Any, screenshot: Any) -> None:
    notebook7.run_notebook_cells(
        page,
        [
            "from sif_magic.widgets import CallGrid, LogView\n"
            "grid = CallGrid(1000)\n"
            "grid.set_states(bytes([2]) * 500 + bytes([3]) + bytes(499))\n"
            "log = LogView()\n"
            "log.show('call 500', [(2, 'boom\\n')], traceback='ValueError: boom')\n"
            "display(grid, log)"
        ],
        name="nb7.ipynb",
    )
    page.wait_for_function(
        "() => { const el = document.querySelector('.sif-grid'); "
        "return !!el && el.dataset.drawn === '1000'; }",
        timeout=30_000,
    )
    assert _pixel(page, 500) == [229, 57, 53, 255]
    assert _pixel(page, 499) == [67, 160, 71, 255]
    assert page.locator(".sif-log-stderr").inner_text().strip() == "boom"
    assert "ValueError: boom" in page.locator(".sif-log-traceback").inner_text()
    screenshot(page, "widgets-notebook7")
