"""The one object adapters talk to, and the one straight line every request takes once its
adapter has named it: identity -> (action, resource) -> decision -> forward or refuse.

It owns what a worker shares between its connections: the identity service, the compiled rules
and their decision cache, the live sessions by subject, and the state store watcher through
which revocations and reload requests reach every worker.
"""

from __future__ import annotations

import asyncio
import logging

from brokerguard.audit import AuditBus
from brokerguard.audit.bus import from_config as audit_bus
from brokerguard.config import Config
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.identity.service import IdentityService
from brokerguard.limits import RateLimiter
from brokerguard.operations import AccessRequest, Decision, Resource
from brokerguard.policy import PolicyEngine, load_rules
from brokerguard.policy.cache import DecisionCache
from brokerguard.errors import BrokerGuardError, ConfigError
from brokerguard.session import Session
from brokerguard.state import Change, SqliteStateStore, StateWatcher

log = logging.getLogger("brokerguard")

MAINTENANCE_INTERVAL_S = 0.5


class Pipeline:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = SqliteStateStore(config.state.sqlite_path)
        self.watcher = StateWatcher(self.state, config.state.poll_interval_ms / 1000, self._on_change)
        self.identities = IdentityService(config.identity, self.watcher.is_revoked)
        hash_key = config.content.hash_key()
        self._hash_key = hash_key.reveal().encode() if hash_key is not None else None
        self.policy: PolicyEngine = self._load_rules()
        self.decisions = DecisionCache(self.policy, config.rules.cache_size)
        self.limiter = RateLimiter()
        self._sessions: dict[str, set[Session]] = {}
        self._maintenance: asyncio.Task | None = None
        # Where every session and request is recorded; None when auditing is switched off.
        self.audit: AuditBus | None = audit_bus(config.audit) if config.audit.enabled else None

    async def start(self) -> None:
        if self.audit is not None:
            await self.audit.start()
        await self.watcher.start()
        await self.identities.start()
        self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def stop(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
        await self.identities.close()
        await self.watcher.stop()
        if self.audit is not None:
            await self.audit.stop()

    async def _maintain(self) -> None:
        """Pick up an edited credentials file (a rotated password) and forget old failures."""
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            try:
                self.identities.maintain()
            except Exception:
                log.exception("identity maintenance failed; the credentials in force are kept")

    # -- sessions ------------------------------------------------------------------------------

    def check_connections(self, identity: Identity) -> None:
        """Refuse a new session beyond `limits.connections_per_identity` (this worker's count)."""
        limit = self.config.limits.connections_per_identity
        live = len(self._sessions.get(identity.subject, ()))
        if limit and live >= limit:
            raise AuthenticationFailed(f"{identity.subject} already holds {live} connections, the limit",
                                       public="Too many connections for this identity")

    def authenticated(self, session: Session, identity: Identity) -> None:
        """Record that `session` now acts as `identity` (first login or re-authentication)."""
        if session.identity is not None:
            self._forget(session)
        session.authenticated(identity)
        self._sessions.setdefault(identity.subject, set()).add(session)

    def ended(self, session: Session) -> None:
        if session.identity is not None:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        assert session.identity is not None
        live = self._sessions.get(session.identity.subject)
        if live is not None:
            live.discard(session)
            if not live:
                del self._sessions[session.identity.subject]

    # -- decisions -----------------------------------------------------------------------------

    def decide(self, session: Session, action: str, resource: Resource) -> Decision:
        key = (session.decision_key, action, resource)
        decision = self.decisions.get(key)
        if decision is None:
            assert session.identity is not None, "decide() before authentication"
            decision = self.decisions.decide(key, AccessRequest(session.identity, action, resource, session.client))
        return decision

    # -- what reaches every worker through the state store -------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.kind == "revoke":
            self.decisions.clear()
            for session in list(self._sessions.get(change.key, ())):
                if session.close is not None:
                    session.close(f"identity {change.key} revoked")
        elif change.kind == "reload" and change.key == "rules":
            self.reload_rules()

    def reload_rules(self) -> bool:
        """Swap in the rules directory's current contents; a broken set is refused, the old kept."""
        try:
            policy = self._load_rules()
        except BrokerGuardError as err:
            log.error("rules reload refused, keeping the rules in force: %s", err)
            return False
        self.policy = policy
        self.decisions.reload(policy)
        log.info("rules reloaded from %s", self.config.rules.dir)
        return True

    def _load_rules(self) -> PolicyEngine:
        policy = load_rules(self.config.rules.dir, self._hash_key)
        if self._hash_key is None and any(spec.compiled.uses_hash for spec in policy.rules.masks):
            raise ConfigError("a mask uses the `hash` strategy but no key is configured: set "
                              "`content.hash_key_env` or `content.hash_key_file`")
        return policy
