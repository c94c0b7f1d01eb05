"""Shared fixtures: one real Kafka broker for the whole run and a gateway in front of it.

A broker or gateway that fails to start fails the run with its log; nothing is skipped.
"""

from __future__ import annotations

import os

import pytest

from devstack.kafka import KafkaBroker
from harness import Gateway


def pytest_sessionstart(session: pytest.Session) -> None:
    import brokerguard._native as native

    if os.environ.get("BROKERGUARD_NO_EXTENSIONS") != "1":
        assert native.IMPLEMENTATION == "cython", "the Cython extensions did not load: run `make setup`"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory):
    with KafkaBroker(work_dir=tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def gateway(kafka, tmp_path_factory: pytest.TempPathFactory):
    """The gateway most tests share: SCRAM-SHA-512 to the broker's SASL listener, one worker."""
    gateway = Gateway(kafka, tmp_path_factory.mktemp("gateway")).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def own_gateway(kafka, tmp_path):
    """`own_gateway(**options)` builds a gateway of the test's own, to adjust and `.start()`;
    every one built is stopped afterwards."""
    made: list[Gateway] = []

    def make(**options) -> Gateway:
        gateway = Gateway(kafka, tmp_path / f"gateway-{len(made)}", **options)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.stop()


@pytest.fixture(scope="session")
def oidc():
    """A real OIDC issuer on loopback: discovery document, JWKS and a token endpoint."""
    from devstack.oidc import OidcIssuer

    with OidcIssuer(audience="brokerguard") as issuer:
        yield issuer
