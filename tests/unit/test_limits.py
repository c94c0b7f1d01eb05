"""Rate limits: token buckets that answer with a throttle time, never a refusal."""

import pytest

from brokerguard.limits import MAX_THROTTLE_S, RateLimiter
from brokerguard.policy.model import Limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_within_the_rate_nothing_is_throttled(clock):
    limiter = RateLimiter(clock)
    limits = [("a.yaml:r", Limit(records_per_s=100))]
    for _ in range(10):
        assert limiter.charge("ci", "orders", limits, records=10) == 0.0
        clock.now += 0.1


def test_debt_becomes_the_time_to_pay_it_off(clock):
    limiter = RateLimiter(clock)
    limits = [("a.yaml:r", Limit(bytes_per_s=1000))]
    assert limiter.charge("ci", "orders", limits, size=1000) == 0.0  # one second's allowance
    assert limiter.charge("ci", "orders", limits, size=500) == pytest.approx(0.5)
    clock.now += 0.5  # paid off
    assert limiter.charge("ci", "orders", limits, size=100) == pytest.approx(0.1)


def test_the_largest_debt_of_every_rate_and_limit_wins(clock):
    limiter = RateLimiter(clock)
    limits = [("a.yaml:r", Limit(requests_per_s=10, records_per_s=1000)),
              ("b.yaml:s", Limit(records_per_s=100))]
    assert limiter.charge("ci", "orders", limits, requests=1, records=300) == pytest.approx(2.0)


def test_per_resource_and_per_identity_allowances(clock):
    limiter = RateLimiter(clock)
    per_topic = [("a.yaml:r", Limit(records_per_s=10))]
    shared = [("a.yaml:s", Limit(records_per_s=10, per="identity"))]
    assert limiter.charge("ci", "one", per_topic, records=10) == 0.0
    assert limiter.charge("ci", "two", per_topic, records=10) == 0.0  # its own allowance
    assert limiter.charge("other", "one", per_topic, records=10) == 0.0  # another identity's
    assert limiter.charge("ci", "one", shared, records=10) == 0.0
    assert limiter.charge("ci", "two", shared, records=10) == pytest.approx(1.0)  # shared


def test_throttle_is_capped_and_idle_buckets_are_forgotten(clock):
    limiter = RateLimiter(clock)
    limits = [("a.yaml:r", Limit(bytes_per_s=1))]
    assert limiter.charge("ci", "orders", limits, size=10_000) == MAX_THROTTLE_S
    assert len(limiter) == 1
    clock.now += 3600
    limiter.charge("other", "orders", limits, size=1)
    assert len(limiter) == 1


def test_a_changed_rate_starts_a_new_allowance(clock):
    limiter = RateLimiter(clock)
    assert limiter.charge("ci", "t", [("a:r", Limit(records_per_s=10))], records=20) == pytest.approx(1.0)
    assert limiter.charge("ci", "t", [("a:r", Limit(records_per_s=100))], records=20) == 0.0
