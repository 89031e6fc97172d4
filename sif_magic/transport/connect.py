"""From a broker URL to pika's connection parameters, and from what pika raised while
connecting to an error that says what to do (wrong password, vhost, host, port, TLS);
the largest message a broker takes (``broker_max_message``).

A URL setting may name several brokers (the nodes of a cluster, see ``sif_magic._urls``):
``parameters_list`` gives one set of parameters per node, and ``NoNodeAnswered`` is
what connecting raises when none of them would take the connection.

Threads: any; nothing here holds state.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.parse

import pika
import pika.exceptions as pe

from .._urls import split_urls
from ..errors import BrokerError, mask_url

MIB = 1 << 20
TRUE = ("1", "true", "yes", "on")


class NoNodeAnswered(pe.AMQPConnectionError):
    """No broker of a URL list took the connection: ``errors`` holds (url, what it raised)."""

    def __init__(self, errors: list[tuple[str, BaseException]]) -> None:
        super().__init__(f"no broker of {len(errors)} answered")
        self.errors = errors


def describe_url(url: str) -> str:
    return mask_url(url)


def parameters_list(
    url: str, connect_timeout: float, ca_file: str = "", require_tls: bool = False
) -> list[pika.URLParameters]:
    """``connection_parameters`` of every URL in ``url`` (one, or a list: see ``_urls``)."""
    urls = split_urls(url)
    if not urls:
        raise BrokerError("no broker URL: amqp_url is empty")
    return [connection_parameters(u, connect_timeout, ca_file, require_tls) for u in urls]


def broker_max_message(server_properties: dict) -> int:
    """The largest message body the broker takes by default, from the version it
    announces (AMQP has no way to ask for the configured ``max_message_size``):
    RabbitMQ 4.x 16 MiB, 3.8 to 3.13 128 MiB; an unknown broker 16 MiB."""
    version = server_properties.get("version", b"")
    if isinstance(version, bytes):
        version = version.decode("ascii", "replace")
    try:
        major, minor = (int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return 16 * MIB
    return 128 * MIB if (3, 8) <= (major, minor) < (4, 0) else 16 * MIB


def connection_parameters(
    url: str, connect_timeout: float, ca_file: str = "", require_tls: bool = False
) -> pika.URLParameters:
    """pika's parameters for ``url``. Refuses a plain ``amqp://`` URL together with a
    ``ca_file`` (which only TLS uses: the user meant TLS and would silently run
    without it), and any plain URL with ``require_tls`` (or SIF_MAGIC_REQUIRE_TLS=1)."""
    if not url.startswith(("amqp://", "amqps://")):
        raise BrokerError(
            f"broker URL {mask_url(url)!r} must look like amqp://user:password@host:5672/vhost"
        )
    require_tls = require_tls or os.environ.get("SIF_MAGIC_REQUIRE_TLS", "") in TRUE
    if url.startswith("amqp://") and (ca_file or require_tls):
        why = f"ca_file is set ({ca_file})" if ca_file else "require_tls is set"
        raise BrokerError(
            f"broker URL {mask_url(url)!r} is plain amqp:// (no TLS), but {why}: use "
            "amqps:// (usually port 5671) to talk TLS to the broker, or drop the setting"
        )
    try:
        params = pika.URLParameters(url)
    except Exception:  # pika's message quotes parts of the URL: the password, say
        raise BrokerError(
            f"cannot parse broker URL {mask_url(url)!r}: check its form (amqp://user:password@"
            "host:5672/vhost); a user name or password holding '/', '@', ':' or '%' must be "
            "percent-encoded (%2F, %40, %3A, %25)"
        ) from None
    params.socket_timeout = connect_timeout
    params.stack_timeout = connect_timeout * 2
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    if params.heartbeat is None:
        params.heartbeat = 30
    if url.startswith("amqps://"):
        ctx = ssl.create_default_context(cafile=ca_file or None)
        params.ssl_options = pika.SSLOptions(ctx, server_hostname=params.host)
    return params


def dial(
    params: list[pika.URLParameters], urls: list[str], first: int = 0
) -> tuple[pika.BlockingConnection, int]:
    """A connection to the first broker that answers, trying them from ``first`` on;
    with it, which one (its index). One broker: raises what pika raised; several:
    ``NoNodeAnswered`` with each one's error."""
    errors: list[tuple[str, BaseException]] = []
    for i in range(len(params)):
        at = (first + i) % len(params)
        try:
            return pika.BlockingConnection(params[at]), at
        except Exception as e:  # noqa: BLE001 - the next broker may answer
            errors.append((urls[at], e))
    if len(errors) == 1:
        raise errors[0][1]
    raise NoNodeAnswered(errors)


def explain_connect_error(url: str, e: BaseException) -> BrokerError:
    """Turn what pika raised while connecting into an error that says what to do."""
    if isinstance(e, NoNodeAnswered):
        if len(e.errors) == 1:
            return explain_connect_error(*e.errors[0])
        reasons = "; ".join(
            f"{i}. {explain_connect_error(u, err)}" for i, (u, err) in enumerate(e.errors, 1)
        )
        return BrokerError(f"none of the {len(e.errors)} brokers in amqp_url answered: {reasons}")
    parsed = urllib.parse.urlparse(url)
    where = f"{parsed.hostname}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}"
    user = urllib.parse.unquote(parsed.username or "guest")
    vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    text = f"{e} {e!r}"  # pika often says nothing in str(), the cause is in repr()
    if isinstance(e, pe.ProbableAuthenticationError | pe.AuthenticationError):
        msg = f"RabbitMQ at {where} refused the login of user {user!r}: check the user name and password in amqp_url"
    elif isinstance(e, pe.ProbableAccessDeniedError):
        msg = (
            f"RabbitMQ at {where} refused access to vhost {vhost!r}: it does not exist or user "
            f"{user!r} has no permissions there (rabbitmqctl add_vhost / set_permissions)"
        )
    elif isinstance(e, socket.gaierror):
        msg = f"cannot resolve the broker host {parsed.hostname!r}: check the host name in amqp_url"
    elif isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        msg = (
            f"TLS certificate of the broker at {where} could not be verified ({e}): "
            "set ca_file (SIF_MAGIC_CA_FILE) to the CA that signed it"
        )
    elif isinstance(e, ssl.SSLError):
        msg = (
            f"TLS handshake with {where} failed ({e}): is that port a TLS (amqps) listener? "
            "Use amqp:// for plain ports, amqps:// (usually port 5671) for TLS"
        )
    elif "refused" in text.lower() or isinstance(e, ConnectionRefusedError):
        msg = f"cannot reach RabbitMQ at {where} (connection refused): is the broker running, and is the port right?"
    elif "timed out" in text.lower() or isinstance(e, socket.timeout | TimeoutError):
        msg = f"RabbitMQ at {where} did not answer in time: check the host, port and firewall"
    else:
        msg = f"cannot connect to RabbitMQ at {where}: {e!r}"
    return BrokerError(mask_url(msg))
