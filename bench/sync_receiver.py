"""The benchmark's loopback receiver: one process serving both tools.

Run by ``sync_bench.py`` as a separate process, so parsing and counting do not
compete with the measured sync for its GIL. It prints its port on the first line
of stdout and serves until killed.

Routes (``TOOL`` is any name, e.g. ``ours`` or ``drt``):

- ``POST /hook/TOOL``: a batch. For a tool started with a secret (``--secret
  TOOL=whsec_...``) the Standard Webhooks signature is verified (401 if wrong)
  and the body is SPEC 4.1's ``{"added": [...], "removed": [...]}``; for any
  other tool the body is ``{"rows": [...]}`` and every row counts as an add.
  Every row's ``user_id`` is counted, and counted as a duplicate when it already
  arrived since the last reset: that is how repeats after a kill are measured.
- ``GET /stats/TOOL``: the counters as JSON.
- ``POST /reset/TOOL``: forget everything received by TOOL.
- ``POST /lap/TOOL``: restart TOOL's first-to-last request clock only (a rerun's
  duplicates are counted against what arrived before it).
- ``POST /arm/TOOL?rows=N&pid=P``: SIGKILL process P as soon as TOOL's received
  rows reach N, while that request is still unanswered (it was applied, its
  acknowledgement is lost: the worst instant for a sync).

Plain ``http.server`` with HTTP/1.1 keep-alive and a thread per connection: the
work per request is a C-level HMAC and ``json.loads`` over the body, far below
what one sync client sends (``sync_bench.py`` measures this ceiling and reports it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Counters:
    """What one tool delivered since its last reset."""

    requests: int = 0
    added: int = 0
    removed: int = 0
    duplicate_rows: int = 0  # a user_id that had already arrived (same operation)
    repeated_ids: int = 0  # a webhook-id that had already arrived
    bad_signatures: int = 0
    first_at: float | None = None  # monotonic seconds, first request
    last_at: float | None = None  # monotonic seconds, last request done
    added_ids: set[str] = field(default_factory=set)
    removed_ids: set[str] = field(default_factory=set)
    webhook_ids: set[str] = field(default_factory=set)
    kill_at_rows: int | None = None
    kill_pid: int | None = None

    def public(self) -> dict[str, object]:
        seconds = (self.last_at - self.first_at) if self.first_at is not None and self.last_at is not None else 0.0
        return {
            "requests": self.requests, "added": self.added, "removed": self.removed,
            "rows": self.added + self.removed, "distinct_added": len(self.added_ids),
            "distinct_removed": len(self.removed_ids), "duplicate_rows": self.duplicate_rows,
            "repeated_ids": self.repeated_ids, "bad_signatures": self.bad_signatures,
            "seconds": seconds,
        }


def signature(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks ``v1,`` signature, as sync/destinations/webhook.py makes it."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


class Receiver:
    def __init__(self, secrets: dict[str, bytes]):
        self.keys = secrets
        self.tools: dict[str, Counters] = {}
        self.lock = threading.Lock()

    def counters(self, tool: str) -> Counters:
        with self.lock:
            return self.tools.setdefault(tool, Counters())

    def verified(self, tool: str, headers: dict[str, str], body: bytes) -> bool:
        key = self.keys.get(tool)
        if key is None:
            return True
        try:
            expected = signature(key, headers["webhook-id"], headers["webhook-timestamp"], body)
        except KeyError:
            return False
        return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split(" "))

    def deliver(self, tool: str, headers: dict[str, str], body: bytes) -> int:
        """Count one batch; return the status to answer."""
        started = time.monotonic()
        c = self.counters(tool)
        if not self.verified(tool, headers, body):
            with self.lock:
                c.bad_signatures += 1
            return 401
        payload = json.loads(body)
        if tool in self.keys:
            added = [r["user_id"] for r in payload["added"]]
            removed = [r["user_id"] for r in payload["removed"]]
        else:
            added, removed = [r["user_id"] for r in payload["rows"]], []
        with self.lock:
            c.requests += 1
            c.first_at = started if c.first_at is None else c.first_at
            message_id = headers.get("webhook-id")
            if message_id is not None:
                c.repeated_ids += message_id in c.webhook_ids
                c.webhook_ids.add(message_id)
            for ids, seen in ((added, c.added_ids), (removed, c.removed_ids)):
                before = len(seen)
                seen.update(ids)
                c.duplicate_rows += len(ids) - (len(seen) - before)
            c.added += len(added)
            c.removed += len(removed)
            c.last_at = time.monotonic()
            kill = c.kill_pid if c.kill_at_rows is not None and c.added + c.removed >= c.kill_at_rows else None
            if kill is not None:
                c.kill_pid = None
        if kill is not None:
            try:
                os.kill(kill, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return 200


def handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def _answer(self, status: int, payload: object | None = None) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[str, str, dict[str, list[str]]]:
            url = urlsplit(self.path)
            _, action, tool = (url.path.split("/") + ["", ""])[:3]
            return action, tool, parse_qs(url.query)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action, tool, query = self._route()
            if action == "hook":
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(receiver.deliver(tool, headers, body))
            elif action == "reset":
                with receiver.lock:
                    receiver.tools[tool] = Counters()
                self._answer(200, {})
            elif action == "lap":  # time the next run alone, keep what arrived
                c = receiver.counters(tool)
                with receiver.lock:
                    c.first_at = c.last_at = None
                self._answer(200, {})
            elif action == "arm":
                c = receiver.counters(tool)
                with receiver.lock:
                    c.kill_at_rows, c.kill_pid = int(query["rows"][0]), int(query["pid"][0])
                self._answer(200, {})
            else:
                self._answer(404)

        def do_GET(self) -> None:  # noqa: N802
            action, tool, _ = self._route()
            if action != "stats":
                self._answer(404)
                return
            c = receiver.counters(tool)
            with receiver.lock:
                self._answer(200, c.public())

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            return

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A sync killed mid-request resets its connections: expected here, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", action="append", default=[], metavar="TOOL=whsec_...",
                        help="verify TOOL's requests as Standard Webhooks signed with this secret")
    args = parser.parse_args()
    secrets = {}
    for item in args.secret:
        tool, secret = item.split("=", 1)
        secrets[tool] = base64.b64decode(secret.removeprefix("whsec_"))
    server = Server(("127.0.0.1", args.port), handler(Receiver(secrets)))
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
