"""Resume: kept results are reused, only what is missing or changed runs again.

Each call leaves a file per run (its side effect), so the tests count the runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from sif_magic import ConfigError, Executor, RemoteError
from sif_magic.cache import CacheStore, function_key, input_keys

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack this file
DEADLINE = 60.0


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Executor]:
    e = Executor(backend="local", processes=2, cache_dir=str(tmp_path / "cache"))
    yield e
    e.shutdown(wait=False, cancel_futures=True)


def runs_of(folder: Path) -> dict[int, int]:
    """Calls -> how many times each ran (a file per run)."""
    counts: dict[int, int] = {}
    for f in folder.iterdir() if folder.exists() else ():
        x = int(f.name.split("-")[0])
        counts[x] = counts.get(x, 0) + 1
    return counts


def make_work(runs: Path, bad: int | None = None):  # noqa: ANN201
    def work(x: int) -> int:
        import uuid

        (runs / f"{x}-{uuid.uuid4().hex}").touch()
        if x == bad:
            raise ValueError(f"bad input {x}")
        print(f"ran {x}")
        return x * x

    return work


def test_a_second_run_reuses_every_result_and_runs_nothing(ex: Executor, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    first = ex.map_job(make_work(runs), range(30), chunksize=4, resume=True)
    assert first.results(timeout=DEADLINE) == [x * x for x in range(30)] and first.reused == 0
    again = ex.map_job(make_work(runs), range(30), chunksize=4, resume=True)
    assert again.done() and again.reused == 30  # done at once: nothing was sent
    assert again.results(timeout=DEADLINE) == [x * x for x in range(30)]
    assert runs_of(runs) == dict.fromkeys(range(30), 1)
    assert again.output(7) == "ran 7\n" and again.describe_call(7)["worker"] == "cache"
    without = ex.map_job(make_work(runs), range(3))  # no resume: everything runs
    assert without.results(timeout=DEADLINE) == [0, 1, 4] and runs_of(runs)[0] == 2


def test_after_fixing_a_failing_input_only_that_call_runs(ex: Executor, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    inputs = list(range(10))
    job = ex.map_job(make_work(runs, bad=4), inputs, errors="collect", resume=True)
    values = job.results(timeout=DEADLINE)
    assert isinstance(values[4], RemoteError) and job.failed == [4]
    inputs[4] = 40  # fixed: that input is new, the others are as before
    job = ex.map_job(make_work(runs, bad=4), inputs, resume=True)
    assert job.results(timeout=DEADLINE) == [x * x for x in inputs] and job.reused == 9
    assert runs_of(runs) == {**dict.fromkeys(range(10), 1), 40: 1}
    # a failed call is not kept: the same input again runs again (and fails again)
    job = ex.map_job(make_work(runs, bad=4), [4, 5], errors="collect", resume=True)
    assert job.reused == 1 and isinstance(job.results(timeout=DEADLINE)[0], RemoteError)
    assert runs_of(runs)[4] == 2 and runs_of(runs)[5] == 1


def test_a_changed_function_runs_every_call_again(ex: Executor, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()

    def one(x: int) -> int:
        (runs / f"{x}-a").touch()
        return x + 1

    def other(x: int) -> int:
        (runs / f"{x}-b").touch()
        return x + 2

    assert ex.map_job(one, range(5), resume=True).results(timeout=DEADLINE) == [1, 2, 3, 4, 5]
    job = ex.map_job(other, range(5), resume=True)
    assert job.results(timeout=DEADLINE) == [2, 3, 4, 5, 6] and job.reused == 0
    assert runs_of(runs) == dict.fromkeys(range(5), 2)


def test_the_same_input_twice_takes_the_kept_result_twice(ex: Executor, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    ex.map_job(make_work(runs), [3], resume=True).results(timeout=DEADLINE)
    job = ex.map_job(make_work(runs), [3, 3, 2], resume=True)
    assert job.results(timeout=DEADLINE) == [9, 9, 4] and job.reused == 2
    assert runs_of(runs) == {3: 1, 2: 1}


CELL = """
import json
LIMIT = {limit}

class Scaler:
    @property
    def factor(self):
        return LIMIT

def helper(v):
    return v * Scaler().factor

