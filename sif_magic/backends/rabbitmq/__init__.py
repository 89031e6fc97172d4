"""The RabbitMQ backend (see ``client``)."""

from __future__ import annotations

from .client import RabbitBackend

__all__ = ["RabbitBackend"]
