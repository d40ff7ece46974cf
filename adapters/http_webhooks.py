"""Webhook gates over HTTP(S), with the standard library's urllib.

Each call POSTs the payload as JSON and reads the answer's status: 2xx within the time-out
opens the gate, anything else is an answer that holds it, with a reason a person reads in
`rollout status` ("answered 500", "did not answer within 5 s", "refused the connection").
Nothing the endpoint does is an exception here.

- No redirect is followed: a 3xx is the answer ("answered 302"). A gate that a redirect
  could move would POST the rollout to wherever the redirect points.
- Only http and https URLs are called (urllib would also open file: and ftp: URLs); the
  service's settings refuse others already, this refuses them again at the edge.
- The time-out bounds the connection and each read of the answer (urllib's socket
  time-out): a server that sends nothing for that long has not answered.
- At most `BODY_CAP` bytes of the answer's body are read, then the connection is closed:
  the status is the answer, and a gate must not be made to read a large body.
- The machine's proxy settings (`https_proxy`, `no_proxy`) apply, as to boto3: a
  scheduler behind an egress proxy reaches its webhooks through it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flotilla.engine.ports import WebhookAnswer

BODY_CAP = 4096  # bytes of an answer's body read at most (and thrown away)
DEFAULT_USER_AGENT = "flotilla (rollout gate)"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into the answer it is (an `HTTPError` with its 3xx status)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


class HttpWebhooks:
    """`Webhooks` over HTTP(S); `user_agent` names the calling Flotilla (and its version)."""

    def __init__(self, *, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self._user_agent = user_agent
        self._opener = urllib.request.build_opener(_NoRedirects)

    def call(self, url: str, payload: Mapping[str, Any], *, timeout: timedelta) -> WebhookAnswer:
        seconds = max(timeout.total_seconds(), 0.001)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            return _held(url, f"is not an http(s) URL (scheme {scheme or 'missing'!r})")
        body = json.dumps(dict(payload), sort_keys=True, separators=(",", ":")).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "*/*",
                "User-Agent": self._user_agent,
            },
        )
        try:
            with self._opener.open(request, timeout=seconds) as answer:
                status = int(answer.status)
                answer.read(BODY_CAP)
        except urllib.error.HTTPError as refused:  # 4xx, 5xx and, unfollowed, 3xx
            status = int(refused.code)
            refused.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as failed:
            return _held(url, _no_answer(failed, seconds))
        reason = f"answered {status}"
        return WebhookAnswer(url, 200 <= status < 300, status, reason)


def _held(url: str, reason: str) -> WebhookAnswer:
    return WebhookAnswer(url, False, None, reason)


def _no_answer(failed: BaseException, seconds: float) -> str:
    """Why there was no answer, in the words `rollout status` shows."""
    cause: BaseException = failed
    if isinstance(failed, urllib.error.URLError) and isinstance(failed.reason, BaseException):
        cause = failed.reason
    if isinstance(cause, TimeoutError | socket.timeout):
        return f"did not answer within {seconds:g} s"
    if isinstance(cause, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(cause, ConnectionResetError | http.client.RemoteDisconnected):
        return "closed the connection without an answer"
    if isinstance(cause, socket.gaierror):
        return "names a host that does not resolve"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"has a certificate that does not verify ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"failed the TLS handshake ({cause.reason or type(cause).__name__})"
    if isinstance(cause, http.client.HTTPException):
        return f"gave no HTTP answer ({type(cause).__name__})"
    if isinstance(cause, ValueError):
        return "is not a URL that can be called"
    return f"could not be reached ({type(cause).__name__}: {str(cause)[:80]})"
