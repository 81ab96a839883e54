"""A real HTTP receiver for the webhook tests: `http.server` on a loopback port in a
thread, recording every request (headers and raw body) and answering with a status
the test chooses (per delivery id, in order, then the default)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class Receiver:
    """Records POSTs; `answers[delivery_id]` is a list of statuses to answer first, then `status`."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status = status
        self.answers: dict[str, list[int]] = {}
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                delivery = self.headers.get("X-Fengkong-Delivery", "")
                with receiver.lock:
                    queued = receiver.answers.get(delivery)
                    status = queued.pop(0) if queued else receiver.status
                    receiver.received.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                              "body": body, "status": status, "path": self.path})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]

    def accepted(self) -> list[dict[str, Any]]:
        """The requests answered 2xx."""
        with self.lock:
            return [r for r in self.received if 200 <= r["status"] < 300]

    def wait_for(self, predicate: Callable[["Receiver"], bool], timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)
