"""The demo's unit: a small HTTP server that answers with its revision's greeting.

It binds a free loopback port (the demo's instances share one machine) and says which on
standard output, which the unit runtime keeps in the unit's log; the demo reads it there
and fetches every instance to prove what each one serves.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

READY = "listening on http://127.0.0.1:"


class Greeting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (os.environ.get("GREETING", "hello") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per request would drown the unit's log


def main() -> None:
    server = HTTPServer(("127.0.0.1", 0), Greeting)
    print(f"{READY}{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
