"""Shared fixtures: the machine's RabbitMQ, real worker processes, a real IPython shell.

Tests that need RabbitMQ skip on a laptop without one, but fail in CI (CI=true):
the README's test command starts or installs the broker first.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from queues import delete_task_queues
from userfolder import NAMES, write_folder
from workers import WorkerProcs

ROOT = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("SIF_MAGIC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Every test session gets its own signing key and state folder (never ~/.sif_magic).
_HOME = tempfile.mkdtemp(prefix="sif_magic-test-home-")
os.environ["SIF_MAGIC_HOME"] = _HOME
os.environ["SIF_TEST_SESSION_HOME"] = _HOME  # its key's queues are cleaned up
os.environ.setdefault("SIF_MAGIC_WIDGETS", "1")
for _var in ("SIF_MAGIC_AMQP_URL", "SIF_MAGIC_BACKEND", "SIF_MAGIC_RUNTIME", "SIF_MAGIC_KEY"):
    os.environ.pop(_var, None)
# Ctrl-C raises KeyboardInterrupt even when a shell started the run in the background
# (`cmd &` in a script starts it with SIGINT ignored): the interrupt tests rely on it
signal.signal(signal.SIGINT, signal.default_int_handler)

# printed at the start of each run, so a log tells which releases were tested
KEY_PACKAGES = (
    "ipython",
    "ipywidgets",
    "traitlets",
    "pika",
    "cloudpickle",
    "ipykernel",
    "jupyter_client",
    "nbclient",
    "nbformat",
    "pytest",
    "jupyterlab",
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in KEY_PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return [f"sif_magic on Python {platform.python_version()} ({sys.prefix}): " + ", ".join(found)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test runs ``-n 2 --dist loadgroup``): the tests of the
    one-node SLURM cluster share one process, so one cluster (a session fixture per
    process would start a second); the browser tests share one too (each drives a
    Chromium and a Jupyter server: two at once only slow both down)."""
    browser = ROOT / "tests" / "browser"
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif browser in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.xdist_group("browser"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """SIF_MAGIC_TEST_ONLY=test_a.py,test_b.py: collect only those files of tests/ (how
    scripts/test runs the core of the suite again in .venv-oldest, which has no browser)."""
    only = os.environ.get("SIF_MAGIC_TEST_ONLY")
    if not only or collection_path == ROOT / "tests":
        return None
    if collection_path.is_dir() or collection_path.name.startswith("test_"):
        return collection_path.name not in only.split(",") or None
    return None


def _broker_answers(url: str) -> str:
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = 3
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return ""


@pytest.fixture(scope="session", autouse=True)
def _session_scope_cleaned_up() -> Iterator[None]:
    """At the end: the session key's dead-letter queue and exchanges go too."""
    yield
    key = Path(_HOME) / "key"
    if key.exists():
        from sif_magic import protocol

        scope = protocol.key_id(key.read_text().strip().encode())
        delete_task_queues("-", BROKER_URL, (scope,))


@pytest.fixture(scope="session")
def broker_url() -> str:
    problem = _broker_answers(BROKER_URL)
    if problem:
        msg = (
            f"RabbitMQ at 127.0.0.1:5672 does not answer ({problem}); run the README's test command"
        )
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return BROKER_URL


@pytest.fixture(scope="session")
def key_file() -> Path:
    from sif_magic._keys import default_key_file, load_key

    load_key()  # creates it, mode 600
    return default_key_file()


@pytest.fixture
def sif_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private SIF_MAGIC_HOME (state file, logs, key) and no broker settings inherited."""
    h = tmp_path / "home"
    monkeypatch.setenv("SIF_MAGIC_HOME", str(h))
    for var in (
        "SIF_MAGIC_KEY",
        "SIF_MAGIC_AMQP_URL",
        "SIF_MAGIC_AMQP_URL_FILE",
        "SIF_MAGIC_RUNTIME",
        "SIF_MAGIC_KEY_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture
def url_file(tmp_path: Path) -> Path:
    """The shared broker's URL in a file of mode 600."""
    path = tmp_path / "amqp_url"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, BROKER_URL.encode() + b"\n")
    os.close(fd)
    return path


@pytest.fixture
def runtime() -> Iterator[str]:
    """A runtime name of its own, so tests never take each other's tasks; its task
    queues are deleted afterwards (chunks of a cancelled job wait there for a worker)."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    delete_task_queues(name, BROKER_URL)


@pytest.fixture
def workers(broker_url: str, key_file: Path, tmp_path: Path) -> Iterator[WorkerProcs]:
    """Real ``sif-magic worker`` processes on the machine's broker, stopped by pid after."""
    w = WorkerProcs(broker_url, key_file, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def ip() -> Iterator:
    """A real IPython shell with sif_magic loaded (local backend unless a test sets another)."""
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()  # one per test session (IPython allows one), started on first use
    shell.run_line_magic("load_ext", "sif_magic")
    from sif_magic import config

    cfg = config.get_config()
    saved = {name: getattr(cfg, name) for name in cfg.trait_names(config=True)}
    cfg.processes = 2
    cfg.progress_delay = 0.0
    yield shell
    for name, value in saved.items():
        setattr(cfg, name, value)
    magics = shell.magics_manager.registry.get("SifMagics")
    if magics is not None:
        for ex in magics._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
        magics._executors.clear()


@pytest.fixture(params=["local", "rabbitmq"])
def map_shell(request: pytest.FixtureRequest, ip):  # noqa: ANN001, ANN201
    """The IPython shell, its %%sifmap on the local backend or on two real workers."""
    if request.param == "rabbitmq":
        broker_url = request.getfixturevalue("broker_url")
        runtime = request.getfixturevalue("runtime")
        request.getfixturevalue("workers").start(runtime, processes=2)
        from sif_magic import config

        config.get_config().set_from_strings(
            {"backend": "rabbitmq", "amqp_url": broker_url, "runtime": runtime}
        )
    return ip


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A notebook's folder of modules (``userfolder``) on this process's sys.path."""
    folder = write_folder(tmp_path / "nbfolder")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in NAMES:
        sys.modules.pop(name, None)


@pytest.fixture(params=["local", "rabbitmq"])
def any_ex(request: pytest.FixtureRequest) -> Iterator:
    """An Executor on each backend: local, and rabbitmq with one worker of 2 processes."""
    from sif_magic import Executor

    if request.param == "local":
        e = Executor(backend="local", processes=2)
    else:
        runtime = request.getfixturevalue("runtime")
        broker_url = request.getfixturevalue("broker_url")
        key_file = request.getfixturevalue("key_file")
        request.getfixturevalue("workers").start(runtime, processes=2)
        e = Executor(
            backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file)
        )
    yield e
    e.shutdown(wait=False, cancel_futures=True)
