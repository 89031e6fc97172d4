"""``sif-magic logs [JOB] [--follow]``: call logs and states from the monitoring exchange.

Anyone with the broker URL and the signing key can watch: this subscribes to
``job.<JOB>.#`` (or every job) on the key's monitoring exchange
(``sif_magic.<key id>.monitor``), like the widgets do.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._common import add_url_args, warn_url_in_argv


def register(sub: Any) -> None:
    p = sub.add_parser("logs", help="print call logs and states from the monitoring exchange")
    p.add_argument("job", nargs="?", default="", help="job id (default: every job)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing as events arrive")
    add_url_args(p)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import pika

    from .. import protocol
    from .._urls import split_urls
    from ..config import snapshot
    from ..errors import SifMagicError
    from ..transport import (
        declare_private_queue,
        declare_topology,
        dial,
        explain_connect_error,
        parameters_list,
    )

    warn_url_in_argv("sif-magic logs", args.amqp_url)
    broker = {"amqp_url": args.amqp_url}
    if args.amqp_url_file:  # the file, whatever SIF_MAGIC_AMQP_URL says
        broker = {"amqp_url": args.amqp_url or "", "amqp_url_file": args.amqp_url_file}
    try:
        cfg = snapshot(**broker)
        url = cfg.get_amqp_url()
        key = cfg.get_key()
        try:  # the first broker that answers (one, or the nodes of a cluster)
            params = parameters_list(url, cfg.connect_timeout, cfg.ca_file, cfg.require_tls)
            conn, _ = dial(params, split_urls(url))
        except SifMagicError:
            raise
        except Exception as e:  # noqa: BLE001
            raise explain_connect_error(url, e) from None
    except SifMagicError as e:
        print(f"sif-magic logs: {e}", file=sys.stderr)
        return 1
    ch = conn.channel()
    scope = protocol.key_id(key)
    declare_topology(ch, scope, cfg.queue_type)
    q = declare_private_queue(ch, scope, "logs")
    pattern = f"job.{args.job}.#" if args.job else "job.#"
    ch.queue_bind(q, protocol.monitor_exchange(scope), pattern)
    out = sys.stdout
    print(
        f"following {'job ' + args.job if args.job else 'every job'} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    deadline = time.time() + args.seconds if args.seconds else None
    try:
        for method, props, body in ch.consume(q, auto_ack=True, inactivity_timeout=0.5):
            if deadline and time.time() > deadline:
                break
            if method is None:
                if not args.follow and not args.seconds:
                    break
                continue
            try:
                protocol.verify(key, props.type, body, props.headers)
                batch = protocol.EventBatch.decode(body)
            except protocol.ProtocolError:
                continue
            tag = batch.job_id if not args.job else ""
            for index, stream, text in batch.logs:
                prefix = f"[{tag + ' ' if tag else ''}{index}{' err' if stream == 2 else ''}] "
                for line in str(text).splitlines():
                    out.write(prefix + line + "\n")
            for state, ranges in batch.states.items():
                if state in ("failed", "retrying", "lost"):
                    calls = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
                    out.write(f"[{tag + ' ' if tag else ''}{calls}] {state} on {batch.host}\n")
            for index, note in batch.notes.items():
                out.write(f"[{tag + ' ' if tag else ''}{index}] {note}\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    except pika.exceptions.AMQPError as e:
        print(f"sif-magic logs: lost the broker connection ({type(e).__name__})", file=sys.stderr)
        return 1
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
    return 0
