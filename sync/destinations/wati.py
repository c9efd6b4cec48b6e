"""The ``wati`` destination: membership as a WhatsApp contact attribute.

Each segment is one contact attribute (the sync entry's ``attribute:``, by default
``seg_<segment>``), set to ``"true"`` on add and ``"false"`` on remove with ``POST
{base_url}/{tenant_id}/api/v1/updateContactAttributes/{whatsappNumber}``, body
``{"customParams": [{"name": attribute, "value": ...}]}``. Wati broadcasts and
segments filter on the value.

Only members with a phone number are sent (``phone_attribute``, a users attribute,
``phone`` by default). The number goes out as its digits alone, country code
included, and is returned as the member's remote id, so a remove addresses the very
number the add did, even if the user's phone changed since. The number is PII: it
never appears in a message (request errors name the path ``.../{whatsappNumber}``).

Wati reports some refusals as a 200 whose body says ``"result": false``: those
records fail alone.

Limits (Wati's docs): about 10 requests per 10 seconds on contact endpoints, 429
without a reliable Retry-After; we default to 1 request a second, 1 in flight.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from segments.errors import SegmentsError
from sync.destinations.api import ApiDestination, bearer, segment
from sync.destinations.base import Audience, PerRecordAudience
from sync.destinations.batches import Record
from sync.destinations.options import Option
from sync.http import HttpClient, TerminalError
from sync.routing import owner_attribute

_NOT_DIGIT = re.compile(r"\D+")
_TENANT = re.compile(r"^[A-Za-z0-9_-]+$")


def whatsapp_number(value: object) -> str | None:
    """A phone number's digits (country code included), or None when it has none.

    Examples:
        >>> whatsapp_number("+91 98765-43210")
        '919876543210'
        >>> whatsapp_number("n/a") is None
        True
    """
    digits = _NOT_DIGIT.sub("", "" if value is None else str(value))
    return digits or None


class WatiAudience(PerRecordAudience):
    def __init__(self, destination: WatiDestination, attribute: str, owner: tuple[str, str] | None = None):
        self.destination = destination
        self.attribute = attribute
        self.owner = owner  # (attribute, the spec's owner), set with each add

    def _set(self, number: str, value: str) -> None:
        path = "/api/v1/updateContactAttributes/"
        params = [{"name": self.attribute, "value": value}]
        if self.owner is not None and value == "true":
            params.append({"name": self.owner[0], "value": self.owner[1]})
        answer = self.destination.call(
            "POST", f"/{self.destination.tenant}{path}{segment(number)}",
            body={"customParams": params},
            where="/{tenant}" + path + "{whatsappNumber}",
        )
        if not isinstance(answer, dict):
            # Wati answers JSON; a 2xx page that is not (a proxy, a login page) did not
            # update anything, so it must not count as delivered.
            raise TerminalError("Wati answered without its JSON result: the contact was not updated")
        if answer.get("result") is False:
            raise TerminalError("Wati did not update the contact (result: false); is the number a Wati contact?")

    def add(self, record: Record) -> str | None:
        number = whatsapp_number(record.fields.get(self.destination.phone_attribute))
        if number is None:
            raise TerminalError(f"attribute {self.destination.phone_attribute!r} has no digits")
        self._set(number, "true")
        return number

    def remove(self, record: Record) -> None:
        if record.remote_id is None:
            raise TerminalError("no WhatsApp number was recorded when this member was added")
        self._set(record.remote_id, "false")


class WatiDestination(ApiDestination):
    type = "wati"
    OPTIONS = (
        Option("base_url", required=True),  # e.g. https://live-mt-server.wati.io
        Option("tenant_id", (str, int), required=True),
        Option("token", required=True, secret=True),
        Option("phone_attribute", default="phone"),
        Option("owner_attribute"),  # a contact attribute set to the spec's owner on each add
    )
    TARGET_OPTIONS = (Option("attribute"),)
    DEFAULT_BATCH_SIZE = 50
    MAX_BATCH_SIZE = 500
    DEFAULT_RATE = 1.0
    DEFAULT_CONCURRENCY = 1

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self.tenant = str(self.options["tenant_id"]).strip()
        if not _TENANT.match(self.tenant):
            raise SegmentsError(f"{self.where}: option 'tenant_id' must be letters, digits, '-' or '_'")

    @property
    def phone_attribute(self) -> str:
        return str(self.options["phone_attribute"])

    def headers(self) -> dict[str, str]:
        return bearer(str(self.options["token"]))

    def fields(self) -> tuple[str, ...]:
        return (self.phone_attribute,)

    def required_fields(self) -> tuple[str, ...]:
        return (self.phone_attribute,)

    def audience(self, segment_name: str, options: Mapping[str, object]) -> Audience:
        return WatiAudience(self, str(options.get("attribute") or f"seg_{segment_name}"), owner_attribute(self.options, options))
