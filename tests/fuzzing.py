"""Hypothesis settings the differential tests of the native twins share: the failing example's
blob is printed so it can be replayed (@reproduce_failure), and slow or large examples are fine."""

from hypothesis import HealthCheck, settings


def random_inputs(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
