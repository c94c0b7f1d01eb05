"""TLS towards clients: a verified client certificate is an identity (mTLS), and SASL over TLS
adds PLAIN to the mechanisms offered."""

from __future__ import annotations

import datetime
import ssl
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from harness import TESTER, request_frame

pytestmark = pytest.mark.kafka
TIMEOUT = 30


def issue(path, name: str, subject: list[x509.NameAttribute], issuer=None, ca: bool = False,
          san: list[x509.GeneralName] | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cert, issuer_key = issuer or (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(subject))
               .issuer_name(issuer_cert.subject if issuer_cert else x509.Name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_file, key_file = path / f"{name}.pem", path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key, cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    path = tmp_path_factory.mktemp("pki")
    ca = issue(path, "ca", [x509.NameAttribute(NameOID.COMMON_NAME, "test clients CA")], ca=True)
    server = issue(path, "server", [x509.NameAttribute(NameOID.COMMON_NAME, "gateway")], issuer=ca[:2],
                   san=[x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))])
    client = issue(path, "client", [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "testers"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, "svc-mtls")], issuer=ca[:2])
    stranger_ca = issue(path, "stranger-ca", [x509.NameAttribute(NameOID.COMMON_NAME, "other CA")], ca=True)
    stranger = issue(path, "stranger", [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "testers"),
                                        x509.NameAttribute(NameOID.COMMON_NAME, "svc-mtls")], issuer=stranger_ca[:2])
    return {"ca": ca[2], "server": server[2:], "client": client[2:], "stranger": stranger[2:]}


@pytest.fixture(scope="module")
def gateway(kafka, pki, tmp_path_factory):
    from harness import Gateway

    cert, key = pki["server"]
    gateway = Gateway(kafka, tmp_path_factory.mktemp("tls-gateway"), listen_tls={
        "cert_file": str(cert), "key_file": str(key), "client_ca_file": str(pki["ca"]),
        "client_auth": "requested"}).start()
    yield gateway
    gateway.stop()


def tls(pki, who: str | None) -> dict:
    options = {"ssl_cafile": str(pki["ca"]), "ssl_check_hostname": False}
    if who:
        cert, key = pki[who]
        options.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
    return options


def round_trip(gateway, kafka, **options) -> list[bytes]:
    topic = f"tls-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=gateway.bootstrap, acks="all", **options)
    producer.send(topic, b"over tls").get(timeout=TIMEOUT)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=gateway.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, **options)
    consumer.assign([TopicPartition(topic, 0)])
    values = [m.value for m in consumer]
    consumer.close()
    return values


def test_a_client_certificate_is_an_identity(gateway, kafka, pki):
    assert round_trip(gateway, kafka, security_protocol="SSL", **tls(pki, "client")) == [b"over tls"]
    assert "as svc-mtls (mTLS): logged in" in gateway.log()


def test_sasl_over_tls_offers_plain(gateway, kafka, pki):
    values = round_trip(gateway, kafka, security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                        sasl_plain_username=TESTER.name, sasl_plain_password=TESTER.password,
                        **tls(pki, None))
    assert values == [b"over tls"]
    assert "as tester (PLAIN): logged in" in gateway.log()


def test_a_certificate_from_another_ca_is_refused(gateway, pki):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.check_hostname = False
    cert, key = pki["stranger"]
    context.load_cert_chain(str(cert), str(key))
    import socket

    host, port = gateway.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(request_frame(18, 3, {"client_software_name": "x", "client_software_version": "1"}))
                # TLS 1.3 reports the refused certificate on the first read, as an alert or a close
                assert sock.recv(1) == b"", "the gateway answered a client with a stranger's certificate"
        except (ssl.SSLError, ConnectionError):
            pass


def test_without_a_certificate_or_sasl_nothing_passes(gateway, pki):
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.check_hostname = False
    import socket

    host, port = gateway.bootstrap.split(":")
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host) as sock:
        sock.sendall(request_frame(3, 12, {"topics": None, "allow_auto_topic_creation": False}))
        try:
            assert sock.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            pass
