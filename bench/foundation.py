"""The foundation's pass-through gateway (no login, no rules), built from a git ref beside the
current one, so one run compares direct, pass-through and the gateway with identity and rules.

The ref is checked out into a scratch worktree and installed with `pip --target` into a
directory of its own; it runs on this virtualenv's dependencies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The last commit of the Kafka data-path foundation, before identity and rules.
DEFAULT_REF = "25fe639"
PASSWORD_ENV = "BROKERGUARD_FOUNDATION_UPSTREAM_PASSWORD"


def build(ref: str, work_dir: Path) -> Path:
    """Install `ref`'s brokerguard into work_dir/site; returns that directory."""
    source, site = work_dir / "source", work_dir / "site"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(source), ref],
                   check=True, capture_output=True)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(source)], check=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)],
                       check=False, capture_output=True)
    return site


class FoundationGateway:
    """`brokerguard run` of the foundation, one worker, logged in to the broker's SASL listener
    with SCRAM-SHA-512 like the current gateway's main route, so only login and rules differ."""

    def __init__(self, site: Path, broker, work_dir: Path, port: int) -> None:
        self.work_dir = work_dir
        self.port = port
        self.log_file = work_dir / "gateway.log"
        self.config_file = work_dir / "gateway.yaml"
        self.config_file.write_text(yaml.safe_dump({"workers": 1, "kafka": {
            "listen": {"host": "127.0.0.1", "port": port, "broker_ports": {"first": port + 1, "count": 4}},
            "upstream": {"bootstrap_servers": [broker.sasl_bootstrap], "security_protocol": "SASL_PLAINTEXT",
                         "sasl": {"mechanism": "SCRAM-SHA-512", "username": broker.username,
                                  "password_env": PASSWORD_ENV}}}}))
        self.env = {**os.environ, "PYTHONPATH": str(site), PASSWORD_ENV: broker.password}
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> FoundationGateway:
        self._log = open(self.log_file, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "brokerguard", "run", "--config", str(self.config_file)],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                        cwd=self.work_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while " ready" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the foundation gateway did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self._log.close()
