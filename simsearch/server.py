"""The production WSGI server: waitress, with its own errors answered as JSON.

waitress rejects some requests before the app sees them (a Content-Length over
the body limit, malformed or oversized headers, bad chunked encoding) with a
plain-text page; here those answers take the API's JSON error shape too.
"""

from __future__ import annotations

import json

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

_CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large", 501: "not_implemented"}


class _JsonErrorTask(ErrorTask):
    def execute(self):
        e = self.request.error
        body = json.dumps({"error": _CODES.get(e.code, "http_error"),
                           "message": f"{e.reason}: {e.body}".strip()}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    error_task_class = _JsonErrorTask


def serve(app, host: str, port: int, threads: int, max_body_bytes: int, channel_timeout_s: int = 60) -> None:
    """Serve `app` until interrupted.  A request whose declared body exceeds
    `max_body_bytes` is refused before its body is read; a connection idle for
    `channel_timeout_s` (a stalled upload) is closed without taking a worker."""
    server = create_server(app, host=host, port=port, threads=threads, ident="simsearch",
                           max_request_body_size=max_body_bytes, channel_timeout=channel_timeout_s)
    server.channel_class = _Channel
    server.run()
