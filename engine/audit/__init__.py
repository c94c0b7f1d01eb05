"""The audit trail: sessions and one event per request, sealed into a hash chain and written to
every configured sink off the data path (bus.py), checked by `brokerguard audit verify`
(chain.py), read back by `brokerguard sessions` (sinks.AuditReader)."""

from brokerguard.audit.bus import AuditBus
from brokerguard.audit.chain import Chain, Verification, verify
from brokerguard.audit.sinks import AuditReader, Sealed, SessionFilter, Sink, SinkContext

__all__ = ["AuditBus", "AuditReader", "Chain", "Sealed", "SessionFilter", "Sink", "SinkContext", "Verification",
           "verify"]
