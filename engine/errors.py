"""The one error tree. Each error says whether retrying can help and names the peer it concerns."""

from __future__ import annotations


class BrokerGuardError(Exception):
    """Base of every error the gateway raises on purpose."""

    retriable = False


class ConfigError(BrokerGuardError):
    """The configuration cannot be used; the message names the key and why."""


class PluginError(BrokerGuardError):
    """A plugin is missing or failed to load."""


class UpstreamError(BrokerGuardError):
    """The broker could not be reached or refused the gateway."""

    retriable = True

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"upstream {peer}: {message}")
        self.peer = peer


class UpstreamAuthenticationError(UpstreamError):
    """The broker refused the gateway's own credentials: fix the config, retrying will not help."""

    retriable = False


class ProtocolError(BrokerGuardError):
    """A peer broke the wire protocol; the connection it came on is closed."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer
