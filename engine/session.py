"""A client connection as the gateway sees it, whatever the protocol."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from brokerguard.identity import Identity
from brokerguard.operations import Client


def new_session_id() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True, eq=False)
class Session:
    peer: str  # "host:port" of the client
    listener: str  # "host:port" the client connected to
    id: str = field(default_factory=new_session_id)
    started: float = field(default_factory=time.time)
    client_id: str | None = None
    software: str | None = None
    identity: Identity | None = None  # None until the client has authenticated
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # Set by the adapter: ends the connection, with the reason in the log.
    close: Callable[[str], None] | None = None
    # What decisions are cached under: who, and from where (rules may match the client).
    decision_key: tuple = ()

    @property
    def address(self) -> str:
        return self.peer.rpartition(":")[0].strip("[]")

    @property
    def client(self) -> Client:
        return Client(self.address, self.client_id, self.software)

    def authenticated(self, identity: Identity) -> None:
        self.identity = identity
        self.decision_key = (identity.key, self.client)

    def client_id_is(self, client_id: str | None) -> None:
        """Rules may match the client id, so a new one gives the session a new decision key."""
        if client_id != self.client_id:
            self.client_id = client_id
            if self.identity is not None:
                self.decision_key = (self.identity.key, self.client)

    def __str__(self) -> str:
        who = f" as {self.identity}" if self.identity is not None else ""
        return f"session {self.id} from {self.peer}{who}"
