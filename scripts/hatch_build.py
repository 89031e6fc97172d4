"""Hatch build hook: the JupyterLab front-end (labextension/) into the wheel, or a clear skip.

Every wheel build comes here: `pip install .`, `pip install -e .`, `pip install git+...`
and `scripts/build-wheel`. With Node.js on PATH, jlpm (from the jupyter-builder package,
which the hook asks for only then) builds labextension/ into sif_magic/labextension/,
shipped as share/jupyter/labextensions/sif-magic. Without Node.js the Python package
is built alone and the build says once, on the terminal, what was skipped and how to
get it; a job's view in JupyterLab then lacks its two custom widgets.

SIF_MAGIC_LABEXTENSION chooses what happens:
  auto     (default) build when the front-end is missing or older than its sources;
           without Node.js ship the earlier build if there is one, else skip it
  require  always build afresh (the production build) and fail without Node.js:
           the release wheel (scripts/build-wheel)
  skip     build nothing and ship no front-end
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODES = ("auto", "require", "skip")
NODE_NEEDED = "20.19"  # @rspack/core 2.x: node ^20.19.0 || >=22.12.0
SOURCES = ("src", "style", "package.json", "yarn.lock", "tsconfig.json", ".yarnrc.yml")
DATA_DIR = "share/jupyter/labextensions/sif-magic"


def _mode() -> str:
    mode = os.environ.get("SIF_MAGIC_LABEXTENSION", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(
            f"SIF_MAGIC_LABEXTENSION={mode!r}: use one of {', '.join(MODES)} "
            "(auto: build the JupyterLab front-end when Node.js is there)"
        )
    return mode


def node_problem() -> str:
    """Why Node.js cannot build the front-end here, or "" when it can."""
    node = shutil.which("node")
    if node is None:
        return "Node.js (`node`) is not on PATH"
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`{node} --version` failed ({e})"
    found = re.match(r"v?(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not found:
        return f"`{node} --version` did not give a version ({out.stdout.strip() or out.stderr.strip()})"
    major, minor = int(found[1]), int(found[2])
    if (major, minor) < (20, 19) or (major == 21) or (major == 22 and minor < 12):
        return (
            f"Node.js {out.stdout.strip()} is too old (the build needs ^{NODE_NEEDED} or >=22.12)"
        )
    return ""


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                newest = max(newest, f.stat().st_mtime)
    return newest


class LabextensionBuildHook(BuildHookInterface):
    """Builds labextension/ with jlpm when it can, ships it, or says why not."""

    PLUGIN_NAME = "custom"

    @property
    def _source(self) -> Path:
        return Path(self.root) / "labextension"

    @property
    def _built(self) -> Path:
        return Path(self.root) / "sif_magic" / "labextension"

    def _targets(self) -> list[Path]:
        return [self._built / "package.json", self._built / "static" / "style.js"]

    def _fresh(self) -> bool:
        """A build is there, made after the last change to its sources."""
        targets = self._targets()
        if not all(t.is_file() for t in targets):
            return False
        newest_source = _newest_mtime([self._source / s for s in SOURCES])
        return newest_source <= min(t.stat().st_mtime for t in targets)

    def dependencies(self) -> list[str]:
        # jlpm (and Node.js) only when the hook will build: else do not fetch jupyter-builder
        mode = _mode()
        if mode == "skip" or (mode == "auto" and (self._fresh() or node_problem())):
            return []
        return ["jupyter-builder>=1.2"]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships labextension/ sources; its wheel builds them
        mode = _mode()
        if mode == "skip":  # asked for: a line in the build's log is enough
            print("sif_magic: JupyterLab front-end not built (SIF_MAGIC_LABEXTENSION=skip)")
            return
        built = all(t.is_file() for t in self._targets())
        if mode == "auto" and self._fresh():
            self._ship(build_data)
            return
        problem = node_problem()
        if problem:
            if mode == "require":
                raise RuntimeError(
                    f"sif_magic: the JupyterLab front-end cannot be built: {problem}. "
                    f"Put Node.js >= {NODE_NEEDED} on PATH to build the release wheel."
                )
            if built:
                self._say(problem + "; shipping the front-end built earlier", skipped=False)
                self._ship(build_data)
            else:
                self._say(problem, skipped=True)
            return
        self._build(version, fresh_start=mode == "require")
        missing = [str(t.relative_to(self.root)) for t in self._targets() if not t.is_file()]
        if missing:
            raise RuntimeError(
                f"sif_magic: the front-end build ran but did not make {', '.join(missing)}"
            )
        self._ship(build_data)

    def _build(self, version: str, fresh_start: bool) -> None:
        jlpm = shutil.which("jlpm")
        if jlpm is None:
            raise RuntimeError(
                "sif_magic: `jlpm` is not on PATH; it comes with jupyter-builder "
                "(pip install 'jupyter-builder>=1.2'), which pip's isolated build brings. "
                "Or build without the front-end: SIF_MAGIC_LABEXTENSION=skip"
            )
        if fresh_start and self._built.exists():
            shutil.rmtree(self._built)
        # editable installs get the development build (source maps), wheels the production one
        script = "install:extension" if version == "editable" else "build:prod"
        for args in (["install"], ["run", script]):
            cmd = [jlpm, *args]
            print(f"sif_magic: {' '.join(['jlpm', *args])} (in labextension/)", flush=True)
            done = subprocess.run(cmd, cwd=self._source)
            if done.returncode != 0:
                raise RuntimeError(
                    f"sif_magic: `jlpm {' '.join(args)}` in labextension/ exited "
                    f"{done.returncode} (its output is above). To install the Python package "
                    "without the JupyterLab front-end: SIF_MAGIC_LABEXTENSION=skip pip install "
                    "...; or install the release wheel, which has it built in."
                )

    def _ship(self, build_data: dict[str, Any]) -> None:
        build_data["shared_data"][str(self._built)] = DATA_DIR
        build_data["shared_data"][str(self._source / "install.json")] = f"{DATA_DIR}/install.json"

    def _say(self, why: str, skipped: bool) -> None:
        """Tell the person at the terminal: pip hides a build's own output unless -v."""
        if skipped:
            head = f"sif_magic: the JupyterLab front-end was SKIPPED ({why})."
            body = (
                "The Python package installs and works. In JupyterLab a job's live view\n"
                "then has its progress bar, counts and workers, and two 'javascript error'\n"
                "boxes where the per-call grid and log viewer would be (%sif_logs still\n"
                "prints every call's output).\n"
                "To get the front-end, either:\n"
                "  - install the release wheel, which has it built in (scripts/build-wheel\n"
                "    makes it in dist/ on a machine with Node.js):\n"
                "      pip install sif_magic-<version>-py3-none-any.whl\n"
                f"  - or put Node.js >= {NODE_NEEDED} on PATH and install from source again."
            )
        else:
            head = f"sif_magic: the JupyterLab front-end was NOT REBUILT ({why})."
            body = "Its sources changed since; put Node.js on PATH and install again to rebuild."
        rule = "=" * 78
        text = f"\n{rule}\n{head}\n{body}\n{rule}\n"
        try:
            with open("/dev/tty", "w") as tty:  # noqa: PTH123 - the controlling terminal
                tty.write(text)
            return
        except OSError:
            pass  # no terminal (CI, a log): the build's output keeps it
        print(text, file=sys.stderr, flush=True)
