"""Clicks under a blocking ``%%sifmap`` cell are answered while it runs (JupyterLab, Chromium).

One notebook: a ``%%sifmap`` of 4 calls on 2 processes; each call prints a line
to stdout and one to stderr, then waits for a release file that the test writes
only at the end. While the cell holds the kernel's shell channel (where widget
messages wait), the test clicks a running call in the grid under the cell and
sees its details (the log viewer's title: index, state, host) and its lines,
switches the log viewer's modes (failures, all calls), hovers a call for the
kernel's description of it, and clicks another call. Only then is the release
file written, so none of it can have waited for the cell to end. After the run
the views show what was asked last (call 0, now done), not a replay of the
clicks. The same in Notebook 7 (skipped without the ``notebook`` package).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_sifmap_browser import _JS_KERNEL_IDLE_AND_RAN, _JS_PANEL, _panel
from test_sifmap_browser import open_notebook as _open_notebook

open_notebook = _open_notebook  # the fixture, under the name the tests ask for

pytestmark = pytest.mark.browser

N = 4


def _cells(release: Path) -> list[str]:
    return [
        "%load_ext sif_magic\n%sif_config backend=local processes=2 progress_delay=0.2",
        f"""%%sifmap x in range({N}) -o ys
import os, sys, time
print(f"call {{x}} waits", flush=True)
print(f"call {{x}} warns", file=sys.stderr, flush=True)
while not os.path.exists({str(release)!r}):
    time.sleep(0.05)
x""",
    ]


# What the job's log viewer shows: its title, mode and lines (text, stderr or not).
_JS_LOG = f"""() => {{
  const job = {_JS_PANEL}.querySelector('.sif-magic-job');
  const log = job && job.querySelector('.sif-log');
  if (!log) {{ return null; }}
  return {{
    title: log.querySelector('.sif-log-title').textContent,
    mode: log.querySelector('.sif-log-mode').value,
    lines: Array.from(log.querySelectorAll('.sif-log-line')).map(el =>
      [el.textContent.trim(), el.classList.contains('sif-log-stderr')]),
  }};
}}"""

_JS_KERNEL_STATUS = (
    "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
)


def _wait_log(page: Any, test: str, what: str, timeout_ms: float = 20_000) -> dict[str, Any]:
    """Wait until the log viewer's state ``log`` passes the JS expression ``test``."""
    try:
        page.wait_for_function(
            f"() => {{ const log = ({_JS_LOG})(); return !!log && ({test}); }}",
            timeout=timeout_ms,
            polling=100,
        )
    except Exception as e:
        raise AssertionError(f"{what}; the log viewer shows {page.evaluate(_JS_LOG)}") from e
    return page.evaluate(_JS_LOG)


# Before an action: note the time of the user's next click or change (caught first,
# in the capture phase) and when the log viewer's title first starts with `prefix`
# (a MutationObserver); `_JS_TOOK` then gives the milliseconds in between.
_JS_WATCH_TITLE = f"""(prefix) => {{
  const title = {_JS_PANEL}.querySelector('.sif-magic-job .sif-log-title');
  window.__sifSeen = null;
  const seen = () => {{
    if (window.__sifSeen === null && title.textContent.startsWith(prefix)) {{
      window.__sifSeen = performance.now();
    }}
  }};
  new MutationObserver(seen).observe(title, {{ childList: true, characterData: true, subtree: true }});
  const start = () => {{ window.__sifT0 = performance.now(); }};
  for (const type of ['click', 'change']) {{
    window.addEventListener(type, start, {{ capture: true, once: true }});
  }}
}}"""
_JS_TOOK = "() => Math.round(window.__sifSeen - window.__sifT0)"


