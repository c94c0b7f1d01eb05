"""`make run`: a local Kafka broker and the gateway in front of it, on the embedded defaults.

The gateway logs in to the broker's SASL listener as the `gateway` service account. Clients log
in to the gateway: the run creates a credentials file with a `demo` service account (a new
password every run, printed below) and the gateway decides every request by the shipped rules in
rules/, where the demo account's group, developers, may use the sandbox.* topics. Ctrl-C stops
both cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from brokerguard.identity.credentials import CredentialsFile  # noqa: E402
from devstack.kafka import DEVSTACK_DIR, KafkaBroker  # noqa: E402

GATEWAY_HOST = "127.0.0.1"
GATEWAY_PORT = 19092
BROKER_PORTS_FIRST = 19093
SHIPPED_RULES = ROOT / "rules"
DEMO_USER = "demo"
DEMO_GROUPS = ("developers",)  # rules/sandbox.yaml lets developers use sandbox.* topics
DEMO_MECHANISM = "SCRAM-SHA-512"
# Created up front: the shipped rules want a platform admin's approval for new sandbox topics at
# weekends, which would hold the demo's first produce.
DEMO_TOPIC = "sandbox.demo"


def demo_account(credentials_file: Path) -> str:
    """Make sure the credentials file has the demo account, with a new password; the password."""
    password = secrets.token_urlsafe(18)  # letters, digits, - and _: safe on a command line
    credentials = CredentialsFile(credentials_file, create=True)
    if DEMO_USER in credentials.users():
        credentials.rotate(DEMO_USER, password)
        credentials.set_groups(DEMO_USER, DEMO_GROUPS)
    else:
        credentials.add(DEMO_USER, password, DEMO_GROUPS)
    return password


def create_demo_topic(broker: KafkaBroker) -> None:
    """The demo topic, made directly on the broker's plain listener (nothing to do if it exists)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        admin.create_topics([NewTopic(DEMO_TOPIC, 1, 1)])[DEMO_TOPIC].result(30)
    except KafkaException as err:
        if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def client_settings(bootstrap: str, password: str) -> dict[str, str]:
    """librdkafka settings (kcat -X / -F) for logging in to the gateway as the demo account."""
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": DEMO_MECHANISM, "sasl.username": DEMO_USER, "sasl.password": password}


def kept_key(path: Path) -> Path:
    """A secret made once and kept: the masks' pseudonym key (rules/payments.yaml hashes emails,
    the same to the same pseudonym in every run) and the audit trail's chain key."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path


def gateway_config(broker: KafkaBroker, password_file: Path, work: Path) -> dict:
    return {
        "workers": 1,
        "identity": {"credentials_file": str(work / "credentials.json")},
        "rules": {"dir": str(SHIPPED_RULES)},
        "content": {"hash_key_file": str(kept_key(work / "mask.key"))},
        "state": {"sqlite_path": str(work / "state.db")},
        "audit": {"dir": str(work), "chain_key_file": str(kept_key(work / "audit-chain.key"))},
        "kafka": {
            "listen": {"host": GATEWAY_HOST, "port": GATEWAY_PORT,
                       "broker_ports": {"first": BROKER_PORTS_FIRST, "count": 8}},
            "upstream": {
                "bootstrap_servers": [broker.sasl_bootstrap],
                "security_protocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": broker.username,
                         "password_file": str(password_file)},
            },
        },
    }


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the gateway and Kafka the way Ctrl-C does


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    work = DEVSTACK_DIR / "run"
    work.mkdir(parents=True, exist_ok=True)
    print("starting Kafka (KRaft, single node)...", flush=True)
    with KafkaBroker(work_dir=work / "kafka") as broker:
        password_file = work / "gateway.password"
        password_file.touch(mode=0o600)
        password_file.write_text(broker.password)
        config = gateway_config(broker, password_file, work)
        config_file = work / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(config))
        password = demo_account(Path(config["identity"]["credentials_file"]))
        create_demo_topic(broker)
        bootstrap = f"{GATEWAY_HOST}:{GATEWAY_PORT}"
        settings = client_settings(bootstrap, password)
        kcat_config = work / "kcat.conf"  # the same settings for `kcat -F`
        kcat_config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        login = " ".join(f"-X {key}={value}" for key, value in settings.items() if key != "bootstrap.servers")
        print(f"""
Kafka is up at {broker.bootstrap} (PLAINTEXT); the gateway logs in to {broker.sasl_bootstrap}.
Gateway bootstrap: {bootstrap}    config: {config_file}
Clients log in as {DEMO_USER!r} (groups: {', '.join(DEMO_GROUPS)}) with SASL {DEMO_MECHANISM}, password
{password} (new every run); rules: {SHIPPED_RULES}.

Try it:
  KCAT="kcat -b {bootstrap} {login}"
  echo hello | $KCAT -P -t {DEMO_TOPIC}
  $KCAT -C -t {DEMO_TOPIC} -e
  $KCAT -L        # every broker address is a gateway address
or with the same settings from a file: kcat -F {kcat_config} -L
More accounts: brokerguard users add NAME --groups G1,G2 --config {config_file}
The audit trail ({work / "audit.db"}):
  brokerguard sessions list --config {config_file}
  brokerguard audit verify --config {config_file}

Ctrl-C stops the gateway and Kafka.
""", flush=True)
        gateway = subprocess.Popen(
            [str(Path(sys.executable).with_name("brokerguard")), "run", "--config", str(config_file)])
        try:
            return gateway.wait()
        except KeyboardInterrupt:
            gateway.send_signal(signal.SIGTERM)
            return gateway.wait()


if __name__ == "__main__":
    os.umask(0o077)
    raise SystemExit(main())
