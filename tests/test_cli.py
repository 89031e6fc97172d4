"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sif(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sif_magic", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
    )


def test_hello_on_the_local_backend() -> None:
    r = sif("hello", "-n", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 calls on local" in r.stdout
    assert "call 4: 4^2 = 16" in r.stdout and "printed 'hello from call 4'" in r.stdout
    assert "OK: 5 results in order" in r.stdout


def test_hello_on_rabbitmq_workers(workers, broker_url: str, runtime: str) -> None:
    workers.start(runtime, processes=2)
    r = sif("hello", "--backend", "rabbitmq", "--amqp-url", broker_url, "--runtime", runtime)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"runtime {runtime}" in r.stdout and "guest:***@" in r.stdout
    assert "OK: 8 results in order" in r.stdout


def test_worker_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    # (a worker without any key file makes one: tests/test_keys.py)
    key = tmp_path / "key"
    key.write_text("0" * 64)
    key.chmod(0o644)
    r = sif(
        "worker",
        "--amqp-url",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        env={"SIF_MAGIC_HOME": str(tmp_path)},
        timeout=30,
    )
    assert r.returncode == 1
    assert f"chmod 600 {key}" in r.stderr and "0" * 64 not in r.stderr


def test_worker_without_a_url(tmp_path: Path) -> None:
    env = {k: "" for k in ("SIF_MAGIC_AMQP_URL", "AMQP_URL", "SIF_MAGIC_AMQP_URL_FILE")}
    r = sif("worker", env=env, timeout=30)
    assert r.returncode == 2 and "no broker URL" in r.stderr


def test_worker_refuses_a_url_file_others_can_read(tmp_path: Path, key_file: Path) -> None:
    f = tmp_path / "url"
    f.write_text("amqp://guest:guest@127.0.0.1:5672/%2F")
    f.chmod(0o644)
    r = sif("worker", "--amqp-url-file", str(f), "--key-file", str(key_file), timeout=30)
    assert r.returncode == 1 and "chmod 600" in r.stderr and "guest:guest" not in r.stderr


def test_worker_with_bad_credentials_fails_fast(tmp_path: Path, key_file: Path) -> None:
    r = sif(
        "worker",
        "--amqp-url",
        "amqp://guest:nope@127.0.0.1:5672/%2F",
        "--key-file",
        str(key_file),
        timeout=30,
    )
    assert r.returncode == 1
    assert "refused the login of user 'guest'" in r.stderr and "nope" not in r.stderr


def test_help_lists_the_commands() -> None:
    r = sif("--help")
    assert r.returncode == 0
    for cmd in ("worker", "hello", "logs"):
        assert cmd in r.stdout
