"""A client connection as the gateway sees it, whatever the protocol."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


def new_session_id() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class Session:
    peer: str  # "host:port" of the client
    listener: str  # "host:port" the client connected to
    id: str = field(default_factory=new_session_id)
    started: float = field(default_factory=time.time)
    client_id: str | None = None
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def __str__(self) -> str:
        return f"session {self.id} from {self.peer}"
