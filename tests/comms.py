"""A comm that records what the kernel would send to the front-end (no browser), and
which thread sent it."""

from __future__ import annotations

import threading
from typing import Any

from comm.base_comm import BaseComm


class RecordingComm(BaseComm):
    """A comm that keeps what the kernel would have sent to the front-end."""

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[tuple[str, Any, list[Any]]] = []
        self.threads: list[str] = []  # the name of the thread that sent each message
        super().__init__(**kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:  # noqa: E501
        self.sent.append((msg_type, data, list(buffers or [])))
        self.threads.append(threading.current_thread().name)

    def updates(self) -> list[tuple[Any, list[Any]]]:
        return [(d, b) for t, d, b in self.sent if t == "comm_msg" and d.get("method") == "update"]

    def customs(self) -> list[Any]:
        return [
            d["content"] for t, d, _ in self.sent if t == "comm_msg" and d.get("method") == "custom"
        ]  # noqa: E501

    def from_frontend(self, data: dict[str, Any]) -> None:
        """Deliver a comm_msg as the front-end would."""
        self.handle_msg({"content": {"comm_id": self.comm_id, "data": data}, "buffers": []})
