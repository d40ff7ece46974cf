"""The demo's unit: a small HTTP server that answers with its revision's greeting.

It binds a free loopback port (the demo's instances share one machine) and says which, in
a place of its own instance, where the demo reads it and fetches every instance to prove
what each one serves. All instances run the same unit text with the same environment, so
the place must come from the runtime:
- on systemd, the unit's RuntimeDirectory= (systemd sets $RUNTIME_DIRECTORY): under the
  instance's private user manager that is in its own XDG_RUNTIME_DIR, and systemd removes
  it when the unit stops. Standard output would not do: a private manager has no journal.
- the process runtime gives a unit no runtime directory (it ignores RuntimeDirectory=, and
  its working directory is /, shared by all), but keeps its standard output in a log file
  in the instance's state directory: the same line is printed there.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

READY = "listening on http://127.0.0.1:"
ANNOUNCEMENT = "listening"  # the file's name in $RUNTIME_DIRECTORY


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
    line = f"{READY}{server.server_port}"
    runtime_directory = os.environ.get("RUNTIME_DIRECTORY")
    if runtime_directory:
        announcement = Path(runtime_directory.split(":")[0], ANNOUNCEMENT)
        partial = announcement.with_suffix(".partial")
        partial.write_text(line + "\n")
        partial.replace(announcement)  # the demo never reads half a line
    print(line, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
