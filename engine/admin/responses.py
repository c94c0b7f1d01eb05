"""JSON answers, errors included: `{"error": "what is wrong"}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["error", "json_response"]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)
