"""A real HTTP server on loopback that records what webhooks POST to it: the SIEM of the tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; it can answer 503 or be shut down
    and brought back on the same port."""

    def __init__(self) -> None:
        self.attempts: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, headers, body)
        self.refuse = 0  # answer this many POSTs with 503
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    status = 503 if receiver.refuse > 0 else 200
                    receiver.refuse = max(0, receiver.refuse - 1)
                    receiver.attempts.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        """Shut down and close the socket: connections to the port are refused until start()."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def url(self, path: str = "/audit") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return [(headers, body) for status, headers, body in self.attempts if status == 200]

    def events(self, splunk: bool = False) -> list[dict]:
        """Every event received with a 2xx answer, in arrival order, duplicates included."""
        out = []
        for _, body in self.accepted:
            if splunk:
                out.extend(json.loads(line)["event"] for line in body.split(b"\n"))
            else:
                out.extend(json.loads(body))
        return out
