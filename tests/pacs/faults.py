"""A small loopback HTTP proxy in front of Orthanc that injects faults: the PACS down (connection
refused), slow (answers after a delay), a 5xx or 4xx answer, a study deleted (through Orthanc's REST API)
just before a retrieval, a response dropped in the middle of its body. It also checks a bearer token, so
that the client's bearer auth is tested against something that refuses a wrong one; towards Orthanc it
uses Orthanc's basic auth. With ``tls_pem`` it serves HTTPS (a self-signed certificate: TLS verification).

Rules are matched in order on (method, path); each has a number of times it fires (``times``, None =
always). Requests that no rule takes are forwarded as they are.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.pacs.orthanc import PASSWORD, USER, Orthanc

TOKEN = "test-bearer-token-0123456789"


@dataclass
class Rule:
    """``action``: "status" (answer ``status``), "slow" (wait ``delay`` s, then forward), "drop" (forward
    half the body, then close), "call" (run ``call()``, then forward)."""

    path: str  # a regex searched in the request path
    action: str
    method: str = "GET"
    status: int = 503
    delay: float = 0.0
    times: int | None = 1
    call: Callable[[], None] | None = None
    fired: int = 0

    def takes(self, method: str, path: str) -> bool:
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.times is None or self.fired < self.times)
        )


@dataclass
class FaultProxy:
    orthanc: Orthanc
    rules: list[Rule] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    tls_pem: str | None = None  # serve HTTPS with this certificate + key (one PEM file)

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls_pem else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.requests.clear()

    def rule_for(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.requests.append((method, path))
            for rule in self.rules:
                if rule.takes(method, path):
                    rule.fired += 1
                    return rule
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, b"bearer token required")
                    return
                rule = proxy.rule_for(self.command, self.path)
                if rule is not None and rule.action == "status":
                    self._answer(rule.status, f"injected {rule.status}".encode())
                    return
                if rule is not None and rule.action == "slow":
                    time.sleep(rule.delay)
                if rule is not None and rule.action == "call" and rule.call is not None:
                    rule.call()
                status, headers, data = self._forward(body)
                if rule is not None and rule.action == "drop":
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", proxy.orthanc.port, timeout=120)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("authorization", "host", "content-length", "connection")
                }
                import base64

                headers["Authorization"] = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                kept = [
                    (k, v)
                    for k, v in answer.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                conn.close()
                return answer.status, kept, data

            def _answer(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls_pem:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls_pem)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fault-proxy").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
