"""The one straight line every request takes once its adapter has named the operation:
identity -> operation -> decision -> content -> forward.

Identity, rules and content obligations plug in here; until a policy is configured every
operation is forwarded unchanged, which is the pass-through the adapter is tested against.
"""

from __future__ import annotations

from brokerguard.operations import Decision, Operation, Verdict
from brokerguard.session import Session

PASS_THROUGH = Decision(Verdict.ALLOW, rule="", reason="no policy configured")


class Pipeline:
    def decide(self, session: Session, operation: Operation) -> Decision:
        return PASS_THROUGH