def work(x, scale=2):
    import uuid  # a local name: a global uuid elsewhere in the notebook does not matter
    if x in {{"a", "b", "c"}}:
        return 0
    return helper(x) + scale + len(json.dumps(x))
"""

KEY_OF_CELL = """
import sys
from sif_magic.cache import function_key
ns = {"__name__": "__main__"}
exec(compile(sys.stdin.read(), sys.argv[1], "exec"), ns)
print(function_key(ns["work"]))
"""


def key_in_new_process(cell: str, filename: str, seed: str) -> str:
    """The function key of ``cell``'s ``work``, as a new kernel would compute it."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", KEY_OF_CELL, filename], input=cell, env=env,
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip()


def test_the_function_key_is_stable_across_processes_and_follows_the_code() -> None:
    cell = textwrap.dedent(CELL.format(limit=10))
    first = key_in_new_process(cell, "/tmp/ipykernel_111/1.py", "1")
    # another kernel: another temporary file name, another hash seed, lines moved
    assert key_in_new_process("\n\n" + cell, "/tmp/ipykernel_222/9.py", "2") == first
    assert key_in_new_process("import uuid\n" + cell, "/tmp/ipykernel_333/1.py", "3") == first
    assert key_in_new_process(cell.replace("LIMIT = 10", "LIMIT = 11"), "f.py", "1") != first
    assert key_in_new_process(cell.replace("v * Scaler", "v + Scaler"), "f.py", "1") != first
    assert key_in_new_process(cell.replace("return LIMIT", "return -LIMIT"), "f.py", "1") != first
    assert key_in_new_process(cell.replace("scale=2", "scale=3"), "f.py", "1") != first


def test_keys_of_the_call_and_inputs() -> None:
    def f(x: int) -> int:
        return x

    assert function_key(f) != function_key(f, star=True) != function_key(f, env={"A": "1"})
    a, b, c = input_keys([1, (1,), 1])
    assert a == c and a != b and len(a) == 16


def test_the_cache_folder_is_private_and_can_be_cleared(ex: Executor, tmp_path: Path) -> None:
    ex.map_job(abs, [-1, -2], chunksize=2, resume=True).results(timeout=DEADLINE)
    folder = tmp_path / "cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in folder.glob("*/*.seg"))
    CacheStore(str(tmp_path / "home" / ".sif_magic" / "cache"), 1).lookup("0" * 32, [])
    assert stat.S_IMODE((tmp_path / "home" / ".sif_magic").stat().st_mode) == 0o700
    store = CacheStore(str(folder), 1 << 30)
    info = store.info()
    assert info.files >= 1 and info.functions == 1 and info.size > 0
    assert store.clear() == info.files and store.info().files == 0
    job = ex.map_job(abs, [-1, -2], resume=True)
    assert job.reused == 0 and job.results(timeout=DEADLINE) == [1, 2]


def test_the_least_recently_used_results_go_when_the_cache_is_full(tmp_path: Path) -> None:
    store = CacheStore(str(tmp_path / "c"), 1 << 30)
    e = Executor(backend="local", processes=1, cache_dir=str(tmp_path / "c"), cache_max_mb=0.05)
    try:
        for k in range(6):  # ~20 kB of results each, in a 50 kB cache
            e.map_job(lambda _: "x" * 20000, [k], resume=True).results(timeout=DEADLINE)
        info = store.info()
        assert 0 < info.size <= 50 * 1024 * 1.1 and info.files < 6
        job = e.map_job(lambda _: "x" * 20000, [5], resume=True)  # the newest stayed
        assert job.reused == 1
    finally:
        e.shutdown(wait=False, cancel_futures=True)


def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    other = Path("/")  # root's: not ours, unless we are root
    if os.getuid() == 0:
        other = tmp_path / "theirs"
        other.mkdir()
        os.chown(other, 65534, 65534)  # nobody's
    with pytest.raises(ConfigError, match="belongs to another user"):
        CacheStore(str(other), 1).lookup("0" * 32, [b"k" * 16])


def test_a_cache_folder_that_cannot_be_made_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    e = Executor(backend="local", processes=1, cache_dir=str(blocker / "cache"))
    try:
        with pytest.raises(ConfigError, match="cannot be used .*set cache_dir"):
            e.map_job(abs, [1], resume=True)
    finally:
        e.shutdown(wait=False)
