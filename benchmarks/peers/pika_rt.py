"""Bare pika round trip: the floor any RabbitMQ tool pays for one message per call.

The client publishes one message per call to a queue; two consumer processes
(as sif_magic's two worker processes) take them (prefetch 16), compute
``x + 1``, publish a reply to the client's queue and ack. The client consumes
the replies until it has all of them.

Two variants: ``bare`` (the body is the number as text) and ``cloudpickle +
event`` (the body is a cloudpickled (function, argument), the reply a pickled
value, and each call also publishes a small JSON status event that the client
consumes, as a monitored tool would).
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


def consumer(queue: str, pickled: bool, prefetch: int) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(_common.BROKER_URL))
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=False)
    ch.basic_qos(prefetch_count=prefetch)
    funcs: dict[bytes, Any] = {}

    def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
        if pickled:
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
            "", props.reply_to, reply, pika.BasicProperties(correlation_id=props.correlation_id)
        )
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, on_message)
    ch.start_consuming()


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
    procs = [
        ctx.procs.start(
            [
                PY,
                "-m",
                "benchmarks.peers.pika_rt",
                "--scenarios",
                "consumer",
                "--params",
                json.dumps({"queue": queue, "pickled": pickled, "prefetch": 16}),
                "--out",
                str(ctx.workdir / f"consumer-{k}.json"),
            ],
            name=f"pika-consumer-{k}",
        )
        for k in range(consumers)
    ]
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
        for p in procs:
            ctx.procs.stop(p, grace=3)
        try:
            ch.queue_delete(queue)
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def run(ctx: Context) -> None:
    p = ctx.params
    if ctx.want("consumer"):
        consumer(p["queue"], bool(p["pickled"]), int(p["prefetch"]))
        return
    _common.ship_by_value()
    if ctx.want("s1"):
        with ctx.attempt("s1", "pika round trip (bare)"):
            round_trip(ctx, p.get("n1", 3000), pickled=False, inner=p.get("inner", 2))
        with ctx.attempt("s1", "pika round trip (cloudpickle + event)"):
            round_trip(ctx, p.get("n1", 3000), pickled=True, inner=p.get("inner", 2))
        _common.delete_queues(exchanges=(EVENTS_EXCHANGE,))


if __name__ == "__main__":
    sys.exit(_common.run_main(run))
