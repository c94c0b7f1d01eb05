"""Which responses the gateway decodes when authorization leaves them alone."""

from brokerguard.plugins.kafka import apis
from brokerguard.plugins.kafka.protocol import codec
from brokerguard.plugins.kafka.rewrite import VERSION_CAPS, _decoded_responses

DESCRIBE_ACLS = codec.API_BY_NAME["DescribeAcls"].key


def test_decoded_where_they_carry_broker_addresses_or_topic_ids():
    decoded = _decoded_responses()
    assert {(apis.METADATA, 0), (apis.METADATA, 12), (apis.FIND_COORDINATOR, 4), (apis.DESCRIBE_CLUSTER, 1)} <= decoded
    # Leader endpoints (KIP-951) from Produce v10 and Fetch v16 on: versions the gateway does not offer.
    assert (apis.PRODUCE, 10) in decoded and (apis.FETCH, 16) in decoded


def test_the_bulk_of_the_traffic_passes_undecoded():
    decoded = _decoded_responses()
    assert not any((apis.PRODUCE, v) in decoded for v in range(3, VERSION_CAPS[apis.PRODUCE] + 1))
    assert not any((apis.FETCH, v) in decoded for v in range(4, VERSION_CAPS[apis.FETCH] + 1))
    assert not any(key == DESCRIBE_ACLS for key, _ in decoded)  # an ACL's host is a client's, with no port
