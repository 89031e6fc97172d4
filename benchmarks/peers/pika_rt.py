"""Bare pika round trip: the floor any RabbitMQ tool pays for one message per call.

The client publishes one message per call to a queue; two consumer processes
(as sif_magic's two worker processes) take them (prefetch 16), compute
``x + 1``, publish a reply to the client's queue and ack. The client consumes
the replies until it has all of them.

Two variants: ``bare`` (the body is the number as text) and ``cloudpickle +
event`` (the body is a cloudpickled (function, argument), the reply a pickled
value, and each call also publishes a small JSON status event that the client
consumes, as a monitored tool would).

s9 (``arrays``): the same round trip with the bytes of the big arrays
(``_arrays.py``): one message per array, its raw bytes as the body; the two
consumers (prefetch 2) send each body back as it came (``echo``). Twice: with
transient messages, as in s1 (``bare``), and with persistent messages on durable
queues (``bare, persistent``: the broker writes each body to disk, as it does
sif_magic's tasks and results). The bodies are made before the clock starts.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from typing import Any

from . import _common
from ._common import PY, Context

EVENTS_EXCHANGE = "sif_bench.events"


def consumer(
    queue: str, pickled: bool, prefetch: int, echo: bool = False, persistent: bool = False
) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(_common.BROKER_URL))
    ch = conn.channel()
    ch.queue_declare(queue, durable=persistent, auto_delete=False)
    ch.basic_qos(prefetch_count=prefetch)
    funcs: dict[bytes, Any] = {}

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        if echo:
            reply = body
        elif pickled:
            fb, x = pickle.loads(body)
            fn = funcs.get(fb)
            if fn is None:
                fn = funcs[fb] = pickle.loads(fb)
            reply = pickle.dumps(fn(x), protocol=5)
            event = json.dumps({"id": props.correlation_id, "state": "done", "t": time.time()})
            ch.basic_publish(EVENTS_EXCHANGE, "job.events", event.encode())
        else:
            reply = str(int(body) + 1).encode()
        ch.basic_publish(
            "",
            props.reply_to,
            reply,
            pika.BasicProperties(
                correlation_id=props.correlation_id, delivery_mode=2 if persistent else 1
            ),
        )
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_message)
    ch.start_consuming()


def start_consumers(ctx: Context, params: dict[str, Any], count: int, name: str) -> list[Any]:
    """``count`` consumer processes (``consumer``) with ``params``."""
    return [
        ctx.procs.start(
            [
                PY,
                "-m",
                "benchmarks.peers.pika_rt",
                "--scenarios",
                "consumer",
                "--params",
                json.dumps(params),
                "--out",
                str(ctx.workdir / f"{name}-{k}.json"),
            ],
            name=f"pika-{name}-{k}",
        )  # fmt: skip
        for k in range(count)
    ]


def stop(ctx: Context, procs: list[Any], ch: Any, conn: Any, queue: str) -> None:
    """Stop the consumers, delete their queue, close the connection."""
    for p in procs:
        ctx.procs.stop(p, grace=3)
    try:
        ch.queue_delete(queue)
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def round_trip(ctx: Context, n: int, pickled: bool, consumers: int = 2, inner: int = 1) -> None:
    import cloudpickle
    import pika

    from ._funcs import inc

    queue = _common.unique("sif_bench.pika")
    conn = pika.BlockingConnection(pika.URLParameters(_common.BROKER_URL))
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=False)
    ch.exchange_declare(EVENTS_EXCHANGE, "topic", auto_delete=False)
    reply_q = ch.queue_declare("", exclusive=True).method.queue
    event_q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(event_q, EVENTS_EXCHANGE, "job.#")
    procs = start_consumers(
        ctx, {"queue": queue, "pickled": pickled, "prefetch": 16}, consumers, "consumer"
    )
    try:
        _common.wait_until(
            lambda: ch.queue_declare(queue, passive=True).method.consumer_count >= consumers,
            30,
            "pika consumers",
        )
        func = cloudpickle.dumps(inc, protocol=5)
        got = {"replies": 0, "events": 0, "sum": 0}

        def on_reply(c: Any, method: Any, props: Any, body: bytes) -> None:
            got["replies"] += 1
            got["sum"] += pickle.loads(body) if pickled else int(body)

        def on_event(c: Any, method: Any, props: Any, body: bytes) -> None:
            got["events"] += 1

        ch.basic_consume(reply_q, on_reply, auto_ack=True)
        ch.basic_consume(event_q, on_event, auto_ack=True)

        def run(count: int) -> float:
            got.update(replies=0, events=0, sum=0)
            t0 = time.perf_counter()
            for i in range(count):
                body = pickle.dumps((func, i), protocol=5) if pickled else str(i).encode()
                ch.basic_publish(
                    "",
                    queue,
                    body,
                    pika.BasicProperties(reply_to=reply_q, correlation_id=str(i)),
                )
            deadline = time.monotonic() + 120
            while got["replies"] < count or (pickled and got["events"] < count):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {got} of {count} replies in 120 s")
                conn.process_data_events(time_limit=0.05)
            dt = time.perf_counter() - t0
            if got["sum"] != sum(range(count)) + count:
                raise RuntimeError("wrong replies")
            return dt

        run(200)  # warm
        tool = "pika round trip (cloudpickle + event)" if pickled else "pika round trip (bare)"
        for _ in range(inner):
            dt = run(n)
            ctx.throughput("s1", tool, n, dt, consumers=consumers)
    finally:
        stop(ctx, procs, ch, conn, queue)


def arrays(ctx: Context, persistent: bool, consumers: int = 2) -> None:
    """s9: the big arrays' bytes there and back, one message each way per array."""
    import pika

    from . import _arrays

    data = _arrays.make(ctx.params)
    bodies = [a.tobytes() for a in data]
    queue = _common.unique("sif_bench.pika9")
    conn = pika.BlockingConnection(pika.URLParameters(_common.BROKER_URL))
    ch = conn.channel()
    ch.queue_declare(queue, durable=persistent, auto_delete=False)
    reply_q = ch.queue_declare("", durable=persistent, exclusive=True).method.queue
    params = {"queue": queue, "pickled": False, "prefetch": 2, "echo": True}
    params["persistent"] = persistent
    tool = "pika round trip (bare, persistent)" if persistent else "pika round trip (bare)"
    procs = start_consumers(ctx, params, consumers, "echo")
    try:
        _common.wait_until(
            lambda: ch.queue_declare(queue, passive=True).method.consumer_count >= consumers,
            30,
            "pika consumers",
        )
        got: dict[int, int] = {}
        ch.basic_consume(
            reply_q,
            lambda c, m, props, body: got.__setitem__(int(props.correlation_id), len(body)),
            auto_ack=True,
        )

        def run(count: int) -> float:
            got.clear()
            t0 = time.perf_counter()
            for i, body in enumerate(bodies[:count]):
                props = pika.BasicProperties(
                    reply_to=reply_q, correlation_id=str(i), delivery_mode=2 if persistent else 1
                )
                ch.basic_publish("", queue, body, props)
            deadline = time.monotonic() + 600
            while len(got) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(got)} of {count} replies in 600 s")
                conn.process_data_events(time_limit=0.05)
            dt = time.perf_counter() - t0
            if any(got[i] != len(bodies[i]) for i in range(count)):
                raise RuntimeError("wrong replies")
            return dt

        run(2)  # warm
        for _ in range(ctx.params.get("inner", 2)):
            dt = run(len(bodies))
            ctx.record(
                "s9", tool, "throughput", _arrays.moved_mb(data) / dt,
                "MB/s", higher_is_better=True, seconds=dt, arrays=len(data), consumers=consumers,
            )  # fmt: skip
    finally:
        stop(ctx, procs, ch, conn, queue)


def run(ctx: Context) -> None:
    p = ctx.params
    if ctx.want("consumer"):
        consumer(
            p["queue"], bool(p["pickled"]), int(p["prefetch"]), bool(p.get("echo")),
            bool(p.get("persistent")),
        )  # fmt: skip
        return
    _common.ship_by_value()
    if ctx.want("s1"):
        with ctx.attempt("s1", "pika round trip (bare)"):
            round_trip(ctx, p.get("n1", 3000), pickled=False, inner=p.get("inner", 2))
        with ctx.attempt("s1", "pika round trip (cloudpickle + event)"):
            round_trip(ctx, p.get("n1", 3000), pickled=True, inner=p.get("inner", 2))
        _common.delete_queues(exchanges=(EVENTS_EXCHANGE,))
    if ctx.want("s9"):
        with ctx.attempt("s9", "pika round trip (bare)"):
            arrays(ctx, persistent=False)
        with ctx.attempt("s9", "pika round trip (bare, persistent)"):
            arrays(ctx, persistent=True)


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
