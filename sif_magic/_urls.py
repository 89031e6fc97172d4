"""Broker URLs: one, or several (the nodes of a RabbitMQ cluster), in one setting.

Wherever sif_magic takes a broker URL (``amqp_url``, ``SIF_MAGIC_AMQP_URL``, the URL
file, ``--amqp-url``) it takes a list too: URLs separated by commas or whitespace
(``amqp://u:pw@node1/vh,amqp://u:pw@node2/vh``), or a Python list in the config. A
comma splits only where the next URL starts (``,amqp://``, or any ``,scheme://``), so
a password that holds a comma still works. Clients and workers connect to the first
URL that answers and move on to the next when their node goes away
(``transport.iothread``).

Standard library only (the worker's command imports it); no state, no threads.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from .errors import ConfigError, mask_url

_SPLIT = re.compile(r"\s+|,\s*(?=[a-zA-Z][a-zA-Z0-9+.-]*://)")
EXAMPLE = "amqp://user:password@broker:5672/vhost"


def split_urls(text: str | Iterable[str]) -> list[str]:
    """The URLs of ``text`` (one URL, a comma/whitespace-separated list, or a list)."""
    parts = [text] if isinstance(text, str) else list(text)
    return [u for part in parts for u in _SPLIT.split(part.strip()) if u]


def check_urls(text: str | Iterable[str], what: str = "amqp_url") -> str:
    """``text`` as one setting value (URLs joined by commas), or ConfigError naming
    the first URL that is not an amqp:// or amqps:// one. Empty stays empty."""
    urls = split_urls(text)
    for url in urls:
        if not url.startswith(("amqp://", "amqps://")):
            raise ConfigError(
                f"{what}: {mask_url(url)!r} must start with amqp:// or amqps://, e.g. {EXAMPLE} "
                "(several brokers, the nodes of a cluster: separate their URLs with commas)"
            )
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
        if "," in host:
            raise ConfigError(
                f"{what}: {mask_url(url)!r} lists several hosts in one URL: give each node "
                "its whole URL, comma-separated: amqp://user:pw@node1:5672/vhost,"
                "amqp://user:pw@node2:5672/vhost"
            )
    return ",".join(urls)
