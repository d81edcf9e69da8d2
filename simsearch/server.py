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

from .errors import upload_too_large

_CODES = {400: "bad_request", 413: "too_large", 431: "headers_too_large", 501: "not_implemented"}


class _JsonErrorTask(ErrorTask):
    upload_limit_bytes: int | None = None

    def execute(self):
        e = self.request.error
        message = f"{e.reason}: {e.body}".strip()
        if e.code == 413 and self.upload_limit_bytes is not None:  # the same words as the app's own 413
            message = upload_too_large(self.upload_limit_bytes)
        body = json.dumps({"error": _CODES.get(e.code, "http_error"), "message": message}).encode()
        self.status = f"{e.code} {e.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


def serve(app, host: str, port: int, threads: int, upload_limit_bytes: int, channel_timeout_s: int = 60) -> None:
    """Serve `app` until interrupted.  A request whose declared body exceeds
    the upload limit (the whole body, multipart framing included, as the app
    counts it) is refused before its body is read; a connection idle for
    `channel_timeout_s` (a stalled upload) is closed without taking a worker."""
    task = type("JsonErrorTask", (_JsonErrorTask,), {"upload_limit_bytes": upload_limit_bytes})
    channel = type("JsonErrorChannel", (HTTPChannel,), {"error_task_class": task})
    server = create_server(app, host=host, port=port, threads=threads, ident="simsearch",
                           max_request_body_size=upload_limit_bytes, channel_timeout=channel_timeout_s)
    server.channel_class = channel
    server.run()
