"""Rules: declarative, per topic family, tested like code (OPA-style).

`load(dir)` reads a rules directory into a `RuleSet` (or raises `RulesError` listing every
problem as file:line:col); `PolicyEngine(rules).decide(request)` answers one access request;
`DecisionCache` keeps cacheable decisions per caller-built key. docs/rules.md is the reference.
"""

from __future__ import annotations

import os

from brokerguard.policy.cache import DecisionCache
from brokerguard.policy.engine import Explanation, PolicyEngine
from brokerguard.policy.loader import load, parse_files
from brokerguard.policy.model import RuleSet
from brokerguard.policy.problems import Problem, RulesError

__all__ = ["DecisionCache", "Explanation", "PolicyEngine", "Problem", "RuleSet", "RulesError", "load",
           "load_rules", "parse_files"]


def load_rules(directory: str | os.PathLike[str], hash_key: bytes | None = None) -> PolicyEngine:
    """The engine for a rules directory; raises RulesError listing every problem in it."""
    return PolicyEngine(load(directory, hash_key))
