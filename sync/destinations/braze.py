"""The ``braze`` destination: membership as a value of an array attribute.

Each segment is one value (the sync entry's ``value:``, by default the segment's
name) in one custom array attribute of the user profile (``attribute``, by default
``segments``). A batch is one ``POST /users/track`` with up to 75 attribute objects,
``{"external_id": user_id, attribute: {"add": [value]}}`` for adds and ``{"remove":
[value]}`` for removes: both leave the attribute's other values alone and are
idempotent.

Braze accepts a request with some bad objects: it answers 2xx with an ``errors``
list whose items name the object (``"input_array": "attributes"``, ``"index"``).
Those records fail alone; an error that names no object is not attributable and the
rest of the 2xx answer stands. A user id Braze does not know creates a profile,
unless ``update_existing_only: true`` (Braze's ``_update_existing_only``).

Limits (Braze's docs): 75 attribute objects a request; ``/users/track`` takes 3,000
requests every 3 seconds per workspace, shared with everything else the workspace
sends, so we default to 50 requests a second (3,750 users a second), 4 in flight.
"""

from __future__ import annotations

from collections.abc import Mapping

from sync.destinations.api import ApiDestination, bearer
from sync.destinations.base import Audience
from sync.destinations.batches import Batch, BatchResult, RecordFailure
from sync.destinations.options import Option
from sync.routing import owner_attribute

MAX_OBJECTS = 75


def attributable_errors(answer: object, count: int) -> dict[int, str]:
    """The errors of a ``/users/track`` answer that name one of our ``count``
    attribute objects, by index.

    Examples:
        >>> attributable_errors({"message": "success", "errors": [
        ...     {"type": "'external_id' is required", "input_array": "attributes", "index": 1},
        ...     {"type": "something else"},
        ...     {"type": "bad purchase", "input_array": "purchases", "index": 0},
        ...     {"type": "out of range", "input_array": "attributes", "index": 7}]}, 2)
        {1: "'external_id' is required"}
    """
    errors = answer.get("errors") if isinstance(answer, dict) else None
    found: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict) or error.get("input_array") != "attributes":
            continue
        index = error.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
            found[index] = str(error.get("type") or "refused")
    return found


class BrazeAudience(Audience):
    def __init__(self, destination: BrazeDestination, value: str, owner: tuple[str, str] | None = None):
        self.destination = destination
        self.value = value
        self.owner = owner  # (attribute, the spec's owner), set with each add

    def send(self, batch: Batch) -> BatchResult:
        attribute = self.destination.attribute
        extra = {"_update_existing_only": True} if self.destination.options["update_existing_only"] else {}
        objects: list[dict[str, object]] = []
        owners: list[tuple[str, str]] = []
        for operation, records in (("add", batch.added), ("remove", batch.removed)):
            for record in records:
                routed = {self.owner[0]: self.owner[1]} if self.owner is not None and operation == "add" else {}
                objects.append({"external_id": record.user_id, attribute: {operation: [self.value]}, **routed, **extra})
                owners.append((record.user_id, operation))
        result = BatchResult()
        for start in range(0, len(objects), MAX_OBJECTS):
            chunk = objects[start:start + MAX_OBJECTS]
            answer = self.destination.call("POST", "/users/track", body={"attributes": chunk})
            for index, why in attributable_errors(answer, len(chunk)).items():
                user_id, operation = owners[start + index]
                result.failures.append(RecordFailure(user_id, operation, None, f"Braze refused the attribute update: {why}"))
        return result


class BrazeDestination(ApiDestination):
    type = "braze"
    OPTIONS = (
        Option("base_url", required=True),  # the workspace's REST endpoint, e.g. https://rest.iad-01.braze.com
        Option("api_key", required=True, secret=True),
        Option("attribute", default="segments"),
        Option("update_existing_only", bool, default=False),
        Option("owner_attribute"),  # a custom attribute set to the spec's owner on each add
    )
    TARGET_OPTIONS = (Option("value"),)
    DEFAULT_BATCH_SIZE = MAX_OBJECTS
    MAX_BATCH_SIZE = MAX_OBJECTS
    DEFAULT_RATE = 50.0
    DEFAULT_CONCURRENCY = 4

    @property
    def attribute(self) -> str:
        return str(self.options["attribute"])

    def headers(self) -> dict[str, str]:
        return bearer(str(self.options["api_key"]))

    def audience(self, segment_name: str, options: Mapping[str, object]) -> Audience:
        return BrazeAudience(self, str(options.get("value") or segment_name), owner_attribute(self.options, options))
