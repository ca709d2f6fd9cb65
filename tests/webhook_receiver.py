"""A local webhook receiver for alert tests: an HTTP server on 127.0.0.1 that keeps what it is posted.

One server for every alert test: by default it answers 200 and keeps each JSON body; a test that
needs more overrides :meth:`WebhookReceiver.answer` (the status of the n-th request) or
:meth:`WebhookReceiver.keep` (what is recorded of a request).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver(ThreadingHTTPServer):
    def __init__(self, status: int = 200) -> None:
        self.received: list[Any] = []
        self.status = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N802, N805
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.keep(handler.headers, body)
                handler.send_response(self.answer(len(self.received)))
                handler.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def keep(self, headers: Message, body: bytes) -> None:
        """Record one request: its JSON body."""
        self.received.append(json.loads(body))

    def answer(self, requests: int) -> int:
        """The status for the request just kept (``requests`` kept so far, this one included)."""
        return self.status

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(status).start()
    try:
        yield server
    finally:
        server.close()
