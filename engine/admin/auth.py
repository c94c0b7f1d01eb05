"""Bearer-token authentication for every path of the admin API but the health probe."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from brokerguard.admin.responses import error
from brokerguard.secret import Secret

__all__ = ["OPEN_PATHS", "BearerAuth"]

OPEN_PATHS = frozenset({"/api/health"})  # what a load balancer's probe may ask without a token
POLICY_VIOLATION = 1008  # the WebSocket close code for a refused client


class BearerAuth:
    """Requires `Authorization: Bearer <token>`, compared in constant time. Without a token
    (the config allows that on loopback only) everything passes."""

    def __init__(self, app: ASGIApp, token: Secret | None) -> None:
        self.app = app
        self._token = token.reveal().encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self._token is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = _bearer(scope)
        if given is not None and hmac.compare_digest(given, self._token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        if given is None:
            response = error(401, "this API needs `Authorization: Bearer <token>`", {"WWW-Authenticate": "Bearer"})
        else:
            response = error(401, "the bearer token is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        await response(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            return credentials.strip() if scheme.lower() == b"bearer" else None
    return None
