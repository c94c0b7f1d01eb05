"""Plugin registry: built-ins and third-party plugins are found the same way, by entry point."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from brokerguard.errors import PluginError

GROUPS = ("adapters", "sinks", "approvals", "identity", "detectors")


def load(group: str, name: str) -> Any:
    """Return the object registered as NAME in entry point group brokerguard.GROUP."""
    found = entry_points(group=f"brokerguard.{group}")
    for entry in found:
        if entry.name == name:
            try:
                return entry.load()
            except Exception as err:
                raise PluginError(f"{group} plugin {name!r} ({entry.value}) failed to load: {err}") from err
    installed = ", ".join(sorted(e.name for e in found)) or "none"
    raise PluginError(f"no {group} plugin named {name!r} is installed (installed: {installed})")
