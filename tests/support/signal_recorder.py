"""A fake CloudFormation endpoint that records `SignalResource` calls and answers nothing else.

The templates' user data signals the stack (CreationPolicy) once the instance's service is
up. On a booted machine it is pointed here with
`AWS_ENDPOINT_URL_CLOUDFORMATION=http://127.0.0.1:PORT` (botocore honours service-specific
endpoint variables), and the test reads what arrived, and when. It speaks just enough of
CloudFormation's query protocol (a form-encoded POST, an XML answer) for botocore's
`signal_resource` to succeed; any other action gets a 400 with an XML error, so a client that
asks for more fails loudly instead of seeing a made-up answer.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import NamedTuple
from urllib.parse import parse_qs

from tests.support.fake_imds import serving

_NAMESPACE = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
_STATUSES = ("SUCCESS", "FAILURE")
_REQUIRED = ("StackName", "LogicalResourceId", "UniqueId", "Status")


class Signal(NamedTuple):
    """One `SignalResource` call, as it arrived."""

    time: float  # time.time() on arrival
    stack: str
    logical_id: str
    unique_id: str
    status: str


class SignalRecorder:
    """The signals received so far (thread-safe), and a way to wait for one."""

    def __init__(self) -> None:
        self.endpoint_url = ""  # set once the server listens
        self._signals: list[Signal] = []
        self._arrived = threading.Condition()

    @property
    def signals(self) -> list[Signal]:
        with self._arrived:
            return list(self._signals)

    def record(self, signal: Signal) -> None:
        with self._arrived:
            self._signals.append(signal)
            self._arrived.notify_all()

    def wait_for(
        self, matches: Callable[[Signal], bool] = lambda signal: True, timeout: float = 60.0
    ) -> Signal:
        """The first signal that `matches`, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = next((signal for signal in self._signals if matches(signal)), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching SignalResource within {timeout:.0f} s; "
                        f"received: {self._signals or 'none'}"
                    )
                self._arrived.wait(remaining)


def _success_body() -> str:
    return (
        f'<SignalResourceResponse xmlns="{_NAMESPACE}"><ResponseMetadata>'
        f"<RequestId>{uuid.uuid4()}</RequestId>"
        "</ResponseMetadata></SignalResourceResponse>"
    )


def _error_body(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{_NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _signal_from(form: dict[str, str]) -> Signal | str:
    """The signal a SignalResource form asks for, or why it is refused."""
    missing = [name for name in _REQUIRED if not form.get(name)]
    if missing:
        return f"missing {', '.join(missing)}"
    if form["Status"] not in _STATUSES:
        return f"Status must be one of {', '.join(_STATUSES)}, not {form['Status']!r}"
    return Signal(
        time.time(), form["StackName"], form["LogicalResourceId"], form["UniqueId"], form["Status"]
    )


def _handler(recorder: SignalRecorder) -> type[http.server.BaseHTTPRequestHandler]:
    class CloudFormationHandler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fields = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            form = {name: values[0] for name, values in fields.items()}
            if form.get("Action") != "SignalResource":
                refusal = f"this fake answers SignalResource only, not {form.get('Action')!r}"
                self._answer(400, _error_body("InvalidAction", refusal))
                return
            signal = _signal_from(form)
            if isinstance(signal, str):
                self._answer(400, _error_body("ValidationError", signal))
                return
            recorder.record(signal)
            self._answer(200, _success_body())

        def do_GET(self) -> None:
            self._answer(400, _error_body("InvalidAction", "only POST SignalResource is served"))

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest would show every request on stderr."""

    return CloudFormationHandler


@contextlib.contextmanager
def signal_recorder() -> Iterator[SignalRecorder]:
    """A recording CloudFormation endpoint on 127.0.0.1 (a free port) for the block."""
    recorder = SignalRecorder()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.endpoint_url = f"http://127.0.0.1:{server.server_address[1]}"
    with serving(server):
        yield recorder
