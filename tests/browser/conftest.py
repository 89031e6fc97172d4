"""Fixtures for tests that drive JupyterLab in Debian's Chromium through Playwright.

- ``lab`` (session): a JupyterLab server on a free 127.0.0.1 port, token off,
  temporary config/data/root dirs, announcements off, ``window.jupyterapp``
  exposed. A :class:`Lab` with ``url``, ``root_dir``, ``pid``, ``log_path`` and
  the notebook helpers below.
- ``notebook7`` (session): the same for Notebook 7, skipped without ``notebook``.
- ``browser`` (session): Chromium (``/usr/bin/chromium``, or ``$SIF_MAGIC_CHROMIUM``).
- ``page`` (function): a fresh 1400x1000 page; on a failing test its screenshot
  is saved as ``test-artifacts/FAILED-<test>.png``; ``page.console_errors``
  lists the browser console's errors.
- ``run_notebook_cells(page, cells, name=None, timeout=180, allow_errors=False)``:
  writes the cells to a notebook, opens it, runs all cells, waits until every
  cell ran and the kernel is idle; returns each code cell's outputs (nbformat JSON).
- ``kernel_exec(page, code, timeout=60)``: runs code in the open notebook's
  kernel without adding a cell; returns its stdout (+ text/plain result).
- ``screenshot(page, name, locator=None)``: saves ``test-artifacts/<name>.png``.

Missing Chromium or Playwright skips these tests with the reason, except in CI
(``CI=true``), where it fails. Every test here is marked ``browser``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SIF_MAGIC_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = os.environ.get("SIF_MAGIC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
LABEXTENSION_NAME = "sif-magic"
IN_TREE_LABEXTENSION = REPO / "sif_magic" / "labextension"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the browser tests must run."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests may not be skipped)", pytrace=False)
    pytest.skip(reason)


# -- the server -------------------------------------------------------------------


@dataclass
class Lab:
    """A running JupyterLab (or Notebook 7) server started by the tests."""

    url: str  # ends with "/"
    root_dir: Path
    pid: int
    log_path: Path
    app: str = "lab"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def write_notebook(self, name: str, cells: Sequence[str | tuple[str, str]]) -> Path:
        """Write a notebook of ``cells`` (code strings, or ("markdown", text)) into the root dir."""
        nb_cells = []
        for cell in cells:
            kind, source = cell if isinstance(cell, tuple) else ("code", cell)
            entry: dict[str, Any] = {"cell_type": kind, "metadata": {}, "source": source}
            if kind == "code":
                entry.update(execution_count=None, outputs=[])
            nb_cells.append(entry)
        notebook = {
            "cells": nb_cells,
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        path = self.root_dir / name
        path.write_text(json.dumps(notebook, indent=1))
        return path

    def notebook_url(self, name: str) -> str:
        prefix = "lab/tree" if self.app == "lab" else "notebooks"
        return f"{self.url}{prefix}/{name}"

    def open_notebook(self, page: Any, name: str, timeout: float = 120) -> None:
        """Open ``name`` and wait until its kernel is idle."""
        page.goto(self.notebook_url(name))
        try:
            page.wait_for_function(_JS_KERNEL_IDLE, arg=name, timeout=timeout * 1000, polling=250)
        except Exception as e:
            raise AssertionError(
                f"notebook {name} did not reach an idle kernel in {timeout:.0f} s; "
                f"server log:\n{self.log_tail()}"
            ) from e

    def run_notebook_cells(
        self,
        page: Any,
        cells: Sequence[str | tuple[str, str]],
        name: str | None = None,
        timeout: float = 180,
        allow_errors: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """Write, open and run a notebook; returns the outputs of each code cell."""
        if name is None:
            name = f"nb-{int(time.time() * 1000)}.ipynb"
        self.write_notebook(name, cells)
        self.open_notebook(page, name, timeout=timeout)
        page.evaluate(
            "() => { window.__sifRunAll = window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )
        try:
            page.wait_for_function(_JS_ALL_RAN, timeout=timeout * 1000, polling=250)
        except Exception as e:
            raise AssertionError(
                f"cells of {name} did not finish in {timeout:.0f} s; server log:\n{self.log_tail()}"
            ) from e
        outputs: list[list[dict[str, Any]]] = page.evaluate(_JS_OUTPUTS)
        if not allow_errors:
            for i, cell_outputs in enumerate(outputs):
                for out in cell_outputs:
                    if out.get("output_type") == "error":
                        tb = _strip_ansi("\n".join(out.get("traceback", [])))
                        raise AssertionError(f"cell {i} of {name} raised:\n{tb}")
        return outputs

    def kernel_exec(self, page: Any, code: str, timeout: float = 60) -> str:
        """Run ``code`` in the open notebook's kernel (no cell); returns what it printed."""
        result = page.evaluate(_JS_KERNEL_EXEC, [code, timeout * 1000])
        if result["error"]:
            raise AssertionError(f"kernel_exec failed: {result['error']}\n{code}")
        return result["out"]


_JS_KERNEL_IDLE = """(name) => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const ctx = w && w.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  return !!kernel && kernel.status === 'idle' && !!w.context && w.context.path.endsWith(name)
    && !!w.content && w.content.widgets.length > 0;
}"""

