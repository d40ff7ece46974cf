"""Fault injection for tests/faults/: AWS errors at a rate, a dead endpoint, sudden deaths.

- `BotocoreFaults` answers a share of a boto3 client's requests with a throttle, a 5xx, a
  network timeout (the request never left) or a lost answer (the request was sent and
  applied, then the read timed out), from botocore's `before-send` event, and
  the fake answer goes through botocore's own parser and its `standard` retry handler
  exactly as a real one would, then through the adapter's error translation. Chosen over
  wrapping the ports because what is under test is the whole stack above the socket:
  botocore's retries (CLIENT_CONFIG), the adapters' translation into `TransientError`,
  and the engine's tenacity policies, and that the layers do not multiply.
- `EndpointProxy` is a TCP proxy in front of a moto server: `down()` closes it (new
  connections are refused, open ones cut), `up()` opens it again on the same port. The
  moto server keeps its state, so "DynamoDB down for 30 s" is a real outage of a real
  endpoint, not a simulated one.
- `Crash` is what a killed agent or scheduler dies of: a `BaseException`, so no
  `except Exception` (or `FlotillaError`) on the way can swallow it, like a SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.httpsession import URLLib3Session


class Crash(BaseException):
    """The process died here (SIGKILL): nothing after this point ran."""


# What each kind of fault looks like on the wire, per protocol.
_JSON_ERRORS = {  # DynamoDB (JSON 1.0)
    "throttle": (400, "com.amazonaws.dynamodb.v20120810#ThrottlingException"),
    "5xx": (500, "com.amazonaws.dynamodb.v20120810#InternalServerError"),
}
_QUERY_ERRORS = {  # classic ELB and ELBv2 (query protocol, XML)
    "throttle": (400, "Throttling"),
    "5xx": (503, "ServiceUnavailable"),
}


class BotocoreFaults:
    """Fails `rate` of the requests of one client, spread over `kinds`, reproducibly."""

    def __init__(
        self,
        client: Any,
        *,
        rate: float,
        seed: int,
        kinds: tuple[str, ...] = ("throttle", "5xx", "timeout", "lost"),
    ) -> None:
        self.rate = rate
        self.kinds = kinds
        self.random = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.active = True
        self._mutex = threading.Lock()
        self._json = client.meta.service_model.protocol == "json"
        self._session = URLLib3Session()
        client.meta.events.register_first("before-send", self._maybe_fail)

    def _maybe_fail(self, request: Any, **_: Any) -> AWSResponse | None:
        with self._mutex:
            self.requests += 1
            if not self.active or self.random.random() >= self.rate:
                return None
            kind = self.random.choice(self.kinds)
            self.injected[kind] += 1
        if kind == "timeout":
            if self.random.random() < 0.5:
                raise ConnectTimeoutError(endpoint_url=request.url)
            raise ReadTimeoutError(endpoint_url=request.url)
        if kind == "lost":
            # The request reaches the server and is applied; its answer never arrives.
            self._session.send(request)
            raise ReadTimeoutError(endpoint_url=request.url)
        if self._json:
            status, code = _JSON_ERRORS[kind]
            body = json.dumps({"__type": code, "message": f"injected {kind}"}).encode()
            headers = {"Content-Type": "application/x-amz-json-1.0"}
        else:
            status, code = _QUERY_ERRORS[kind]
            body = (
                "<ErrorResponse><Error><Type>Sender</Type>"
                f"<Code>{code}</Code><Message>injected {kind}</Message></Error>"
                "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
            ).encode()
            headers = {"Content-Type": "text/xml"}
        wire_headers = HTTPHeaders()
        for name, value in headers.items():
            wire_headers[name] = value
        return AWSResponse(request.url, status, wire_headers, _Raw(body))

    @property
    def total(self) -> int:
        return sum(self.injected.values())


class _Raw:
    """The raw body botocore reads from an `AWSResponse`."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        body, self._body = self._body, b""
        return body


def _port_outside_the_ephemeral_range() -> int:
    """A free port below Linux's ephemeral range (32768 and up by default). While the
    proxy is down, a client that keeps connecting to a port inside that range can be
    given that very port as its own source port and connect to itself (TCP's
    simultaneous open), holding the port so the proxy cannot come back up."""
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low = int(ports[0])
    for _attempt in range(200):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port from 10000 to {low}")


class EndpointProxy:
    """A loopback TCP proxy to `target` that can be taken down and brought back up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _port_outside_the_ephemeral_range()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._mutex = threading.Lock()
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones, as a dead endpoint does."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not, and
            # one more connection would still get through.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._mutex:
            doomed, self._connections = self._connections, []
        for connection in doomed:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._mutex:
                self._connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, one: socket.socket, other: socket.socket) -> None:
        peers = {one: other, other: one}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    peers[source].sendall(data)
        except OSError:
            return
        finally:
            for end in (one, other):
                with contextlib.suppress(OSError):
                    end.close()
