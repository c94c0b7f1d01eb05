"""`make run`: a local Kafka broker and the gateway in front of it, on the embedded defaults.

The gateway logs in to the broker's SASL listener as the `gateway` service account; clients
connect to the gateway without credentials. Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devstack.kafka import DEVSTACK_DIR, KafkaBroker  # noqa: E402

GATEWAY_HOST = "127.0.0.1"
GATEWAY_PORT = 19092
BROKER_PORTS_FIRST = 19093


def gateway_config(broker: KafkaBroker, password_file: Path) -> dict:
    return {
        "workers": 1,
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


def main() -> int:
    work = DEVSTACK_DIR / "run"
    work.mkdir(parents=True, exist_ok=True)
    print("starting Kafka (KRaft, single node)...", flush=True)
    with KafkaBroker(work_dir=work / "kafka") as broker:
        password_file = work / "gateway.password"
        password_file.touch(mode=0o600)
        password_file.write_text(broker.password)
        config_file = work / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(gateway_config(broker, password_file)))
        bootstrap = f"{GATEWAY_HOST}:{GATEWAY_PORT}"
        print(f"""
Kafka is up at {broker.bootstrap} (PLAINTEXT); the gateway logs in to {broker.sasl_bootstrap}.
Gateway bootstrap: {bootstrap}    config: {config_file}

Try it:
  echo hello | kcat -P -b {bootstrap} -t demo
  kcat -C -b {bootstrap} -t demo -e
  kcat -L -b {bootstrap}        # every broker address is a gateway address

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
