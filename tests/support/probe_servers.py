"""Real servers on loopback for the health probe's tests: an HTTP(S) server in a thread whose
answers are scripted by request count (so no test depends on timing), a bare listener
that accepts but never answers, and a free port nobody listens on."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class ScriptedHealth:
    """The status of each request in turn; the last one repeats."""

    def __init__(self, statuses: Sequence[int]) -> None:
        self.statuses = list(statuses)
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def next_status(self, path: str) -> int:
        with self._lock:
            self.paths.append(path)
            index = min(len(self.paths), len(self.statuses)) - 1
            return self.statuses[index]

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.paths)


@contextmanager
def http_server(
    statuses: Sequence[int], *, tls_dir: Path | None = None
) -> Iterator[tuple[int, ScriptedHealth]]:
    """A threaded HTTP server on 127.0.0.1 (HTTPS with a self-signed certificate made in
    `tls_dir`); yields its port and its script."""
    script = ScriptedHealth(statuses)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = script.next_status(self.path)
            body = b"s3cr3t-body-never-reported"
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls_dir is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(tls_dir))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], script
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def self_signed(directory: Path) -> tuple[str, str]:
    """A throwaway certificate and key for 127.0.0.1 (with `cryptography`, a dependency)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel does, from its backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        yield listener.getsockname()[1]


def closed_port() -> int:
    """A port nobody listens on (just released by the kernel; nobody here takes it again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
