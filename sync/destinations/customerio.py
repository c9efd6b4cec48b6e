"""The ``customerio`` destination: membership of a manual segment (Track API).

Each segment is a manual segment that must already exist in Customer.io (the sync
entry's ``segment_id:``). A batch is at most two calls: ``POST
/api/v1/segments/{segment_id}/add_customers`` and ``.../remove_customers``, each with
``{"ids": [...]}`` (up to 1,000) and ``?id_type=``. Both are idempotent; a call
refused with a 4xx fails only the records it carried.

People are identified by ``id_type``: ``id`` (the default), ``email`` or ``cio_id``.
The identifier is the user id, or the users attribute ``id_attribute`` when given
(``email`` by default for ``email``; ``cio_id`` needs one). An identifier read from an
attribute is returned as the member's remote id, so a remove sends exactly what the
add sent; members without it are not sent.

Owner routing (:mod:`sync.routing`): Customer.io people have no owner, so the
destination's ``owner_attribute:`` names a person attribute that each add sets to the
spec's owner, by identifying the person (``PUT /api/v1/customers/{identifier}`` with
``{attribute: owner}``; a ``cio_id`` is sent as ``cio_<id>``), one call a person after
the batch's ``add_customers``. Customer.io has no update-only call: identifying
creates a person the workspace does not have yet, one more reason routing is opt-in.

Limits (Customer.io's docs): 1 to 1,000 ids a call; 100 requests a second per
workspace, shared with the app's live tracking, so we default to 10 calls a second
(10,000 ids a second), 2 in flight. Auth is HTTP Basic ``site_id:api_key``.
"""

from __future__ import annotations

from collections.abc import Mapping

from segments.errors import SegmentsError
from sync.destinations.api import ApiDestination, basic, segment
from sync.destinations.base import Audience
from sync.destinations.batches import Batch, BatchResult, Record, RecordFailure
from sync.destinations.options import Option
from sync.http import HttpClient, TerminalError
from sync.routing import owner_attribute, owner_failed

ID_TYPES = ("id", "email", "cio_id")
DEFAULT_ID_ATTRIBUTE = {"email": "email"}


class CustomerIoAudience(Audience):
    def __init__(self, destination: CustomerIoDestination, segment_id: str, owner: tuple[str, str] | None = None):
        self.destination = destination
        self.path = f"/api/v1/segments/{segment_id}"
        self.owner = owner  # (person attribute, the spec's owner), set with each add

    def _route(self, identifier: str) -> None:
        """Set the owner attribute on the person (``PUT /api/v1/customers/{identifier}``)."""
        assert self.owner is not None
        attribute, owner = self.owner
        person = f"cio_{identifier}" if self.destination.id_type == "cio_id" else identifier
        self.destination.call("PUT", f"/api/v1/customers/{segment(person)}", body={attribute: owner},
                              where="/api/v1/customers/{identifier}")

    def _identify(self, record: Record, operation: str) -> str | None:
        attribute = self.destination.id_attribute
        if attribute is None:
            return record.user_id
        value = record.remote_id if operation == "remove" else record.fields.get(attribute)
        text = "" if value is None else str(value).strip()
        return text or None

    def send(self, batch: Batch) -> BatchResult:
        result = BatchResult()
        for operation, records in (("add", batch.added), ("remove", batch.removed)):
            ids: list[str] = []
            sent: list[Record] = []
            for record in records:
                identifier = self._identify(record, operation)
                if identifier is None:
                    what = f"no {self.destination.id_type} recorded" if operation == "remove" else (
                        f"attribute {self.destination.id_attribute!r} is empty")
                    result.failures.append(RecordFailure(record.user_id, operation, None, what))
                    continue
                ids.append(identifier)
                sent.append(record)
                if operation == "add" and self.destination.id_attribute is not None:
                    result.remote_ids[record.user_id] = identifier
            if not ids:
                continue
            try:
                self.destination.call(
                    "POST", f"{self.path}/{operation}_customers",
                    params={"id_type": self.destination.id_type}, body={"ids": ids},
                )
            except TerminalError as error:
                result.failures += [RecordFailure(r.user_id, operation, error.status, str(error)) for r in sent]
                for record in sent:
                    result.remote_ids.pop(record.user_id, None)
                continue
            if operation == "add" and self.owner is not None:
                for identifier, record in zip(ids, sent, strict=True):
                    try:
                        self._route(identifier)
                    except TerminalError as error:  # in the segment, not routed: tried again next run
                        failure = owner_failed(error)
                        result.failures.append(RecordFailure(record.user_id, "add", failure.status, str(failure)))
                        result.remote_ids.pop(record.user_id, None)
        return result


class CustomerIoDestination(ApiDestination):
    type = "customerio"
    OPTIONS = (
        Option("site_id", required=True, secret=True),
        Option("api_key", required=True, secret=True),
        Option("region", default="us"),
        Option("base_url"),
        Option("id_type", default="id"),
        Option("id_attribute"),
        Option("owner_attribute"),  # a person attribute set to the spec's owner on each add
    )
    TARGET_OPTIONS = (Option("segment_id", int, required=True),)  # checked by `segments validate`
    REGIONS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
    DEFAULT_BATCH_SIZE = 1_000
    MAX_BATCH_SIZE = 1_000
    DEFAULT_RATE = 10.0
    DEFAULT_CONCURRENCY = 2

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self.id_type = str(self.options["id_type"])
        if self.id_type not in ID_TYPES:
            raise SegmentsError(f"{self.where}: id_type must be one of {', '.join(ID_TYPES)}, got {self.id_type!r}")
        attribute = self.options.get("id_attribute") or DEFAULT_ID_ATTRIBUTE.get(self.id_type)
        if self.id_type != "id" and attribute is None:
            raise SegmentsError(f"{self.where}: id_type {self.id_type} needs id_attribute, the users attribute holding it")
        self.id_attribute: str | None = str(attribute) if attribute else None

    def headers(self) -> dict[str, str]:
        return basic(str(self.options["site_id"]).strip(), str(self.options["api_key"]).strip())

    def fields(self) -> tuple[str, ...]:
        return (self.id_attribute,) if self.id_attribute else ()

    def required_fields(self) -> tuple[str, ...]:
        return self.fields()

    def audience(self, segment_name: str, options: Mapping[str, object]) -> Audience:
        return CustomerIoAudience(self, str(options["segment_id"]), owner_attribute(self.options, options))
