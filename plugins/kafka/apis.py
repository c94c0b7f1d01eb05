"""Kafka API keys the adapter treats specially, and the operation each request names."""

from __future__ import annotations

import functools

from brokerguard.operations import Operation

from .protocol import codec

PRODUCE = 0
FETCH = 1
METADATA = 3
FIND_COORDINATOR = 10
SASL_HANDSHAKE = 17
API_VERSIONS = 18
SASL_AUTHENTICATE = 36
DESCRIBE_CLUSTER = 60

# The action each API performs, by the protocol's own API name. Resources are named per request
# once rules need them; an API missing here is the action "unknown", which default deny refuses.
ACTIONS = {
    "Produce": "produce",
    "Fetch": "consume",
    "ShareFetch": "consume",
    "ShareAcknowledge": "consume",
    "ListOffsets": "describe",
    "Metadata": "describe",
    "OffsetForLeaderEpoch": "describe",
    "DescribeTopicPartitions": "describe",
    "DescribeCluster": "describe",
    "DescribeConfigs": "describe_configs",
    "DescribeLogDirs": "describe",
    "DescribeProducers": "describe",
    "ApiVersions": "connect",
    "SaslHandshake": "connect",
    "SaslAuthenticate": "connect",
    "FindCoordinator": "describe",
    "OffsetCommit": "group",
    "OffsetFetch": "group",
    "OffsetDelete": "group",
    "JoinGroup": "group",
    "SyncGroup": "group",
    "Heartbeat": "group",
    "LeaveGroup": "group",
    "ConsumerGroupHeartbeat": "group",
    "ShareGroupHeartbeat": "group",
    "StreamsGroupHeartbeat": "group",
    "DescribeGroups": "describe",
    "ConsumerGroupDescribe": "describe",
    "ShareGroupDescribe": "describe",
    "StreamsGroupDescribe": "describe",
    "ListGroups": "describe",
    "DeleteGroups": "delete",
    "InitProducerId": "idempotent_write",
    "AddPartitionsToTxn": "transaction",
    "AddOffsetsToTxn": "transaction",
    "EndTxn": "transaction",
    "TxnOffsetCommit": "transaction",
    "DescribeTransactions": "describe",
    "ListTransactions": "describe",
    "CreateTopics": "create",
    "CreatePartitions": "alter",
    "DeleteTopics": "delete",
    "DeleteRecords": "delete",
    "AlterConfigs": "alter_configs",
    "IncrementalAlterConfigs": "alter_configs",
    "AlterPartitionReassignments": "alter",
    "ListPartitionReassignments": "describe",
    "ElectLeaders": "alter",
    "AlterReplicaLogDirs": "alter",
    "DescribeAcls": "admin",
    "CreateAcls": "admin",
    "DeleteAcls": "admin",
    "DescribeClientQuotas": "admin",
    "AlterClientQuotas": "admin",
    "DescribeUserScramCredentials": "admin",
    "AlterUserScramCredentials": "admin",
    "CreateDelegationToken": "admin",
    "RenewDelegationToken": "admin",
    "ExpireDelegationToken": "admin",
    "DescribeDelegationToken": "admin",
    "UpdateFeatures": "admin",
    "DescribeQuorum": "admin",
    "GetTelemetrySubscriptions": "connect",
    "PushTelemetry": "connect",
}


@functools.cache
def operation(api_key: int) -> Operation:
    spec = codec.API_KEYS.get(api_key)
    name = spec.name if spec else f"api-{api_key}"
    return Operation(api=name, action=ACTIONS.get(name, "unknown"))