def _cell_centre(grid: Any, index: int) -> tuple[float, float]:
    canvas = grid.locator("canvas")
    box = canvas.bounding_box()
    cols, pitch = int(grid.get_attribute("data-cols")), int(grid.get_attribute("data-pitch"))
    x = box["x"] + (index % cols) * pitch + pitch / 2 - 0.5
    y = box["y"] + (index // cols) * pitch + pitch / 2 - 0.5
    return x, y


def test_grid_clicks_and_log_modes_answer_while_a_blocking_sifmap_runs(
    page: Any, open_notebook: Any, screenshot: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    open_notebook(f"clicks-{int(time.time() * 1000)}.ipynb", _cells(release))
    _check_clicks(page, release, screenshot, "clicks-call-while-blocking")


def test_grid_clicks_answer_while_a_blocking_sifmap_runs_in_notebook7(
    notebook7: Any, page: Any, screenshot: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    name = f"clicks-nb7-{int(time.time() * 1000)}.ipynb"
    notebook7.write_notebook(name, _cells(release))
    notebook7.open_notebook(page, name)
    try:
        _check_clicks(page, release, screenshot, "clicks-call-while-blocking-notebook7")
    finally:
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


def _check_clicks(page: Any, release: Path, screenshot: Any, shot: str) -> None:
    """Run the notebook that is open; click, switch modes and hover while it blocks."""
    panel = _panel(page)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        # the two running calls printed: the viewer shows every call's lines while none is picked
        _wait_log(
            page,
            "log.mode === 'all' && ['[0] call 0 waits', '[1] call 1 waits']"
            ".every(t => log.lines.some(l => l[0] === t))",
            "the running calls' lines never showed",
            timeout_ms=120_000,
        )
        job = panel.locator(".sif-magic-job")
        grid = job.locator(".sif-grid")

        # a click on call 1: its details (title) and its own lines, stderr in red
        took: dict[str, int] = {}
        at = _cell_centre(grid, 1)
        page.evaluate(_JS_WATCH_TITLE, "call 1 · running")
        page.mouse.click(*at)
        log = _wait_log(
            page,
            "log.title.startsWith('call 1 · running') && log.lines.length === 2",
            "a click on call 1 was not answered while the cell runs",
        )
        took["click"] = page.evaluate(_JS_TOOK)
        assert log["mode"] == "call", log
        assert log["lines"] == [["call 1 waits", False], ["call 1 warns", True]], log
        screenshot(page, shot, job)

        # the log modes: failures (none yet), then every call's lines
        page.evaluate(_JS_WATCH_TITLE, "failed calls")
        job.locator(".sif-log-mode").select_option("failures")
        _wait_log(page, "log.title === 'failed calls (0)' && log.lines.length === 0",
                  "the 'Failures' mode was not answered while the cell runs")  # fmt: skip
        took["mode"] = page.evaluate(_JS_TOOK)
        job.locator(".sif-log-mode").select_option("all")
        log = _wait_log(
            page,
            "log.title.startsWith('all calls') && log.lines.some(l => l[0] === '[0] call 0 warns')",
            "the 'All calls' mode was not answered while the cell runs",
        )
        assert log["mode"] == "all", log

        # hovering call 0 shows the kernel's description of it, not only the local one
        page.mouse.move(*_cell_centre(grid, 0))
        tooltip = job.locator(".sif-grid-tooltip")
        page.wait_for_function(
            f"() => {{ const t = {_JS_PANEL}.querySelector('.sif-magic-job .sif-grid-tooltip');"
            " return t.dataset.source === 'kernel' && t.dataset.index === '0'; }",
            timeout=20_000,
        )
        assert tooltip.inner_text().startswith("call 0 · running"), tooltip.inner_text()

        # a click on call 0: back to one call's lines
        page.mouse.click(*_cell_centre(grid, 0))
        log = _wait_log(
            page,
            "log.title.startsWith('call 0 · running') && log.mode === 'call'",
            "a click on call 0 was not answered while the cell runs",
        )
        assert log["lines"] == [["call 0 waits", False], ["call 0 warns", True]], log
        # all of that while the cell still runs (its calls wait for the release file)
        assert not release.exists()
        assert page.evaluate(_JS_KERNEL_STATUS) == "busy"
        print(json.dumps({"ms_to_title_while_blocking": took}))
    finally:
        release.write_text("go")
    page.wait_for_function(_JS_KERNEL_IDLE_AND_RAN, timeout=60_000, polling=250)

    # after the run the views show what was asked last, now done: no click is replayed
    log = _wait_log(
        page,
        "log.title.startsWith('call 0 · done') && log.mode === 'call'",
        "the log viewer does not show the last call clicked after the run",
    )
    assert log["lines"] == [["call 0 waits", False], ["call 0 warns", True]], log
    selected = page.evaluate(
        f"() => {{ const el = {_JS_PANEL}.querySelector('.sif-magic-job .sif-grid');"
        " return el.dataset.selected; }"
    )
    assert selected == "0", selected
    assert not [e for e in page.console_errors if "sif-magic" in e], page.console_errors
