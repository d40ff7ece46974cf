"""The webhook contract, run against `HttpWebhooks` and a real HTTP server on loopback.

The payload arrives as a JSON POST with a Flotilla User-Agent; 2xx passes; any other
status, a redirect (not followed), silence past the time-out and a refused connection
hold, each with its reason; nothing the endpoint does raises. (There is no in-memory
webhook port to hold to this suite: the scheduler's unit tests script their answers.)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flotilla.adapters.http_webhooks import HttpWebhooks
from flotilla.engine.ports import Webhooks

PAYLOAD = {"schema": 1, "kind": "confirm_step", "service": "api", "step": {"index": 1, "of": 3}}
TIMEOUT = timedelta(seconds=5)
BIG_BODY = 64 * 1024 * 1024  # more than loopback's socket buffers can hold


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    base: str
    seen: list[Seen] = field(default_factory=list)
    big_written: list[int] = field(default_factory=list)  # bytes of /big sent, once done

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


class _Handler(BaseHTTPRequestHandler):
    endpoint: Endpoint

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.endpoint.seen.append(Seen("POST", self.path, dict(self.headers.items()), body))
        if self.path == "/slow":
            time.sleep(2.0)
        status = {"/ok": 200, "/no-content": 204, "/fail": 500, "/teapot": 418}.get(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_BODY))
            self.end_headers()
            written = 0
            try:
                for _ in range(BIG_BODY // 65536):
                    self.wfile.write(b"x" * 65536)
                    written += 65536
            except OSError:
                pass  # the caller closed after its cap
            self.endpoint.big_written.append(written)
            return
        self.send_response(status or 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self.endpoint.seen.append(Seen("GET", self.path, dict(self.headers.items()), b""))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    found = Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    _Handler.endpoint = found
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
def webhooks() -> Webhooks:
    return HttpWebhooks(user_agent="flotilla/0.0-test (rollout gate)")


def test_a_2xx_passes_and_the_payload_arrives_as_a_json_post(
    webhooks: Webhooks, endpoint: Endpoint
) -> None:
    answer = webhooks.call(endpoint.base + "/ok", PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status, answer.reason) == (True, 200, "answered 200")
    assert answer.url == endpoint.base + "/ok"
    [seen] = endpoint.seen
    assert seen.method == "POST"
    assert json.loads(seen.body) == PAYLOAD
    assert seen.headers["Content-Type"] == "application/json"
    assert "flotilla" in seen.headers["User-Agent"].lower()
    other = webhooks.call(endpoint.base + "/no-content", PAYLOAD, timeout=TIMEOUT)
    assert (other.passed, other.status, other.reason) == (True, 204, "answered 204")


@pytest.mark.parametrize(("path", "status"), [("/fail", 500), ("/teapot", 418)])
def test_any_other_status_holds_with_it(
    webhooks: Webhooks, endpoint: Endpoint, path: str, status: int
) -> None:
    answer = webhooks.call(endpoint.base + path, PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status, answer.reason) == (False, status, f"answered {status}")


def test_a_redirect_is_an_answer_and_is_not_followed(
    webhooks: Webhooks, endpoint: Endpoint
) -> None:
    answer = webhooks.call(endpoint.base + "/redirect", PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status, answer.reason) == (False, 302, "answered 302")
    assert endpoint.paths() == ["/redirect"]  # /ok was never asked


def test_an_endpoint_silent_past_the_timeout_holds(webhooks: Webhooks, endpoint: Endpoint) -> None:
    began = time.monotonic()
    answer = webhooks.call(endpoint.base + "/slow", PAYLOAD, timeout=timedelta(seconds=0.5))
    assert time.monotonic() - began < 1.8
    assert (answer.passed, answer.status) == (False, None)
    assert answer.reason == "did not answer within 0.5 s"


def test_a_closed_port_refuses_the_connection(webhooks: Webhooks) -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    answer = webhooks.call(f"http://127.0.0.1:{port}/", PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status, answer.reason) == (False, None, "refused the connection")


def test_a_large_answer_is_not_read_beyond_a_small_cap(
    webhooks: Webhooks, endpoint: Endpoint
) -> None:
    answer = webhooks.call(endpoint.base + "/big", PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status) == (True, 200)
    deadline = time.monotonic() + 10
    while not endpoint.big_written and time.monotonic() < deadline:
        time.sleep(0.05)
    # The caller hung up after its cap: the endpoint could not send the whole answer.
    assert endpoint.big_written
    assert endpoint.big_written[0] < BIG_BODY


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "not a url"])
def test_only_http_urls_are_called(webhooks: Webhooks, url: str) -> None:
    answer = webhooks.call(url, PAYLOAD, timeout=TIMEOUT)
    assert (answer.passed, answer.status) == (False, None)
    assert "http(s)" in answer.reason
