"""Policy decisions: the indexed engine uncached, and through the decision cache.

    .venv/bin/python -m pytest bench/bench_policy.py --benchmark-group-by=group

Numbers, not pass/fail. The rule set is fixed: 50 rules over 10 files, each file one topic
family with the shapes real rule sets have (a service account, reader groups, a time window,
a client network, a delete ban with an exemption).
"""
import textwrap
from datetime import datetime, timezone

import pytest

from brokerguard.identity import Identity
from brokerguard.operations import CLUSTER, AccessRequest, Client, Resource
from brokerguard.policy import DecisionCache, PolicyEngine, parse_files

MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc).timestamp()


def fifty_rules():
    files = []
    for family in range(10):
        files.append((f"rules/family{family}.yaml", textwrap.dedent(f"""\
            resources:
              topics: ["family{family}.*"]
              groups: ["family{family}-*"]
              transactional_ids: ["family{family}-*"]
              cluster: {"true" if family == 0 else "false"}
            rules:
              - name: service
                allow: [produce, consume, describe, transaction]
                who: {{subjects: [svc-family{family}]}}
                reason: the family's service owns it
              - name: readers
                allow: [consume, describe]
                who: {{groups: [analysts, family{family}-team]}}
              - name: weekend-creates
                require_approval: [create]
                who: {{groups: [developers]}}
                when: {{days: [sat, sun], timezone: Europe/Berlin}}
              - name: ops-network
                allow: ["*"]
                who: {{groups: [admins]}}
                client: {{addresses: [10.0.0.0/8]}}
              - name: no-deletes
                deny: [delete, delete_records]
                except: {{groups: [admins]}}
                reason: nobody deletes
            """)))
    return files


ENGINE = PolicyEngine(parse_files(fifty_rules()))
CLIENT = Client("10.1.2.3", "bench-client", "apache-kafka-java 3.9.0")
ANALYST = Identity("alice", "OAUTHBEARER", frozenset({"analysts", "staff"}), {"tier": "gold"})
SERVICE = Identity("svc-family7", "SCRAM-SHA-512")
NOBODY = Identity("mallory", "OAUTHBEARER")
DEVELOPER = Identity("dev", "OAUTHBEARER", frozenset({"developers"}))

REQUESTS = {
    "allow: group reader": AccessRequest(ANALYST, "consume", Resource("topic", "family7.orders.eu"), CLIENT),
    "allow: service produce": AccessRequest(SERVICE, "produce", Resource("topic", "family7.orders.eu"), CLIENT),
    "deny: delete ban": AccessRequest(ANALYST, "delete", Resource("topic", "family7.orders.eu"), CLIENT),
    "deny: default": AccessRequest(NOBODY, "produce", Resource("topic", "family7.orders.eu"), CLIENT),
    "deny: ungoverned topic": AccessRequest(ANALYST, "consume", Resource("topic", "elsewhere.x"), CLIENT),
    "window: weekday create": AccessRequest(DEVELOPER, "create", Resource("topic", "family7.new"), CLIENT),
    "cluster: describe": AccessRequest(NOBODY, "describe", CLUSTER, CLIENT),
}
CASES = [pytest.param(request, id=name) for name, request in REQUESTS.items()]


@pytest.mark.benchmark(group="decide, uncached (50 rules, 10 files)")
@pytest.mark.parametrize("request_", CASES)
def test_decide_uncached(benchmark, request_):
    decision = benchmark(ENGINE.decide, request_, MONDAY_NOON)
    assert decision.reason


@pytest.mark.benchmark(group="decide, cached (DecisionCache hit)")
@pytest.mark.parametrize("request_", CASES[:2])
def test_decide_cached(benchmark, request_):
    cache = DecisionCache(ENGINE, 1000)
    # What a session builds once per identity: the identity key is computed when it logs in.
    key = (request_.identity.key, request_.client, request_.action, request_.resource)
    cache.decide(key, request_)
    decision = benchmark(cache.decide, key, request_)
    assert decision.allowed


@pytest.mark.benchmark(group="decide, cached: building the key per request")
def test_cache_key_with_identity_key(benchmark):
    request = REQUESTS["allow: group reader"]
    benchmark(lambda: (request.identity.key, request.client, request.action, request.resource))
