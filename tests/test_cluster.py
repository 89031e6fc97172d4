"""Issue 13, "a broker that survives losing a node": a 3-node RabbitMQ cluster, quorum queues.

One module-scoped cluster of three private nodes (tests/rabbit_cluster.py) on this
machine. The client and two real workers are each given every node's URL, in another
order, so each starts on its own node. Mid-run, the node the client is connected to is
killed with SIGKILL (it also led the job's queues: the client declared them), started
again, and then a node a worker is connected to is killed. Every call's result arrives
once; every call ran (counted by a side effect: a line in a file per finished run);
runs of a call beyond the first are the redeliveries of what the dead node's
connections held, and the client never surfaces one twice.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import wait_until
from queues import scope
from rabbit import free_port
from rabbit_cluster import RabbitCluster
from workers import WorkerProcs

from sif_magic import Executor, protocol
from sif_magic.errors import BrokerError, ConfigError
from sif_magic.transport import Connection, declare_task_queue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    with RabbitCluster(3) as c:
        yield c


# -- no broker needed ------------------------------------------------------------------


def test_queue_arguments_are_built_by_queue_type() -> None:
    s = "0123456789ab"
    dead = {"x-dead-letter-exchange": protocol.dead_exchange(s)}
    assert protocol.task_queue_arguments(s) == dead  # classic: no x-queue-type, as before
    assert protocol.task_queue_arguments(s, "quorum") == {**dead, "x-queue-type": "quorum"}
    quorum = protocol.result_queue_arguments(s, 60, "quorum")
    assert quorum == {**dead, "x-expires": 60_000, "x-queue-type": "quorum"}
    assert protocol.result_queue_arguments(s, 60, "classic") == {**dead, "x-expires": 60_000}
    classic = protocol.dead_queue_arguments("classic")
    assert "x-queue-type" not in classic and classic["x-max-length"] > 0
    assert protocol.dead_queue_arguments("quorum") == {**classic, "x-queue-type": "quorum"}
    for bad in (lambda: protocol.task_queue_arguments(s, "mirrored"),
                lambda: protocol.result_queue_arguments(s, 60, "mirrored"),
                lambda: protocol.dead_queue_arguments("mirrored")):  # fmt: skip
        with pytest.raises(ValueError, match="classic, quorum"):
            bad()


def test_a_url_setting_takes_the_nodes_of_a_cluster() -> None:
    from sif_magic._urls import split_urls
    from sif_magic.config import SifConfig
    from sif_magic.errors import mask_url

    cfg = SifConfig()
    cfg.amqp_url = ["amqp://u:p@n1:5672/vh", "amqp://u:p@n2:5672/vh"]  # a list, in the config
    assert cfg.amqp_url == "amqp://u:p@n1:5672/vh,amqp://u:p@n2:5672/vh"
    cfg.amqp_url = "amqp://u:p,w@n1/vh, amqp://u:p,w@n2/vh"  # a comma in a password stays
    assert split_urls(cfg.amqp_url) == ["amqp://u:p,w@n1/vh", "amqp://u:p,w@n2/vh"]
    assert mask_url(cfg.amqp_url) == "amqp://u:***@n1/vh,amqp://u:***@n2/vh"
    with pytest.raises(ConfigError, match="whole URL"):
        cfg.amqp_url = "amqp://u:p@n1:5672,n2:5672/vh"
    with pytest.raises(ConfigError, match="amqp:// or amqps://"):
        cfg.amqp_url = "amqp://u:p@n1/vh,http://n2/"  # not split there: one odd host
    cfg.set_from_strings({"queue_type": "quorum"})
    assert cfg.queue_type == "quorum"
    with pytest.raises(ConfigError):
        cfg.set_from_strings({"queue_type": "mirrored"})


def test_workers_started_or_submitted_get_the_urls_and_the_queue_type(sif_home: Path) -> None:
    import subprocess
    import sys

    from sif_magic.launch import slurm
    from sif_magic.launch.local import broker_env

    urls = "amqp://u:p@n1/vh,amqp://u:p@n2/vh"
    assert broker_env(amqp_url=urls) == {"SIF_MAGIC_AMQP_URL": urls}
    with pytest.raises(ConfigError, match="whole URL"):
        broker_env(amqp_url="amqp://u:p@n1,n2/vh")
    script = slurm.render_script(
        slurm.SlurmSpec(runtime="r", container="none", queue_type="quorum")
    )
    assert "export SIF_MAGIC_QUEUE_TYPE=quorum" in script
    with pytest.raises(ConfigError, match="classic, quorum"):
        slurm.render_script(slurm.SlurmSpec(runtime="r", container="none", queue_type="lazy"))
    bad = subprocess.run(
        [sys.executable, "-m", "sif_magic", "worker", "--runtime", "r"],
        env={**os.environ, "SIF_MAGIC_QUEUE_TYPE": "lazy", "SIF_MAGIC_AMQP_URL": urls},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "classic, quorum" in bad.stderr, bad.stderr


# -- the cluster -----------------------------------------------------------------------


def test_a_dead_broker_in_the_list_is_skipped_and_none_alive_says_each_reason(
    cluster: RabbitCluster, key_file: Path
) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    s = scope(key_file)
    conn = Connection(
        f"{dead},{cluster.nodes[1].url}", scope=s, name="sif-skip", queue_type="quorum"
    )
    conn.start()
    try:
        assert conn.node == 1 and conn.node_url == cluster.nodes[1].url
    finally:
        conn.close()
    other = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    with pytest.raises(BrokerError, match="none of the 2 brokers") as e:
        Connection(f"{dead},{other}", scope=s, name="sif-none", connect_timeout=2).start()
    assert str(e.value).count("connection refused") == 2


def test_a_queue_of_the_other_type_is_a_clear_error(cluster: RabbitCluster, key_file: Path) -> None:
    """Queues declared classic, then a quorum declaration: what to do, not a reconnect loop
    (in a vhost of its own: the dead-letter queue is declared too, with the queue type)."""
    cluster.ctl("add_vhost", "qtype")
    cluster.ctl("set_permissions", "-p", "qtype", "guest", ".*", ".*", ".*")
    url = ",".join(n.url_for("guest", "guest", "qtype") for n in cluster.nodes)
    s = scope(key_file)
    try:
        classic = Connection(
            url, scope=s, name="sif-classic", setup=lambda ch: declare_task_queue(ch, s, "r")
        )
        classic.start()
        classic.close()
        with pytest.raises(BrokerError, match="queue_type") as e:
            Connection(
                url,
                scope=s,
                name="sif-quorum",
                queue_type="quorum",
                setup=lambda ch: declare_task_queue(ch, s, "r", "quorum"),
            ).start()
        assert "rabbitmqctl delete_queue" in str(e.value)
        assert protocol.scope_prefix(s) in str(e.value)  # names the queue to delete
    finally:
        cluster.ctl("delete_vhost", "qtype")


def _finished_runs(path: Path) -> Counter:
    try:
        return Counter(int(line) for line in path.read_text().split())
    except FileNotFoundError:
        return Counter()


def test_losing_the_clients_node_then_a_workers_node_loses_no_call(
    cluster: RabbitCluster, key_file: Path, tmp_path: Path
) -> None:
    a, b, c = cluster.nodes
    runtime = f"cluster-{time.time_ns() % 10**8}"
    runs = tmp_path / "runs"  # one line per finished run of a call
    gate = tmp_path / "gate"  # the last calls wait for it: the run is still on at both kills
    in_order = [n.url for n in (a, b, c)]
    workers = WorkerProcs(cluster.url, key_file, tmp_path, admin_url=b.url, queue_type="quorum")
    # worker 1 starts on b, worker 2 on c (each takes the first node that answers)
    workers.start(runtime, processes=2, url=",".join(in_order[1:] + in_order[:1]))
    workers.start(runtime, processes=2, url=",".join(in_order[2:] + in_order[:2]))
    ex = Executor(
        backend="rabbitmq",
        key_file=str(key_file),
        amqp_url=in_order,  # a list: the client starts on a
        runtime=runtime,
        queue_type="quorum",
        connect_timeout=3,
    )
    n, gated = 160, 150

    def work(x: int) -> int:
        import os
        import time

        if x >= gated:
            deadline = time.time() + 240
            while not os.path.exists(gate) and time.time() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(0.1)
        with open(runs, "a") as f:  # one short O_APPEND write: lines never interleave
            f.write(f"{x}\n")
        return x * 3

    try:
        job = ex.map_job(work, range(n), chunksize=2)
        assert cluster.node_of(f"sif_magic client {ex.backend.session}") is a
        wait_until(lambda: job.count("done") >= 30, 120, "30 calls done")

        # 1. the client's node dies (it also led the job's quorum queues)
        a.kill()
        done = job.count("done")
        wait_until(lambda: job.count("done") >= done + 30, 120, "30 more calls after the kill")
        client_node = cluster.node_of(f"sif_magic client {ex.backend.session}")
        assert client_node in (b, c), "the client did not move to a live node"

        # the node comes back and its queue replicas catch up (a 2nd loss needs 3 again)
        a.start()
        cluster.wait_members(3)
        s = scope(key_file)
        for queue in (protocol.task_queue(s, runtime), protocol.result_queue(s, job.job_id)):
            wait_until(lambda q=queue: cluster.quorum_online(q) == 3, 120, f"{queue} on 3 nodes")

        # 2. a node a worker is connected to dies (not the client's, if there is one)
        worker_nodes = [cluster.node_of(f"sif_magic worker {wid}") for wid in _worker_ids(workers)]
        victim = next((x for x in worker_nodes if x is not client_node), worker_nodes[0])
        assert victim is not None
        done = job.count("done")
        victim.kill()
        wait_until(
            lambda: job.count("done") >= min(done + 20, gated), 120, "calls done after the kill"
        )
        gate.touch()
        values = job.results(timeout=240)
    finally:
        gate.touch()
        workers.stop()
        ex.shutdown(wait=False, cancel_futures=True)
        for node in cluster.nodes:
            if not node.is_running():
                node.start()
        cluster.wait_members(3)

    assert values == [x * 3 for x in range(n)]  # every result, in order, each once
    assert job.state_counts()["done"] == n
    ran = _finished_runs(runs)
    assert set(ran) == set(range(n)), f"calls that never finished a run: {set(range(n)) - set(ran)}"
    twice = sorted(x for x, k in ran.items() if k > 1)
    print(
        f"\nFIGURES cluster: calls={n} runs={sum(ran.values())} re-run={len(twice)} "
        f"duplicates-dropped={job.duplicates} surfaced=0 lost=0"
    )


def _worker_ids(workers: WorkerProcs) -> list[str]:
    """The ids the workers logged when they started consuming."""
    ids = []
    for proc in workers.procs:
        text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        found = re.search(r" INFO worker (\S+) consuming ", text)
        if found:
            ids.append(found.group(1))
    assert len(ids) == len(workers.procs), workers.logs()
    return ids
