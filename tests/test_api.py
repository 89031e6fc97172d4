"""The package's front door and what each side imports."""

from __future__ import annotations

import subprocess
import sys

import sif_magic


def test_all_matches_what_is_exported() -> None:
    for name in sif_magic.__all__:
        assert getattr(sif_magic, name) is not None, name
    public = {n for n in dir(sif_magic) if not n.startswith("_")} - {
        "annotations",
        "TYPE_CHECKING",
        "Any",
    }
    public |= {"Executor", "Job"}  # loaded lazily
    modules = {
        "errors",
        "protocol",
        "config",
        "executor",
        "job",
        "magics",
        "display",
        "backends",
        "runner",
        "transport",
        "worker",
        "cli",
        "widgets",
        "images",
        "containers",
        "launch",
        "validate",
        "cache",
        "pipeline",
    }
    assert public - modules - set(sif_magic.__all__) == set()


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_is_cheap() -> None:
    mods = _imported_after("import sif_magic")
    assert not {"IPython", "ipywidgets", "traitlets", "pika", "cloudpickle"} & mods


def test_worker_side_imports_nothing_of_ipython() -> None:
    # what a slim container image needs: pika and cloudpickle, nothing of Jupyter
    mods = _imported_after(
        "import sif_magic.worker, sif_magic.runner.pool, sif_magic.runner.slot, sif_magic.cli; "
        "sif_magic.cli.build_parser()"
    )
    assert not {"IPython", "ipywidgets", "traitlets", "ipykernel"} & mods
