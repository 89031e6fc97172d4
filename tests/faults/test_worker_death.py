"""Issue 4, point 1: a worker killed with SIGKILL in the middle of a run loses no call.

Real ``sif-magic worker`` processes on the machine's RabbitMQ. A worker is killed
(its pid, or its whole process group) while it holds unacked chunks; RabbitMQ
redelivers them to the surviving worker, which splits them into one message per
call, shows those calls as ``lost`` and runs them again. Results that arrive
twice count once (``job.duplicates``); the user's list has every index once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import FaultWorkers, Watcher, alive, descendants, wait_gone, wait_until
from queues import scope
from rabbit import RabbitNode

from sif_magic import WorkerLostError, protocol


@pytest.mark.parametrize("how", ["pid", "process-group"])
def test_kill_9_of_a_worker_loses_no_call(
    fworkers: FaultWorkers, make_ex, runtime: str, how: str
) -> None:
    victim, survivor = fworkers.start(runtime, processes=2, count=2)
    slots = descendants(victim.pid)
    assert len(slots) == 2, f"expected the victim's 2 call processes, found {slots}"

    def square_slowly(x: int) -> tuple[int, int]:
        import time

        time.sleep(0.05)
        return x, x * x

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    n = 200
    job = ex.map_job(square_slowly, range(n), chunksize=5)
    watch = Watcher(job)
    wait_until(lambda: job.count("done") >= 40, 60, "40 calls done before the kill")
    # the victim holds calls right now (prefetched chunks, running calls)
    if how == "pid":
        os.kill(victim.pid, signal.SIGKILL)
    else:
        os.killpg(victim.pid, signal.SIGKILL)  # its own session: pgid == pid
    t_kill = time.time()
    victim.wait(5)
    # the call processes die with their worker (PR_SET_DEATHSIG), none remains
    left = wait_gone(slots, 5)
    assert not left, f"call processes of the killed worker still run: {left}"

    values = job.results(timeout=120)
    watch.stop()
    elapsed = time.time() - t_kill
    assert values == [(i, i * i) for i in range(n)]  # every result right, in order, once
    assert job.state_counts()["done"] == n
    # the calls the dead worker held: queued again with a note, shown lost, then done
    lost = sorted(i for i, note in job.notes.items() if "worker lost 1 time" in note)
    rerun = [i for i in lost if job.describe_call(i)["attempt"] == 2]
    assert lost, "no call was noted as lost: the kill hit no held chunk?"
    assert rerun, "no call's accepted outcome came from the re-run"
    never_lost = sorted(set(rerun) - watch.seen("lost"))
    assert not never_lost, f"re-run calls never shown as lost: {never_lost}"
    assert all(job.describe_call(i)["worker"] != "" for i in rerun)
    assert survivor.poll() is None
    print(
        f"\nFIGURES worker-death/{how}: calls={n} noted-lost={len(lost)} rerun={len(rerun)} "
        f"seen-lost={len(watch.seen('lost'))} duplicates-dropped={job.duplicates} "
        f"duplicates-surfaced=0 lost-calls=0 finish-after-kill={elapsed:.1f}s"
    )


def test_call_children_do_not_outlive_a_killed_worker(
    fworkers: FaultWorkers, make_ex, runtime: str, tmp_path: Path
) -> None:
    """A call that started a process of its own: when its worker is SIGKILLed, that
    process must not stay behind on the node (it is in the call's process group)."""
    victim, survivor = fworkers.start(runtime, processes=2, count=2)
    d = str(tmp_path)

    def with_child(x: int) -> int:
        import os
        import subprocess

        child = subprocess.Popen(["sleep", "60"])
        open(os.path.join(d, f"child-{x}-{child.pid}"), "w").close()
        try:
            child.wait(0.3)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return x

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    job = ex.map_job(with_child, range(40), chunksize=2)
    victim_slots = set(descendants(victim.pid))
    wait_until(
        lambda: any(int(p.name.split("-")[2]) in descendants(victim.pid) for p in _kids(tmp_path)),
        60,
        "a call of the victim running with its child",
    )
    inside = [p for p in descendants(victim.pid) if p not in victim_slots]
    fworkers.track(inside)  # killed at teardown if they outlive the test
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    assert job.results(timeout=120) == list(range(40))
    # give every process of the dead worker time to go
    left = wait_gone(list(victim_slots) + inside, 5)
    children = [int(p.name.split("-")[2]) for p in _kids(tmp_path)]
    fworkers.track(children, cmd_prefix=b"sleep\0")
    leaked = sorted(set(left) | {pid for pid in children if alive(pid)})
    assert not leaked, (
        f"processes started by calls of the SIGKILLed worker still run: {leaked} "
        f"(of {len(inside)} children running at the kill: {inside})"
    )


def _kids(d: Path) -> list[Path]:
    return list(d.glob("child-*"))


def test_poison_call_is_stopped_after_max_lost(fworkers: FaultWorkers, make_ex, runtime: str):
    """A call that kills every worker that takes it fails with 'worker lost 2 times'
    (max_lost=2) instead of being redelivered forever; the other calls are done."""
    procs = fworkers.start(runtime, processes=1, count=3)

    def poison(x: int) -> int:
        import os
        import time

        if x == 5:
            os.kill(os.getppid(), 9)  # the worker that runs this call
            time.sleep(10)
        time.sleep(0.1)
        return x * 10

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime, max_lost=2)
    job = ex.map_job(poison, range(12), chunksize=2, errors="collect")
    values = job.results(timeout=120)
    dead = [p for p in procs if p.poll() is not None]
    assert job.state(5) == "failed"
    err = job.error(5)
    assert isinstance(err, WorkerLostError)
    assert "worker lost 2 times" in str(err)
    assert isinstance(values[5], WorkerLostError)
    others = {i: job.state(i) for i in range(12) if i != 5}
    assert all(s == "done" for s in others.values()), (
        f"innocent calls did not end done: "
        f"{ {i: (s, str(job.error(i))) for i, s in others.items() if s != 'done'} }"
    )
    assert [values[i] for i in others] == [i * 10 for i in others]
    assert len(dead) == 2, f"the poison call should kill exactly 2 workers, killed {len(dead)}"
    print(f"\nFIGURES poison: workers-killed={len(dead)} duplicates-dropped={job.duplicates}")


