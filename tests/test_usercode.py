"""The user's own modules reach the workers, and a package the workers lack is one
message per job (issue 14, parts 1 and 2).

A notebook folder holds modules and a package; the notebook runs (nbclient, in
that folder) against real RabbitMQ workers started in another directory, and the
same code runs in a real IPython shell on both backends, the folder on
``sys.path`` but not the call processes' working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebooks import text_of
from userfolder import write_folder

from sif_magic import RemoteError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shell(map_shell, user_folder: Path):  # noqa: ANN001, ANN201
    """The shell (local backend, or real workers started elsewhere) that imported the
    folder's modules; the call processes' working directory is not the folder."""
    assert Path.cwd() != user_folder
    map_shell.run_cell("import ucmain, ucpkg")
    return map_shell


def run(shell, cell: str):  # noqa: ANN001, ANN201
    result = shell.run_cell(cell)
    assert result.error_in_exec is None, result.error_in_exec
    return shell.user_ns["out"]


def test_modules_a_package_and_their_imports_travel(shell) -> None:
    assert run(shell, "%%sifmap range(4) -o out\ndef f(x):\n    return ucmain.helper(x)") == [
        1,
        3,
        5,
        7,
    ]
    job = shell.user_ns["_sif_job"]
    shipped = {p.name: p.files for p in job.shipment.parts}
    assert shipped == {"ucmain": 1, "ucsecond": 1, "uclate": 1, "ucpkg": 3}, shipped
    shown = job._repr_mimebundle_()["text/html"]
    assert "shipped with the function: uclate (12 B), ucmain (" in shown
    # a module imported inside the function, and one imported inside a module's function
    cell = "%%sifmap range(2) -o out\ndef f(x):\n    import ucpkg.deep.leaf\n"
    cell += "    return ucpkg.deep.leaf.name(), ucmain.later(x)"
    assert run(shell, cell) == [("leaf", 100), ("leaf", 101)]


def test_instances_of_a_local_class_go_and_come_back(shell) -> None:
    shell.user_ns["points"] = [shell.user_ns["ucpkg"].Point(i, -i) for i in range(5)]
    out = run(shell, "%%sifmap points -o out\ndef move(p):\n    return p.moved(10)")
    Point = sys.modules["ucpkg"].Point
    assert all(type(p) is Point for p in out)
    assert out == [Point(10 + i, 10 - i) for i in range(5)]
    assert run(shell, "%%sifmap range(1) -o out\ndef f(x):\n    return ucmain.origin()") == [
        Point(0, 0)
    ]


def test_an_edited_module_runs_its_new_code_on_warm_workers(shell, user_folder: Path) -> None:
    cell = "%%sifmap range(3) -o out\ndef f(x):\n    return ucmain.helper(x)"
    assert run(shell, cell) == [1, 3, 5]
    (user_folder / "ucsecond.py").write_text("def twice(x):\n    return 20 * x\n")
    assert run(shell, cell) == [1, 21, 41]  # the same processes, the new file
    (user_folder / "ucsecond.py").write_text("def twice(x):\n    return 2 * x\n")
    assert run(shell, cell) == [1, 3, 5]  # and back: the first bundle again


def test_a_frame_in_a_shipped_module_names_its_file_and_line(shell, user_folder: Path) -> None:
    out = run(
        shell, "%%sifmap range(2) -o out --errors collect\ndef f(x):\n    return ucmain.fail(x)"
    )
    err = out[1]
    assert isinstance(err, RemoteError) and err.ename == "ValueError"
    last = err.frames[-1]
    assert (last.filename, last.name) == (str(user_folder / "ucmain.py"), "fail")
    assert last.line == 'raise ValueError(f"ucmain refuses {x}")'


def test_a_package_the_workers_lack_is_one_message_naming_it_and_the_fix(shell) -> None:
    result = shell.run_cell("%%sifmap range(12)\ndef f(x):\n    import sif_absent_pkg\n")
    err = result.error_in_exec
    assert isinstance(err, RemoteError) and err.ename == "ModuleNotFoundError"
    job = shell.user_ns["_sif_job"]
    hints = job.hints()
    assert len(hints) == 1, hints
    hint = hints[0]
    assert hint.startswith("12 calls failed: No module named 'sif_absent_pkg'")
    assert "This kernel does not have it either" in hint
    if job.backend.name == "local":
        assert "%pip install sif_absent_pkg" in hint
    else:
        runtime = job.runtime
        assert f"on the workers of runtime {runtime!r} (none)" in hint
        assert f"sif-magic runtime def {runtime} --packages sif_absent_pkg" in hint
        assert f"--runtime {runtime} && sif-magic runtime build {runtime}.sif" in hint
    shown = "\n".join(err._render_traceback_())
    assert shown.count("No module named 'sif_absent_pkg'") == 2  # the error, then the advice
    assert shown.count("calls failed") == 1


def test_an_installed_package_of_the_kernel_is_named_with_its_version(
    shell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "extra" / "site-packages"  # installed here only: never shipped
    (site / "sifkernelonly").mkdir(parents=True)
    (site / "sifkernelonly" / "__init__.py").write_text("X = 1\n")
    info = site / "sif_kernel_only-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sif-kernel-only\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("sifkernelonly\n")
    monkeypatch.syspath_prepend(str(site))
    from sif_magic import _hints

    _hints._distributions.cache_clear()
    _hints.kernel_module.cache_clear()
    cell = "%%sifmap range(3) -o out --errors collect\ndef f(x):\n    import sifkernelonly\n"
    out = run(shell, cell)
    assert all(isinstance(e, RemoteError) for e in out)
    (hint,) = shell.user_ns["_sif_job"].hints()
    assert "3 calls failed: No module named 'sifkernelonly'" in hint
    assert "This kernel has it: sif-kernel-only 1.2.3" in hint
    if shell.user_ns["_sif_job"].backend.name != "local":
        assert "--packages sif-kernel-only==1.2.3" in hint
    assert out[2].hint == hint


# -- a notebook in its folder, on workers started elsewhere ------------------------------

NOTEBOOK = [
    "%load_ext sif_magic\n%sif_config backend=rabbitmq runtime={runtime}\nimport ucmain, ucpkg",
    "%%sifmap range(5) -o ys\ndef work(x):\n    return ucmain.helper(x)",
    "print('ys:', ys, _sif_job.shipment.describe())",
    "pts = [ucpkg.Point(i, i) for i in range(3)]",
    "%%sifmap pts -o moved\ndef move(p):\n    return p.moved(1)",
    "print('moved:', moved, all(type(p) is ucpkg.Point for p in moved))",
    "open('ucsecond.py', 'w').write('def twice(x):\\n    return 100 * x\\n')",
    "%%sifmap range(3) -o zs\ndef again(x):\n    return ucmain.helper(x)",
    "print('zs:', zs)",
    "%%sifmap range(20)\ndef needs(x):\n    import sif_absent_pkg\n    return x",
]


def test_a_notebook_folder_runs_on_a_worker_started_elsewhere(
    tmp_path: Path,
    broker_url: str,
    runtime: str,
    workers,  # noqa: ANN001
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nbdir = write_folder(tmp_path / "project")
    (procs,) = workers.start(runtime, processes=2)
    assert Path(ROOT) != nbdir  # the worker's working directory is the repository
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.replace("{runtime}", runtime)) for c in NOTEBOOK]
    monkeypatch.setenv("SIF_MAGIC_AMQP_URL", broker_url)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    NotebookClient(
        nb, timeout=180, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(nbdir)}},
    ).execute()  # fmt: skip
    texts = [text_of(c) for c in nb.cells]
    assert "ys: [1, 3, 5, 7, 9] uclate (12 B), ucmain (" in texts[2], texts
    assert "ucpkg (3 files" in texts[2]
    assert "moved: [Point(1, 1), Point(2, 2), Point(3, 3)] True" in texts[5], texts
    assert "zs: [1, 101, 201]" in texts[8], texts
    # what the notebook shows of the error: its traceback (the evalue repeats it unseen)
    failed = "\n".join(
        "\n".join(o.traceback) for o in nb.cells[9].outputs if o.output_type == "error"
    )
    assert "ModuleNotFoundError" in failed
    assert failed.count("20 calls failed: No module named 'sif_absent_pkg'") == 1, failed
    assert "sif-magic runtime def" in failed and "This kernel does not have it either" in failed
