"""The ``chatwoot`` destination: membership as a contact label.

Each segment is one label (the sync entry's ``label:``, by default the segment's
name, made into what Chatwoot accepts: see :func:`label_title`). Chatwoot drops
labels the account does not define without a word, so the audience first makes sure
the label exists (``GET``, then ``POST /labels`` if missing, which needs an
administrator's token).

``POST /contacts/{id}/labels`` replaces a contact's whole label set, so every change
reads the contact's labels, adds or removes our one label, keeps every other label,
and writes the set back only when it changed. (An agent editing the same contact's
labels between our read and write can still lose that edit: the API has no
conditional update.)

A member is the contact whose ``identifier`` is the user id. The only lookup is
``GET /contacts/search?q=``: a substring search over names, emails, phones and
identifiers, 15 contacts a page, limited to 100 calls a minute per account. So the
destination pages through the matches for the exact identifier, at most
``max_search_pages`` pages, paces searches on their own limiter, and remembers every
answer for the run; the contact id is returned as the member's remote id, so removes
need no search at all.

Owner routing (:mod:`sync.routing`): a Chatwoot contact has no owner or assignee (a
conversation has an assignee, and a contact has none, one or many conversations), so
the destination's ``owner_attribute:`` names a contact custom attribute that each add
sets to the spec's owner (``PUT /contacts/{id}`` with ``custom_attributes``, which
Chatwoot merges into the contact's others). Define it in the account (Settings >
Custom Attributes, a text attribute of contacts); an automation rule can then assign
the contact's new conversations by it.

Limits (Chatwoot's self-hosted defaults): 3,000 requests a minute per IP, contact
search 100 a minute per account, 429 without Retry-After. We default to 45 requests
and 1.5 searches a second (90%), 4 in flight.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping

from segments.errors import SegmentsError
from sync.destinations.api import ApiDestination, ContactAudience, ContactIds, segment
from sync.destinations.base import Audience
from sync.destinations.options import Option
from sync.http import AuthError, HttpClient, RateLimiter, TerminalError
from sync.routing import owner_attribute

PAGE_SIZE = 15  # contacts per search page, fixed by Chatwoot
_NOT_IN_LABEL = re.compile(r"[^\w-]+")


def label_title(name: str, where: str) -> str:
    """``name`` as a Chatwoot label title: lower case; letters, digits, ``_`` and
    ``-``, starting with a letter or digit; at least two characters.

    Examples:
        >>> label_title("rfm__champions", "d")
        'rfm__champions'
        >>> label_title("Abandoned Cart!", "d")
        'abandoned-cart'
        >>> label_title("_x", "destination support")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: destination support: label '_x' has fewer than two letters or digits Chatwoot accepts
    """
    title = _NOT_IN_LABEL.sub("-", name.strip().lower()).strip("-").lstrip("_-")
    if len(title) < 2:
        raise SegmentsError(f"{where}: label {name!r} has fewer than two letters or digits Chatwoot accepts")
    return title


class ChatwootAudience(ContactAudience):
    platform = "Chatwoot"

    def __init__(self, destination: ChatwootDestination, label: str, owner: tuple[str, str] | None = None):
        super().__init__(destination.contacts, label)
        self.destination = destination
        self.owner = owner  # (custom attribute, the spec's owner), set with each add

    def route(self, contact_id: str) -> None:
        if self.owner is not None:
            attribute, owner = self.owner
            self.destination.call("PUT", f"{self.destination.account_path}/contacts/{segment(contact_id)}",
                                  body={"custom_attributes": {attribute: owner}})

    def _labels_path(self, contact_id: str) -> str:
        return f"{self.destination.account_path}/contacts/{segment(contact_id)}/labels"

    def _labels(self, contact_id: str) -> list[str]:
        answer = self.destination.call("GET", self._labels_path(contact_id))
        labels = answer.get("payload") if isinstance(answer, dict) else None
        if not isinstance(labels, list):
            raise TerminalError(f"{self.destination.where}: a contact's labels came back without a payload list")
        return [str(label) for label in labels]

    def _write(self, contact_id: str, labels: list[str]) -> list[str] | None:
        answer = self.destination.call("POST", self._labels_path(contact_id), body={"labels": labels})
        written = answer.get("payload") if isinstance(answer, dict) else None
        return [str(label) for label in written] if isinstance(written, list) else None

    def mark(self, contact_id: str) -> None:
        labels = self._labels(contact_id)
        if self.marker in labels:
            return
        written = self._write(contact_id, [*labels, self.marker])
        if written is not None and self.marker not in written:
            raise TerminalError(f"Chatwoot dropped label {self.marker!r}: it is not defined in the account")

    def unmark(self, contact_id: str) -> None:
        labels = self._labels(contact_id)
        if self.marker in labels:
            self._write(contact_id, [label for label in labels if label != self.marker])


class ChatwootDestination(ApiDestination):
    type = "chatwoot"
    OPTIONS = (
        Option("base_url", required=True),
        Option("account_id", (int, str), required=True),
        Option("api_access_token", required=True, secret=True),
        Option("search_rate_limit", (int, float), default=1.5),  # contact searches per second
        Option("max_search_pages", int, default=10),
        Option("owner_attribute"),  # a contact custom attribute set to the spec's owner on each add
    )
    TARGET_OPTIONS = (Option("label"),)
    DEFAULT_BATCH_SIZE = 100
    MAX_BATCH_SIZE = 1_000
    DEFAULT_RATE = 45.0
    DEFAULT_CONCURRENCY = 4

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        account = str(self.options["account_id"]).strip()
        if not account.isdigit():
            raise SegmentsError(f"{self.where}: option 'account_id' must be the account's number")
        self.account_path = f"/api/v1/accounts/{account}"
        self.search_limiter = RateLimiter(float(self.options["search_rate_limit"]), clock=http.clock)  # type: ignore[arg-type]
        self.max_search_pages = max(1, int(self.options["max_search_pages"]))  # type: ignore[call-overload]
        self.contacts = ContactIds(self.find_contact)
        self._labels: set[str] | None = None
        self._labels_lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        return {"api_access_token": str(self.options["api_access_token"]).strip()}

    def find_contact(self, user_id: str) -> str | None:
        """The id of the contact whose identifier is exactly ``user_id``, or None."""
        for page in range(1, self.max_search_pages + 1):
            self.search_limiter.acquire()
            answer = self.call("GET", f"{self.account_path}/contacts/search", params={"q": user_id, "page": page})
            contacts = answer.get("payload") if isinstance(answer, dict) else None
            if not isinstance(contacts, list):
                raise TerminalError(f"{self.where}: a contact search came back without a payload list")
            for contact in contacts:
                if isinstance(contact, dict) and contact.get("identifier") == user_id and contact.get("id") is not None:
                    return str(contact["id"])
            if len(contacts) < PAGE_SIZE:
                return None
        raise TerminalError(
            f"{self.where}: searching contacts for this user id matched more than "
            f"{self.max_search_pages * PAGE_SIZE} contacts; raise max_search_pages"
        )

    def ensure_label(self, title: str) -> None:
        """Define the label in the account unless it is there already."""
        with self._labels_lock:
            if self._labels is None:
                answer = self.call("GET", f"{self.account_path}/labels")
                listed = answer.get("payload") if isinstance(answer, dict) else None
                self._labels = {str(item.get("title")) for item in listed or [] if isinstance(item, dict)}
            if title in self._labels:
                return
            try:
                self.call("POST", f"{self.account_path}/labels",
                          body={"title": title, "description": "Segment membership, kept in sync by segments"})
            except (TerminalError, AuthError) as error:  # agents' tokens may not create labels
                raise TerminalError(
                    f"{self.where}: label {title!r} is not defined in the account and creating it failed ({error}); "
                    "create it under Settings > Labels or use an administrator's token",
                    error.status,
                ) from None
            self._labels.add(title)

    def audience(self, segment_name: str, options: Mapping[str, object]) -> Audience:
        title = label_title(str(options.get("label") or segment_name), f"segment {segment_name}: sync to {self.name}")
        self.ensure_label(title)
        return ChatwootAudience(self, title, owner_attribute(self.options, options))
