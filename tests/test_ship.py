"""What the client ships of the user's modules (``_ship``), the ``ship`` setting, the
size limit, and the slot side serving a bundle (``runner/shipped.py``)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from sif_magic import Executor, RemoteError, SerializationError
from sif_magic._serialize import dumps_function
from sif_magic._ship import parse_ship, plan
from sif_magic.errors import ConfigError
from sif_magic.runner import shipped
from sif_magic.runner.slotproc import SLOT_SCRIPT


def test_what_a_function_reaches_is_found_and_installed_modules_are_not(user_folder: Path) -> None:
    import ucmain

    used: set[str] = set()
    dumps_function(lambda x: ucmain.helper(x), used)
    got = plan(used)
    assert [p.name for p in got.parts] == ["uclate", "ucmain", "ucpkg", "ucsecond"]
    assert got.parts[2].path == str(user_folder / "ucpkg")
    modules = shipped.decode(got.bundle)
    assert modules["ucpkg.deep"] == ("namespace", str(user_folder / "ucpkg" / "deep"), b"")
    assert modules["ucmain"][:2] == ("module", str(user_folder / "ucmain.py"))
    assert plan({"json", "pytest", "cloudpickle", "sif_magic.executor", "__main__"}).parts == []


def test_inputs_classes_are_found_too(user_folder: Path) -> None:
    import ucpkg

    with Executor(processes=1) as ex:
        job = ex.map_job(lambda p: p.x, [ucpkg.Point(4, 5)])
        assert job.results() == [4]
    assert [p.name for p in job.shipment.parts] == ["ucpkg"]


def test_the_ship_setting(user_folder: Path) -> None:
    assert parse_ship("") == (True, set(), set())
    assert parse_ship("+a, -b.c none d") == (False, {"a", "d"}, {"b"})
    with pytest.raises(ConfigError, match="ship=\\+mylib,-bigpkg"):
        parse_ship("+no/such")
    assert [p.name for p in plan({"ucmain"}, "-ucsecond,-uclate,-ucpkg").parts] == ["ucmain"]
    assert [p.name for p in plan({"ucmain"}, "none,+ucsecond").parts] == ["ucsecond"]
    with pytest.raises(ConfigError):
        Executor(ship="-")


def test_over_the_size_limit_names_the_module_and_the_fix(user_folder: Path) -> None:
    (user_folder / "ucpkg" / "table.py").write_text("DATA = " + repr("x" * 300_000) + "\n")
    with pytest.raises(SerializationError) as e:
        plan({"ucmain"}, "", max_mb=0.2)
    text = str(e.value)
    assert "over ship_max_mb=0.2: ucpkg (4 files, 293.3 kB)" in text
    assert f"the biggest file is {user_folder / 'ucpkg' / 'table.py'}" in text
    assert "%sif_config ship=-ucpkg" in text and "ship_max_mb=1" in text


def test_a_module_left_out_or_imported_dynamically_is_named_with_the_fix(user_folder: Path) -> None:
    import ucmain

    with Executor(processes=1, ship="-ucsecond") as ex:
        job = ex.map_job(lambda x: ucmain.helper(x), [1, 2], errors="collect")
        assert all(isinstance(e, RemoteError) for e in job.results())
        (hint,) = job.hints()
        assert "2 calls failed: No module named 'ucsecond'" in hint
        assert (
            f"a module of your own ({user_folder / 'ucsecond.py'}), left out by ship=-ucsecond"
            in hint
        )

    def dynamic(x: int) -> int:
        import importlib

        return importlib.import_module("ucsecond").twice(x)

    with Executor(processes=1, ship="none") as ex:
        job = ex.map_job(dynamic, [1], errors="collect")
        assert isinstance(job.results()[0], RemoteError)
        assert "ship it with %sif_config ship=+ucsecond" in job.hints()[0]
    with Executor(processes=1, ship="+ucsecond") as ex:
        assert ex.map_job(dynamic, [1, 2]).results() == [2, 4]


def test_a_redelivered_chunk_is_split_with_the_modules_of_its_inputs(
    user_folder: Path, tmp_path: Path
) -> None:
    import ucpkg

    func, _ = dumps_function(len)
    args = cloudpickle.dumps([ucpkg.Point(1, 2), ucpkg.Point(3, 4)])

    def split(blob: bytes) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, SLOT_SCRIPT, "split"],
            input=pickle.dumps((blob, args, [1, 0], [], "", 0, 0)),
            capture_output=True,
            cwd=tmp_path,  # not the folder: only the bundle has ucpkg
        )

    assert b"No module named 'ucpkg'" in split(func).stderr  # without the bundle
    proc = split(plan({"ucpkg"}).wrap(func))
    assert proc.returncode == 0, proc.stderr
    parts = [pickle.loads(b, buffers=bufs) for b, bufs in pickle.loads(proc.stdout)]
    assert parts == [[ucpkg.Point(3, 4)], [ucpkg.Point(1, 2)]]


def test_the_image_version_wins_and_bundles_switch(tmp_path: Path) -> None:
    """In this process: a finder serving two bundles of one module in turn; a module
    installed here (json) is never served from a bundle."""
    src = str(tmp_path / "ucswitch.py")
    one = shipped.encode({"ucswitch": ("module", src, b"V = 1\n"), "json": ("module", src, b"")})
    two = shipped.encode({"ucswitch": ("module", src, b"V = 2\n")})
    modules = shipped.ShippedModules()
    try:
        a, _ = modules.take(shipped.wrap(one, b"f"))
        b, rest = modules.take(shipped.wrap(two, b"g"))
        assert bytes(rest) == b"g"
        modules.activate(a)
        import json

        import ucswitch

        assert ucswitch.V == 1 and ucswitch.__file__ == src and json.dumps(1) == "1"
        modules.activate(b)
        assert __import__("ucswitch").V == 2
        modules.activate(a)
        assert sys.modules["ucswitch"] is ucswitch  # the first bundle's module, kept
        modules.activate("")
        assert "ucswitch" not in sys.modules
    finally:
        sys.meta_path.remove(modules)
        sys.modules.pop("ucswitch", None)
