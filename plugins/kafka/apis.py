"""Kafka API keys the adapter treats specially.

What each request names — its actions and resources — is the table in resources.py, used through
authorize.plan(); docs/kafka-actions.md is the same table for people.
"""

from __future__ import annotations

PRODUCE = 0
FETCH = 1
METADATA = 3
FIND_COORDINATOR = 10
SASL_HANDSHAKE = 17
API_VERSIONS = 18
SASL_AUTHENTICATE = 36
DESCRIBE_CLUSTER = 60
SHARE_FETCH = 78
