"""The ``webhook`` destination: SPEC 4.1, signed as Standard Webhooks.

Every batch is one ``POST`` whose body lists the batch's adds (with the configured
user attributes) and removes. The ``webhook-id`` is the batch id, the same on every
retry and on a rerun after a crash, so a receiver can drop repeats; the timestamp
and signature are made afresh for each attempt, so a late retry is not refused as stale.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

from segments.errors import SegmentsError
from sync.destinations.api import is_http_url
from sync.destinations.base import Audience, Destination
from sync.destinations.batches import Batch, BatchResult
from sync.destinations.options import Option
from sync.http import HttpClient

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_``-prefixed base64 secret.

    Examples:
        >>> signing_key("whsec_c2VjcmV0")
        b'secret'
        >>> signing_key("not base64!")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: the webhook secret must be 'whsec_' followed by base64
    """
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise SegmentsError("the webhook secret must be 'whsec_' followed by base64") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` (Standard Webhooks).

    Examples:
        >>> sign(b"secret", "msg_1", 1700000000, b'{}')
        'v1,A5oIrJxXPB/PkULSoVu0e4khvPiqpF9vljmhkSKg0FI='
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _json_value(value: object) -> object:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_value)


def body(batch: Batch) -> bytes:
    """The request body of SPEC 4.1, compact JSON.

    A batch the warehouse encoded is spliced into the envelope as it is: the same
    bytes ``json.dumps`` would make of its records, without making them.

    Examples:
        >>> from sync.destinations.batches import EncodedChanges, Record
        >>> records = Batch("d", "s", "i", "b", (Record("u1", {"email": "a@x"}),), (Record("u9"),))
        >>> body(records)
        b'{"segment":"s","destination":"d","sync_id":"i","added":[{"user_id":"u1","email":"a@x"}],"removed":[{"user_id":"u9"}]}'
        >>> encoded = EncodedChanges('[{"user_id":"u1","email":"a@x"}]', '[{"user_id":"u9"}]')
        >>> body(Batch("d", "s", "i", "b", (), (), encoded)) == body(records)
        True
    """
    envelope = {"segment": batch.segment, "destination": batch.destination, "sync_id": batch.sync_id}
    if batch.encoded is not None:
        head = _dumps(envelope)[:-1]  # without its closing brace
        return f'{head},"added":{batch.encoded.added},"removed":{batch.encoded.removed}}}'.encode()
    payload = {
        **envelope,
        "added": [{"user_id": r.user_id, **r.fields} for r in batch.added],
        "removed": [{"user_id": r.user_id} for r in batch.removed],
    }
    return _dumps(payload).encode()


class WebhookAudience(Audience):
    def __init__(self, destination: WebhookDestination):
        self.destination = destination

    def send(self, batch: Batch) -> BatchResult:
        payload = body(batch)
        self.destination.http.request(
            "POST", self.destination.url, data=payload,
            headers=lambda: self.destination.headers(batch.batch_id, payload),
        )
        return BatchResult()


class WebhookDestination(Destination):
    type = "webhook"
    OPTIONS = (
        Option("url", required=True),
        Option("secret", required=True, secret=True),
        Option("fields", list, default=[]),
    )
    DEFAULT_BATCH_SIZE = 500
    MAX_BATCH_SIZE = 100_000
    DEFAULT_CONCURRENCY = 2
    JSON_CHANGES = True
    wall_clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self._key = signing_key(str(self.options["secret"]))
        if not is_http_url(self.url):
            # never echo the URL: its path or query often holds a token
            raise SegmentsError(f"destination {name}: option 'url' must be an http:// or https:// URL with a host")

    @property
    def url(self) -> str:
        return str(self.options["url"])

    def fields(self) -> tuple[str, ...]:
        return tuple(self.options["fields"])  # type: ignore[arg-type]

    def headers(self, message_id: str, payload: bytes) -> dict[str, str]:
        timestamp = int(self.wall_clock())
        return {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message_id, timestamp, payload),
        }

    def audience(self, segment: str, options: Mapping[str, object]) -> Audience:
        return WebhookAudience(self)
