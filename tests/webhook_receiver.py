"""A local webhook receiver for alert tests: an HTTP server on 127.0.0.1 that keeps every JSON body it is posted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from deploy.kafka.launcher import free_port


class WebhookReceiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N802, N805
                self.received.append(json.loads(handler.rfile.read(int(handler.headers["Content-Length"]))))
                handler.send_response(200)
                handler.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
