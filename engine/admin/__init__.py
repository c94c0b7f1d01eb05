"""The admin server: an HTTP API (Starlette on uvicorn) for sessions, replay and verification of
the audit trail, run by `brokerguard run` as a process of its own or alone by `brokerguard admin`.
docs/admin-api.md describes it."""

from brokerguard.admin.app import create_app
from brokerguard.admin.server import bind, serve

__all__ = ["bind", "create_app", "serve"]
