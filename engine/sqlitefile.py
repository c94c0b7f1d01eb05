"""SQLite files the gateway's processes share: the state store, the audit store, webhook outboxes."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["wal_mode"]


def wal_mode(db: sqlite3.Connection, timeout_s: float) -> str:
    """Switch to WAL and return the journal mode now in force. The switch needs the file to
    itself and SQLite does not wait for it with the busy timeout, so processes opening a new
    file at once retry here, for up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
