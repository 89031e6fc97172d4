"""Secrets in messages, in argv and on disk (issue 13, the low findings).

- ``mask_url`` hid only part of a password that holds ``@``: the rest showed.
- ``hello`` and ``logs`` took ``--amqp-url`` without a word, and any local user
  reads a command line in /proc/PID/cmdline (here: user ``nobody``, through setpriv).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import sif
from test_security_staging import as_nobody

from sif_magic.errors import ConfigError, mask_url

ROOT = Path(__file__).resolve().parent.parent
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def secret_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode() + b"\n")
    os.close(fd)
    return path


# -- mask_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["p@ss", "p@ss:w0rd", "a:b", "a/b", "a/b@c:d", "@@@", "x@y/z:w@q", "pw"],
)
def test_mask_url_hides_the_whole_password(password: str) -> None:
    for url in (
        f"amqp://alice:{password}@broker.example:5672/lab",
        f"amqps://alice:{password}@broker.example/",
        f"amqp://alice@uni.example:{password}@broker.example:5672/lab",  # user with '@'
    ):
        text = f"cannot reach {url!r} (refused); retry"
        masked = mask_url(text)
        user = url.split("://")[1].rsplit(":" + password, 1)[0]
        assert masked == text.replace(f"{user}:{password}@", f"{user}:***@"), masked
        for part in {password, *password.replace("@", " ").replace(":", " ").split()}:
            if len(part) > 1:
                assert part not in masked.replace("broker.example", ""), (part, masked)
        assert "broker.example" in masked  # the host stays: it is what the user checks


def test_mask_url_leaves_urls_without_a_password() -> None:
    for text in (
        "amqp://broker.example:5672/lab",
        "amqp://alice@broker.example:5672/lab and mail bob@example.org",
        "see https://example.org/a:b and x@y",
    ):
        assert mask_url(text) == text


def test_errors_and_settings_show_no_part_of_such_a_password() -> None:
    from sif_magic.config import SifConfig

    cfg = SifConfig()
    cfg.amqp_url = "amqp://alice:s3c@r:et@broker:5672/lab"
    assert cfg.settings()["amqp_url"] == "amqp://alice:***@broker:5672/lab"
    err = ConfigError("broker amqp://alice:s3c@r:et@broker/lab refused")
    assert str(err) == "broker amqp://alice:***@broker/lab refused"


def test_a_worker_whose_password_holds_at_and_colon_shows_none_of_it(tmp_path, key_file) -> None:
    """A real login with such a password (refused by the real broker) and its message."""
    url = secret_file(tmp_path / "url", "amqp://guest:p@ss:w0rd@127.0.0.1:5672/%2F")
    r = sif("worker", "--amqp-url-file", str(url), "--key-file", str(key_file))
    assert r.returncode == 1
    assert "refused the login of user 'guest'" in r.stderr
    assert "w0rd" not in r.stderr and "p@ss" not in r.stderr and "ss:" not in r.stderr


# -- a broker URL on the command line -----------------------------------------------


def cmdline_seen_by_nobody(pid: int) -> str:
    res = subprocess.run(
        [*as_nobody(), "cat", f"/proc/{pid}/cmdline"], capture_output=True, timeout=10
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.replace(b"\0", b" ").decode()


def test_hello_warns_that_its_url_argument_shows_the_password() -> None:
    r = sif("hello", "--backend", "local", "-n", "2", "--amqp-url", "amqp://u:s3cret@h/v")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sif-magic hello: warning: the password of --amqp-url" in r.stderr
    assert "--amqp-url-file" in r.stderr and "s3cret" not in r.stderr + r.stdout
    r = sif("hello", "--backend", "local", "-n", "2", "--amqp-url", "amqp://h/v")
    assert r.returncode == 0 and "warning" not in r.stderr  # no password, no warning


def test_hello_reads_the_url_from_a_file(workers, broker_url, runtime, tmp_path) -> None:
    workers.start(runtime, processes=1)
    url = secret_file(tmp_path / "url", broker_url)
    r = sif(
        "hello",
        *("--backend", "rabbitmq", "--amqp-url-file", str(url), "--runtime", runtime, "-n", "3"),
        env={"SIF_MAGIC_AMQP_URL": "amqp://guest:wrong@127.0.0.1:5672/%2F"},  # the file wins
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 3 results in order" in r.stdout and "warning" not in r.stderr


def test_logs_url_argument_is_read_by_another_user_and_warned_about(
    broker_url, key_file, tmp_path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "sif_magic", "logs", "--seconds", "20", "--follow"]
    url = secret_file(tmp_path / "url", broker_url)
    password = broker_url.split(":")[2].split("@")[0]
    for how, extra in (
        ("argv", ["--amqp-url", broker_url]),
        ("file", ["--amqp-url-file", str(url)]),
    ):
        proc = subprocess.Popen(
            [*argv, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        err = ""
        try:
            assert proc.stderr is not None
            while "following every job" not in err:  # it connected to the broker
                line = proc.stderr.readline()
                assert line, f"logs ended before it connected: {err}"
                err += line
            seen = cmdline_seen_by_nobody(proc.pid)
            assert "sif_magic logs" in seen
        finally:
            proc.terminate()
            err += proc.communicate(timeout=30)[1]
        if how == "argv":  # the attack: another user reads the password; we said so
            assert f"guest:{password}@" in seen
            assert "sif-magic logs: warning: the password of --amqp-url" in err
        else:
            assert password not in seen.replace("sif_magic", "") and "warning" not in err


def test_worker_warns_too(key_file) -> None:
    r = sif("worker", "--amqp-url", "amqp://guest:nope@127.0.0.1:5672/%2F")
    assert r.returncode == 1
    assert "sif-magic worker: warning: the password of --amqp-url" in r.stderr
