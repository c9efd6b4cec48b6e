"""A loopback webhook receiver: the demo's destination, and the tests' and
benchmark's fake platform.

It verifies each request's Standard Webhooks signature, applies each ``webhook-id``
once (a repeat is acknowledged and ignored, as the spec asks of receivers), and keeps
every segment's audience. ``fault`` lets a test answer a request with anything it
likes (a 429, a 500, a dropped connection) before it is applied.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sync.destinations.webhook import sign, signing_key


@dataclass(frozen=True)
class Fault:
    """An answer to give instead of the normal one; ``drop`` closes the connection
    without answering; ``apply`` applies the request first (the answer is lost)."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    apply: bool = False


@dataclass
class Delivery:
    webhook_id: str
    segment: str
    added: list[dict[str, object]]
    removed: list[str]


class AudienceReceiver:
    """Run with ``with AudienceReceiver(secret) as receiver:``; post to ``receiver.url``."""

    def __init__(
        self,
        secret: str,
        fault: Callable[[int, dict[str, str]], Fault | None] | None = None,
        keep_deliveries: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.key = signing_key(secret)
        self.fault = fault
        self.keep_deliveries = keep_deliveries
        self.audiences: dict[str, set[str]] = {}
        self.deliveries: list[Delivery] = []
        self.requests = 0  # every request, faulted or not
        self.repeats = 0  # acknowledged again, not applied again
        self.bad_signatures = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="audience-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/segments"

    def __enter__(self) -> AudienceReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _verify(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            expected = sign(self.key, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        except (KeyError, ValueError):
            return False
        given = headers.get("webhook-signature", "").split(" ")
        return any(hmac.compare_digest(expected, g) for g in given)

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        """Apply one request; return the status to answer."""
        if not self._verify(headers, body):
            with self._lock:
                self.bad_signatures += 1
            return 401
        payload = json.loads(body)
        message_id = headers["webhook-id"]
        with self._lock:
            if message_id in self._seen:
                self.repeats += 1
                return 200
            self._seen.add(message_id)
            audience = self.audiences.setdefault(payload["segment"], set())
            audience.update(member["user_id"] for member in payload["added"])
            audience.difference_update(member["user_id"] for member in payload["removed"])
            if self.keep_deliveries:
                self.deliveries.append(Delivery(
                    message_id, payload["segment"], payload["added"], [m["user_id"] for m in payload["removed"]],
                ))
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real platforms

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.requests += 1
                    number = receiver.requests
                fault = receiver.fault(number, headers) if receiver.fault else None
                if fault is not None and fault.apply:
                    receiver.receive(headers, body)
                if fault is not None and fault.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                status = fault.status if fault is not None else receiver.receive(headers, body)
                self.send_response(status)
                for name, value in (fault.headers if fault is not None else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                return

        return Handler