_JS_ALL_RAN = """() => {
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

_JS_OUTPUTS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const result = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type === 'code') { result.push(cell.outputs.toJSON()); }
  }
  return result;
}"""

_JS_KERNEL_EXEC = """async ([code, timeoutMs]) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, store_history: false, silent: false });
  let out = '';
  let error = null;
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream') { out += msg.content.text; }
    else if (t === 'execute_result') { out += (msg.content.data['text/plain'] || '') + '\\n'; }
    else if (t === 'error') { error = msg.content.ename + ': ' + msg.content.evalue; }
  };
  const timer = new Promise((_, reject) =>
    setTimeout(() => reject(new Error('kernel_exec timed out')), timeoutMs));
  await Promise.race([future.done, timer]);
  return { out, error };
}"""


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _labextension_installed() -> bool:
    from jupyter_core.paths import jupyter_path

    return any(
        (Path(p) / LABEXTENSION_NAME / "package.json").exists()
        for p in jupyter_path("labextensions")
    )


def start_server(base: Path, app: str = "lab", timeout: float = 90) -> Lab:
    """Start ``jupyter lab`` (or ``jupyter notebook``, Notebook 7) with dirs under ``base``.

    The in-tree build (sif_magic/labextension/, made by ``pip install -e .`` or
    ``jlpm build`` in labextension/) is put first on the labextension path, so
    the front-end tested is the one just built.
    """
    root, config, data, runtime, extra = (
        base / d for d in ("root", "config", "data", "runtime", "path")
    )
    for d in (root, config / "labconfig", data, runtime, extra / "labextensions", base / "ipython"):
        d.mkdir(parents=True, exist_ok=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    if (IN_TREE_LABEXTENSION / "package.json").exists():
        (extra / "labextensions" / LABEXTENSION_NAME).symlink_to(IN_TREE_LABEXTENSION)
    elif not _labextension_installed():
        _unavailable(
            "the sif-magic labextension is not built: run `pip install -e .` "
            "(or `jlpm install && jlpm build` in labextension/)"
        )
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(data),
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_PATH=os.pathsep.join(filter(None, [str(extra), env.get("JUPYTER_PATH")])),
        IPYTHONDIR=str(base / "ipython"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        JUPYTER_PLATFORM_DIRS="1",
    )
    port = _free_port()
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [
        sys.executable, "-m", "jupyter", app,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        "--allow-root",
        f"--{app_class}.expose_app_in_browser=True",
    ]  # fmt: skip
    if app == "lab":  # Notebook 7 has no such trait (and fails to load with it)
        cmd.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    log_path = base / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    lab = Lab(f"http://127.0.0.1:{port}/", root, process.pid, log_path, app, process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter {app} exited with {process.returncode}:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}api/status", timeout=2) as response:
                if response.status == 200:
                    return lab
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(lab)
            raise RuntimeError(
                f"jupyter {app} did not answer in {timeout:.0f} s:\n{lab.log_tail()}"
            )
        time.sleep(0.25)


def stop_server(lab: Lab) -> None:
    """Stop the server by its pid (it shuts its kernels down), then its process group."""
    process = lab.process
    if process is None or process.poll() is not None:
        return
    process.terminate()  # SIGTERM: the server shuts its kernels down and exits
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    try:  # kernels the server left behind share its session (start_new_session=True)
        os.killpg(lab.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, _browser_prereqs: None) -> Iterator[Lab]:
    server = start_server(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory: pytest.TempPathFactory, _browser_prereqs: None) -> Iterator[Lab]:
    """A Notebook 7 server (``jupyter notebook``); skips when the notebook package is absent."""
    pytest.importorskip("notebook", minversion="7", reason="Notebook 7 is not installed")
    server = start_server(tmp_path_factory.mktemp("notebook7"), app="notebook")
    try:
        yield server
    finally:
        stop_server(server)


# -- the browser ------------------------------------------------------------------


@pytest.fixture(scope="session")
def _browser_prereqs() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        _unavailable("JupyterLab is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def browser(_browser_prereqs: None) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception as e:
        pw.stop()
        if _in_ci():
            raise
        pytest.skip(f"Chromium at {CHROMIUM} did not start: {e}")
    try:
        yield chromium
    finally:
        chromium.close()
        pw.stop()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.console_errors = errors
    try:
        yield pg
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            _save_screenshot(pg, f"FAILED-{request.node.name}")
        context.close()


def _save_screenshot(page: Any, name: str, locator: Any = None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    try:
        (locator or page).screenshot(path=str(path))
    except Exception as e:  # a screenshot must not hide the test's own result
        print(f"screenshot {path} failed: {e}", file=sys.stderr)
    return path


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """``screenshot(page, name, locator=None)`` -> path of test-artifacts/<name>.png."""
    return _save_screenshot


@pytest.fixture
def run_notebook_cells(lab: Lab) -> Callable[..., list[list[dict[str, Any]]]]:
    return lab.run_notebook_cells


@pytest.fixture
def kernel_exec(lab: Lab) -> Callable[..., str]:
    return lab.kernel_exec
