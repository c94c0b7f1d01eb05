import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from brokerguard.config import CertificateIdentity
from brokerguard.identity import AuthenticationFailed
from brokerguard.identity.certificate import distinguished_name, identity_from_certificate

NOT_AFTER = datetime.datetime(2031, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def _name(*attributes):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _certificate(subject, issuer, public_key, signing_key, *, ca=False, san=None, not_after=NOT_AFTER):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem(certificate=None, key=None) -> bytes:
    if certificate is not None:
        return certificate.public_bytes(serialization.Encoding.PEM)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate and a function that makes client certificates, all as files."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name((NameOID.COMMON_NAME, "brokerguard test CA"))
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    (directory / "ca.pem").write_bytes(_pem(ca))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(_name((NameOID.COMMON_NAME, "gateway")), ca_name, server_key.public_key(), ca_key,
                          san=[x509.DNSName("gateway.test")])
    (directory / "server.pem").write_bytes(_pem(server) + _pem(key=server_key))

    def client(subject, san=None, name="client"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(subject, ca_name, key.public_key(), ca_key, san=san)
        path = directory / f"{name}.pem"
        path.write_bytes(_pem(certificate) + _pem(key=key))
        return path

    return directory, client


def peercert(pki, client_file) -> dict:
    """The dict the gateway's TLS listener sees: a real handshake in memory, then getpeercert()."""
    directory, _ = pki
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "server.pem")
    server_context.load_verify_locations(directory / "ca.pem")
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(directory / "ca.pem")
    client_context.load_cert_chain(client_file)

    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname="gateway.test")
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        for endpoint in (client, server):
            try:
                endpoint.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        try:
            server.do_handshake()
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue
    # TLS 1.3 sends the client certificate with the client's last flight: let the server read it.
    server_in.write(to_server.read())
    try:
        server.read(1)
    except ssl.SSLWantReadError:
        pass
    return server.getpeercert()


ALICE = _name((NameOID.COUNTRY_NAME, "DE"), (NameOID.ORGANIZATION_NAME, "Example, Inc."),
              (NameOID.ORGANIZATIONAL_UNIT_NAME, "payments"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "writers"),
              (NameOID.COMMON_NAME, "svc-payments"))
SANS = [x509.DNSName("payments.internal"), x509.UniformResourceIdentifier("spiffe://example.org/payments"),
        x509.RFC822Name("payments@example.org"), x509.DNSName("second.internal")]


@pytest.fixture(scope="module")
def alice(pki):
    _, client = pki
    return peercert(pki, client(ALICE, SANS, "alice"))


def test_the_dict_shape_is_what_ssl_returns(alice):
    assert (("commonName", "svc-payments"),) in alice["subject"]
    assert ("URI", "spiffe://example.org/payments") in alice["subjectAltName"]


def test_subject_from_common_name_and_groups_from_ou(alice):
    identity = identity_from_certificate(alice, CertificateIdentity())
    assert identity.subject == "svc-payments"
    assert identity.mechanism == "mTLS"
    assert identity.groups == frozenset({"payments", "writers"})
    assert identity.expires_at == NOT_AFTER.timestamp()


@pytest.mark.parametrize("source, subject", [
    ("dn", "CN=svc-payments,OU=writers,OU=payments,O=Example\\, Inc.,C=DE"),
    ("san_dns", "payments.internal"),
    ("san_uri", "spiffe://example.org/payments"),
    ("san_email", "payments@example.org"),
])
def test_other_subject_sources(alice, source, subject):
    identity = identity_from_certificate(alice, CertificateIdentity(subject_from=source, groups_from="none"))
    assert identity.subject == subject
    assert identity.groups == frozenset()


def test_missing_subject_source_is_an_error(pki):
    _, client = pki
    bare = peercert(pki, client(_name((NameOID.COMMON_NAME, "no-sans")), name="bare"))
    with pytest.raises(AuthenticationFailed, match="no subjectAltName of type URI"):
        identity_from_certificate(bare, CertificateIdentity(subject_from="san_uri"))
    no_cn = peercert(pki, client(_name((NameOID.ORGANIZATION_NAME, "x")), SANS, name="no-cn"))
    with pytest.raises(AuthenticationFailed, match="no common name"):
        identity_from_certificate(no_cn, CertificateIdentity())


def test_no_certificate():
    for nothing in (None, {}):
        with pytest.raises(AuthenticationFailed, match="no verified client certificate"):
            identity_from_certificate(nothing, CertificateIdentity())


def test_distinguished_name_escapes_rfc_4514_specials():
    cert = {"subject": ((("countryName", "US"),), (("organizationName", "a+b;c<d>\"e\\"),),
                        (("commonName", " #lead"), ("userId", "trail ")))}
    assert distinguished_name(cert) == 'CN=\\ #lead+UID=trail\\ ,O=a\\+b\\;c\\<d\\>\\"e\\\\,C=US'


def test_malformed_dicts_are_refused():
    with pytest.raises(AuthenticationFailed):
        identity_from_certificate({"subject": "nonsense"}, CertificateIdentity())
    with pytest.raises(AuthenticationFailed, match="notAfter"):
        identity_from_certificate({"subject": ((("commonName", "x"),),), "notAfter": "tomorrow"},
                                  CertificateIdentity())
