"""Workers that leave when idle (``--idle-timeout``): real worker processes, the machine's
RabbitMQ. Nothing here asserts a duration: each test waits for a condition, generously."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pika
from queues import consumers, task_queue

from sif_magic import Executor, protocol
from sif_magic.worker.idle import IdleClock

ROOT = Path(__file__).resolve().parents[1]


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


def test_the_clock_never_runs_out_without_a_timeout_nor_while_busy_or_held() -> None:
    clock = IdleClock(0)
    assert not clock.due(False, time.time() + 10**6)  # hand-started: never
    clock = IdleClock(5)
    now = clock.last
    assert not clock.due(False, now + 4) and clock.due(False, now + 5)
    assert not clock.due(True, now + 100)  # busy: the clock starts again
    assert not clock.due(False, now + 104) and clock.due(False, now + 105)
    clock = IdleClock(5)
    clock.last -= 100  # idle long since, but held by a scaler for HOLD_SECONDS more
    clock.hold()
    t = time.time()
    assert not clock.due(False, t + 1) and clock.due(False, t + protocol.HOLD_SECONDS + 1)


def test_an_idle_worker_leaves_cleanly_never_in_the_middle_of_a_call(
    workers, broker_url, runtime, key_file
) -> None:
    (proc,) = workers.start(runtime, processes=1, extra=("--idle-timeout", "1"))

    def slow(x: int) -> int:  # three times the idle timeout each
        import time

        time.sleep(3)
        return x + 1

    ex = Executor(backend="rabbitmq", amqp_url=broker_url, runtime=runtime, key_file=str(key_file))
    try:
        assert ex.map_job(slow, range(3), chunksize=1).results(timeout=120) == [1, 2, 3]
    finally:
        ex.shutdown()
    assert proc.wait(60) == 0
    log = workers.logs()
    assert "no call for" in log and "(--idle-timeout 1): leaving" in log, log
    assert "Traceback" not in log and "redeliver" not in log, log
    assert consumers(task_queue(runtime, key_file)) == 0


def test_a_hold_keeps_an_idle_worker_and_it_leaves_when_holds_stop(
    workers, broker_url, runtime, key_file
) -> None:
    wid = f"held-{runtime}"
    (proc,) = workers.start(runtime, processes=1, extra=("--idle-timeout", "1", "--worker-id", wid))
    key = key_file.read_bytes().strip()
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        body = protocol.Control(op="hold", worker=wid).encode()
        end = time.monotonic() + 6  # several idle timeouts
        while time.monotonic() < end:  # each a new message (a copy would be a replay)
            props = pika.BasicProperties(
                type="control", headers=protocol.headers_for(key, "control", body)
            )
            ch.basic_publish(protocol.control_exchange(protocol.key_id(key)), "", body, props)
            assert proc.poll() is None, workers.logs()
            time.sleep(0.3)
    finally:
        conn.close()
    # holds last HOLD_SECONDS: then it goes
    assert proc.wait(protocol.HOLD_SECONDS + 60) == 0
    assert "leaving" in workers.logs()


def test_a_bad_idle_timeout_is_refused_with_what_to_write(tmp_path) -> None:
    for argv, env in ((["--idle-timeout", "-5"], {}), ([], {"SIF_MAGIC_IDLE_TIMEOUT": "soon"})):
        res = subprocess.run(
            [sys.executable, "-m", "sif_magic", "worker", "--amqp-url", "amqp://x/", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), **env},
            timeout=60,
        )
        assert res.returncode == 2
        assert "must be seconds >= 0 (0: never)" in res.stderr, res.stderr


def test_workers_started_here_take_the_option_and_leave(sif_home, url_file, runtime) -> None:
    import argparse

    from sif_magic import launch
    from sif_magic.cli import register

    parser = argparse.ArgumentParser(prog="sif-magic")
    register(parser.add_subparsers(dest="command", required=True))
    argv = ["workers", "start", "--container", "none", "--runtime", runtime, "--processes", "1",
            "--idle-timeout", "1", "--amqp-url-file", str(url_file)]  # fmt: skip
    args = parser.parse_args(argv)
    try:
        assert args.func(args) == 0
        wait_until(lambda: [s for _, s in launch.list_workers()] == ["exited"], 120, "it to leave")
        ((rec, _),) = launch.list_workers()
        assert "(--idle-timeout 1): leaving" in Path(rec.log).read_text()
    finally:
        launch.stop_workers(timeout=2)
