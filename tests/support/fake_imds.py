"""A fake EC2 instance metadata service (IMDSv2) on 169.254.169.254, for booted machines.

On EC2, the user data and the agent read the instance id and the instance role's
credentials from http://169.254.169.254. The machines of `booted_machine` share the host's
network namespace, so this fake serves them all from the host: `fake_imds()` adds
169.254.169.254/32 to the host's `lo`, serves on port 80 and removes the address again,
even when the test fails. Only IMDSv2 is served (a token from `PUT /latest/api/token`, then
every GET carries it; 401 without), as the project's code and botocore use it.

One host has one 169.254.169.254:80, so a host-wide file lock makes a second test session
wait for the first instead of failing to bind.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMDS_ADDRESS = "169.254.169.254"
IMDS_PORT = 80
# The label marks the address as ours: one left by a killed session is recognised (and
# taken over), an address someone else configured is never removed.
_ADDRESS_LABEL = "lo:flotilla"
_HOST_LOCK = Path("/run/lock/flotilla-fake-imds.lock")
_TOKEN_TTL_LIMIT = 21600  # seconds, as EC2's IMDS allows
_CREDENTIALS_LIFETIME = 6 * 3600  # seconds; botocore refreshes credentials near expiry


@dataclass
class FakeImds:
    """What the fake serves; `instance_id` may be changed while it runs (one at a time)."""

    instance_id: str
    region: str
    role: str
    account_id: str = "123456789012"
    access_key_id: str = field(default_factory=lambda: "ASIA" + secrets.token_hex(8).upper())
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    session_token: str = field(default_factory=lambda: secrets.token_urlsafe(60))
    address: str = IMDS_ADDRESS
    port: int = IMDS_PORT

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}" if self.port != 80 else f"http://{self.address}"

    def metadata(self) -> dict[str, str]:
        """Every path served to a GET with a valid token, and its body."""
        now = time.time()
        credentials = {
            "Code": "Success",
            "LastUpdated": _iso8601(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": _iso8601(now + _CREDENTIALS_LIFETIME),
        }
        identity = {
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.region + "a",
            "imageId": "ami-0123456789abcdef0",
            "instanceId": self.instance_id,
            "instanceType": "t3.micro",
            "privateIp": "127.0.0.1",
            "region": self.region,
            "version": "2017-09-30",
        }
        meta = "/latest/meta-data"
        return {
            f"{meta}/": "instance-id\niam/\nplacement/\nlocal-ipv4",
            f"{meta}/instance-id": self.instance_id,
            f"{meta}/local-ipv4": "127.0.0.1",
            f"{meta}/placement/region": self.region,
            f"{meta}/placement/availability-zone": self.region + "a",
            f"{meta}/iam/security-credentials/": self.role,
            f"{meta}/iam/security-credentials/{self.role}": json.dumps(credentials),
            "/latest/dynamic/instance-identity/document": json.dumps(identity),
        }


def _iso8601(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class _Tokens:
    """IMDSv2 session tokens and when each expires; thread-safe (the server is threaded)."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expiry[token] = time.monotonic() + ttl_seconds
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and self._expiry.get(token, 0.0) > time.monotonic()


def _handler(imds: FakeImds, tokens: _Tokens) -> type[http.server.BaseHTTPRequestHandler]:
    class ImdsHandler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                self._answer(404, "Not Found")
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= _TOKEN_TTL_LIMIT:
                self._answer(400, "Bad Request")
                return
            self._answer(200, tokens.issue(int(ttl)))

        def do_GET(self) -> None:
            if not tokens.valid(self.headers.get("X-aws-ec2-metadata-token")):
                self._answer(401, "Unauthorized")
                return
            served, path = imds.metadata(), self.path.split("?", 1)[0]
            # EC2 answers a leaf with a trailing slash too, and botocore asks for the
            # availability zone that way.
            body = served.get(path, served.get(path.rstrip("/")))
            if body is None:
                self._answer(404, "Not Found")
                return
            self._answer(200, body)

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest would show every request on stderr."""

    return ImdsHandler


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[http.server.HTTPServer]:
    """Serve `server` on a daemon thread until the block ends, then close its socket."""
    thread = threading.Thread(target=server.serve_forever, name="fake-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def fake_imds(
    instance_id: str = "i-0123456789abcdef0",
    region: str = "us-east-1",
    role: str = "flotilla-worker",
) -> Iterator[FakeImds]:
    """Serve a fake IMDS on 169.254.169.254:80 (added to `lo` for the block's duration)."""
    imds = FakeImds(instance_id=instance_id, region=region, role=role)
    with _host_lock(), _address_on_loopback(imds.address):
        handler = _handler(imds, _Tokens())
        server = http.server.ThreadingHTTPServer((imds.address, imds.port), handler)
        with serving(server):
            yield imds


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    _HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _HOST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        yield


@contextlib.contextmanager
def _address_on_loopback(address: str) -> Iterator[None]:
    """`address`/32 on `lo` for the block; removed afterwards unless someone else had it."""
    existing = _loopback_addresses()
    if address in existing and existing[address] != _ADDRESS_LABEL:
        yield  # configured by someone else: use it, never remove it
        return
    if address not in existing:
        _ip("addr", "add", f"{address}/32", "dev", "lo", "label", _ADDRESS_LABEL)
    try:
        yield
    finally:
        _ip("addr", "del", f"{address}/32", "dev", "lo")


def _loopback_addresses() -> dict[str, str]:
    """The IPv4 addresses on `lo` and their labels."""
    shown = json.loads(_ip("-json", "-4", "addr", "show", "dev", "lo"))
    return {info["local"]: info.get("label", "lo") for link in shown for info in link["addr_info"]}


def _ip(*arguments: str) -> str:
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(arguments)}` failed: {done.stderr.strip()}")
    return done.stdout
