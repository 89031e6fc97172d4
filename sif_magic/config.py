"""Configuration (traitlets) and the signing key.

Order of precedence, lowest first:

1. built-in defaults;
2. environment variables (``SIF_MAGIC_BACKEND``, ``SIF_MAGIC_AMQP_URL``, ...);
3. ``ipython_config.py`` (``c.SifConfig.amqp_url = ...``);
4. at run time, ``%config SifConfig.x = ...`` or ``%sif_config x=...``
   (the last one said wins), and finally options given to one ``%%sifmap``.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Bool, CFloat, CInt, Enum, List, Unicode, Union, default, validate
from traitlets.config import Configurable

from ._keys import load_key, read_secret_file
from ._urls import check_urls
from .backends import names as backend_names
from .errors import ConfigError, mask_url
from .protocol.names import QUEUE_TYPES
from .validate import check_runtime

ENV_PREFIX = "SIF_MAGIC_"


def _env(name: str, fallback: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name.upper(), fallback)


class SifConfig(Configurable):
    """Settings of sif_magic (``%sif_config`` shows and sets them)."""

    backend = Enum(
        list(backend_names()),
        config=True,
        help="Where calls run: 'local' (worker processes here, no broker) or 'rabbitmq'.",
    )
    amqp_url = Union(
        [Unicode(), List(Unicode())],
        config=True,
        help="RabbitMQ URL, amqp://user:password@host:5672/vhost (amqps:// for TLS); for a "
        "cluster, the URLs of its nodes, comma-separated or as a list: clients and workers "
        "move to the next node when theirs is lost.",
    )
    amqp_url_file = Unicode(
        config=True, help="File (mode 600) holding the RabbitMQ URL, instead of amqp_url."
    )
    queue_type = Enum(
        list(QUEUE_TYPES),
        config=True,
        help="Type of the durable queues: 'classic' (one node holds each) or 'quorum' "
        "(replicated on the nodes of a RabbitMQ cluster: survives losing a node). The same "
        "on every notebook and worker of a vhost.",
    )
    ca_file = Unicode(
        config=True, help="CA certificate that signed an amqps:// broker's certificate."
    )
    require_tls = Bool(
        config=True, help="Refuse a plain amqp:// broker URL (SIF_MAGIC_REQUIRE_TLS=1)."
    )
    runtime = Unicode(config=True, help="Runtime (worker image) name: selects the task queue.")
    key = Unicode(config=True, help="HMAC signing key (prefer key_file).")
    key_file = Unicode(config=True, help="File holding the HMAC key; created 600 on first use.")
    processes = CInt(
        0, config=True, help="Worker processes of the local backend (0: its GPUs, else CPUs)."
    )
    gpus = Unicode(
        config=True,
        help="GPUs of the local backend's call processes: auto, 0,1,... or '' (none).",
    )
    cpus = CInt(
        0, config=True, help="CPUs the local backend hands to calls that ask for some (0: all)."
    )
    chunksize = CInt(0, config=True, help="Calls per message (0: automatic).")
    timeout = CFloat(0.0, config=True, help="Per-call time limit in seconds (0: none).")
    retries = CInt(0, config=True, help="Re-runs of a call that raised.")
    max_lost = CInt(3, config=True, help="Worker deaths a call may cause before it fails.")
    errors = Enum(
        ["raise", "collect"],
        config=True,
        help="'raise' the first failure after the run, or 'collect' exceptions in the results.",
    )
    max_message_mb = CFloat(64.0, config=True, help="Largest message (pickled chunk) in MB.")
    spill_dir = Unicode(
        config=True,
        help="Where an input or a result over max_message_mb goes instead (a directory "
        "the notebook and the workers both see; default ~/.sif_magic/spill).",
    )
    spill_arrays_mb = CFloat(
        1.0,
        config=True,
        help="Inputs of a chunk, or results of a call process's batch, whose arrays "
        "(pickle out-of-band buffers) take this many MB or more go through spill_dir "
        "instead of the broker when every worker of the runtime reports it sees that "
        "directory (0: only what is over max_message_mb goes there).",
    )
    ship = Unicode(
        config=True,
        help="The user's modules that travel with the function, beyond those found: "
        "'+name' ships one, '-name' never ships it, 'none' ships only the '+' ones "
        "(e.g. ship=+plugins,-bigpkg).",
    )
    ship_max_mb = CFloat(
        10.0, config=True, help="Largest total source of the modules shipped with a function."
    )
    connect_timeout = CFloat(5.0, config=True, help="Seconds to wait for the broker.")
    no_worker_timeout = CFloat(
        10.0, config=True, help="Seconds without any consumer on the task queue before failing."
    )
    result_ttl = CFloat(
        86400.0, config=True, help="Seconds a job's result queue outlives its last client."
    )
    widgets = Bool(True, config=True, help="Show ipywidgets under cells (else text).")
    monitor = Bool(
        True,
        config=True,
        help="Follow jobs live (states, logs) on the monitoring exchange; results, and each "
        "call's output with them, come either way.",
    )
    progress_delay = CFloat(0.5, config=True, help="Seconds before a progress display appears.")
    cache_dir = Unicode(
        config=True,
        help="Folder (made mode 700) keeping the results of jobs run with resume "
        "(map_job(resume=True), %%sifmap --resume); %sif_cache shows and clears it.",
    )
    cache_max_mb = CFloat(
        2048.0, config=True, help="Size of cache_dir in MB; the least recently used go first."
    )

    @default("backend")
    def _backend(self) -> str:
        return _env("backend", "local")

    @default("amqp_url")
    def _amqp_url(self) -> str:
        return _env("amqp_url", "")

    @default("amqp_url_file")
    def _amqp_url_file(self) -> str:
        return _env("amqp_url_file", "")

    @default("queue_type")
    def _queue_type(self) -> str:
        return _env("queue_type", "classic")

    @default("ca_file")
    def _ca_file(self) -> str:
        return _env("ca_file", "")

    @default("spill_dir")
    def _spill_dir(self) -> str:
        return _env("spill_dir", "")

    @default("ship")
    def _ship(self) -> str:
        return _env("ship", "")

    @default("runtime")
    def _runtime(self) -> str:
        return _env("runtime", "default")

    @default("cache_dir")
    def _cache_dir(self) -> str:
        return _env("cache_dir", "~/.sif_magic/cache")

    @default("key_file")
    def _key_file(self) -> str:
        return _env("key_file", "")

    @default("errors")
    def _errors(self) -> str:
        return _env("errors", "raise")

    @default("monitor")
    def _monitor(self) -> bool:
        return _env("monitor", "1").lower() not in ("0", "false", "no", "off")

    @default("widgets")
    def _widgets(self) -> bool:
        return _env("widgets", "1").lower() not in ("0", "false", "no", "off")

    @default("require_tls")
    def _require_tls(self) -> bool:
        return _env("require_tls", "0").lower() in ("1", "true", "yes", "on")

    @validate("runtime")
    def _check_runtime(self, proposal: Any) -> str:
        return check_runtime(proposal["value"])

    @validate("ship")
    def _check_ship(self, proposal: Any) -> str:
        from ._ship import parse_ship

        parse_ship(proposal["value"])  # a ConfigError that shows the form
        return proposal["value"]

    @validate("amqp_url")
    def _check_url(self, proposal: Any) -> str:
        # one URL, or a cluster's (a list, or comma-separated): kept as one string
        return check_urls(proposal["value"], "amqp_url")

    def get_amqp_url(self) -> str:
        if self.amqp_url:
            return self.amqp_url
        if self.amqp_url_file:
            return check_urls(read_secret_file(self.amqp_url_file, "broker URL"), "amqp_url_file")
        raise ConfigError(
            "backend 'rabbitmq' needs a broker URL: %sif_config amqp_url=amqp://user:pw@host/vhost "
            "or set SIF_MAGIC_AMQP_URL (or SIF_MAGIC_AMQP_URL_FILE)"
        )

    def get_key(self) -> bytes:
        return load_key(self.key, self.key_file)

    def settings(self) -> dict[str, Any]:
        """Every setting, secrets masked (what ``%sif_config`` prints)."""
        out: dict[str, Any] = {}
        for name in sorted(self.trait_names(config=True)):
            value = getattr(self, name)
            if name == "key" and value:
                value = "***"
            elif name == "amqp_url":
                value = mask_url(value)
            out[name] = value
        return out

    def set_from_strings(self, pairs: dict[str, str]) -> None:
        names = set(self.trait_names(config=True))
        for name, text in pairs.items():
            if name not in names:
                raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(names))}")
            try:
                trait = self.traits()[name]
                value: Any = text
                if isinstance(trait, Bool):
                    value = text.lower() in ("1", "true", "yes", "on")
                setattr(self, name, value)
            except ConfigError:
                raise
            except Exception as e:  # traitlets raises TraitError with its own words
                raise ConfigError(f"{name}={mask_url(text)!r}: {e}") from None


_config: SifConfig | None = None


def get_config() -> SifConfig:
    """The process-wide configuration (the one ``%sif_config`` edits)."""
    global _config
    if _config is None:
        parent = None
        try:
            from IPython import get_ipython

            parent = get_ipython()
        except ImportError:  # pragma: no cover - the worker image may lack IPython
            pass
        _config = SifConfig(parent=parent) if parent is not None else SifConfig()
    return _config


def snapshot(**overrides: Any) -> SifConfig:
    """A copy of the current configuration with ``overrides`` applied (validated)."""
    base = get_config()
    copy = SifConfig()
    for name in base.trait_names(config=True):
        setattr(copy, name, getattr(base, name))
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in copy.trait_names(config=True):
            raise ConfigError(f"unknown option {name!r}")
        try:
            setattr(copy, name, value)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"{name}={mask_url(str(value))!r}: {e}") from None
    return copy