@pytest.mark.slow
def test_a_redelivered_chunk_is_split_into_messages_of_one_input_each(
    key_file: Path, make_ex, runtime: str, tmp_path: Path
) -> None:
    """After a worker death the chunk comes back as one message per call: each of those
    must carry its own input, not the whole chunk's (20 calls x 100 KB inputs: 20
    messages of ~100 KB, not 20 of ~2 MB; with 2,000-call chunks of the 64 MB limit the
    difference is 128 GB through the broker)."""
    with RabbitNode() as node:
        w = FaultWorkers(node.url, key_file, tmp_path)
        try:
            (victim,) = w.start(runtime, processes=1)
            d = str(tmp_path)

            def first_is_slow(item: tuple[int, bytes]) -> int:
                import os
                import time

                i, blob = item
                if i == 0:
                    open(os.path.join(d, f"slow-{os.getpid()}"), "w").close()
                    time.sleep(4)
                return len(blob) + i

            ex = make_ex(amqp_url=node.url, runtime=runtime, connect_timeout=3)
            items = [(i, os.urandom(100_000)) for i in range(20)]
            job = ex.map_job(first_is_slow, items, chunksize=20)
            wait_until(lambda: list(tmp_path.glob("slow-*")), 30, "the first call running")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(5)
            w.start(runtime, processes=1)  # takes the redelivered chunk and splits it
            prefix = protocol.task_queue(scope(), runtime)  # and its retry queue, if any

            def ready() -> tuple[int, int] | None:
                count = size = 0
                for line in node.ctl(
                    "list_queues", "--no-table-headers", "name", "messages_ready",
                    "message_bytes_ready",
                ).splitlines():  # fmt: skip
                    name, n, b = line.split("\t")
                    if name == prefix or name.startswith(prefix + "."):
                        count, size = count + int(n), size + int(b)
                return (count, size) if count else None

            count, size = wait_until(ready, 20, "split messages waiting in the task queue")
            per_message = size / count
            assert job.results(timeout=60) == [100_000 + i for i in range(20)]
            print(
                f"\nFIGURES split: chunk of 20 x 100 KB inputs; {count} split messages ready, "
                f"{per_message / 1024:.0f} KiB each"
            )
            assert per_message < 400_000, (
                f"each per-call message after the split carries {per_message / 1e6:.1f} MB: "
                "the whole chunk's inputs instead of its own ~0.1 MB"
            )
        finally:
            w.stop()


def test_sigterm_mid_run_gives_the_calls_back(
    fworkers: FaultWorkers, make_ex, runtime: str
) -> None:
    """A worker stopped with SIGTERM (SLURM walltime, `sif-magic workers stop`) in the
    middle of a run exits promptly; the calls it held run on the other worker."""
    leaving, staying = fworkers.start(runtime, processes=2, count=2)
    slots = descendants(leaving.pid)

    def work(x: int) -> int:
        import time

        time.sleep(0.05)
        return x + 1

    ex = make_ex(amqp_url=fworkers.url, runtime=runtime)
    job = ex.map_job(work, range(200), chunksize=5)
    wait_until(lambda: job.count("done") >= 40, 60, "40 calls done")
    t0 = time.time()
    leaving.send_signal(signal.SIGTERM)
    leaving.wait(15)
    took = time.time() - t0
    assert job.results(timeout=120) == [x + 1 for x in range(200)]
    assert not wait_gone(slots, 5)
    assert staying.poll() is None
    print(f"\nFIGURES sigterm-mid-run: worker exited {leaving.returncode} in {took:.1f}s")
