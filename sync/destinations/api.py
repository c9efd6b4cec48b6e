"""Helpers for destinations behind an HTTP API: credentials, URLs, path segments,
contact lookups and audiences made of contacts."""

from __future__ import annotations

import base64
import threading
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from segments.errors import SegmentsError
from sync.destinations.base import Destination, PerRecordAudience
from sync.destinations.batches import Record
from sync.http import HttpClient, TerminalError
from sync.routing import owner_failed


# ---- helpers for destinations behind an HTTP API ---------------------------------------


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a bearer token, pasted with or without its
    ``Bearer`` prefix (vendors' dashboards show both).

    Examples:
        >>> bearer("abc")
        {'Authorization': 'Bearer abc'}
        >>> bearer("Bearer abc ")
        {'Authorization': 'Bearer abc'}
    """
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic authentication.

    Examples:
        >>> basic("site", "key")
        {'Authorization': 'Basic c2l0ZTprZXk='}
    """
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def segment(value: object) -> str:
    """One path segment, every reserved character escaped.

    Examples:
        >>> segment("u/1 x")
        'u%2F1%20x'
    """
    return quote(str(value), safe="")


def is_http_url(value: object) -> bool:
    """True for an ``http://`` or ``https://`` URL naming a host.

    Examples:
        >>> is_http_url("https://hooks.example.com/T0KEN?x=1"), is_http_url("ftp://x"), is_http_url("https:///p")
        (True, False, False)
    """
    parts = urlsplit(str(value).strip())
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def checked_url(value: object, where: str, option: str = "base_url") -> str:
    """An ``http(s)://`` base URL without its trailing slash.

    The value is never echoed: a URL may carry credentials.

    Examples:
        >>> checked_url("https://api.intercom.io/", "destination support")
        'https://api.intercom.io'
        >>> checked_url("api.intercom.io", "destination support")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: destination support: option 'base_url' must be an http:// or https:// URL
    """
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SegmentsError(f"{where}: option {option!r} must be an http:// or https:// URL")
    return text.rstrip("/")


class ApiDestination(Destination):
    """A destination behind a JSON HTTP API: where it lives (``base_url``, or a
    ``region`` of :attr:`REGIONS`), how requests authenticate (:meth:`headers`), and
    :meth:`call`, which sends one request through the shared client.
    """

    REGIONS: ClassVar[Mapping[str, str]] = {}  # region -> base URL, for SaaS vendors

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self.where = f"destination {name}"
        self.base_url = self._base_url()

    def _base_url(self) -> str:
        if self.options.get("base_url"):
            return checked_url(self.options["base_url"], self.where)
        region = self.options.get("region")
        if region not in self.REGIONS:
            known = ", ".join(self.REGIONS) or "none"
            raise SegmentsError(f"{self.where}: unknown region {region!r} (known: {known}); or set base_url")
        return self.REGIONS[str(region)]

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """Authentication and version headers sent with every request."""

    def call(
        self, method: str, path: str, *, body: object = None, params: Mapping[str, object] | None = None,
        where: str | None = None,
    ) -> Any:
        """Send one request to ``base_url + path``; return its JSON answer (None when
        the answer is empty or not JSON).

        Raises:
            TerminalError, TransientError: as :meth:`HttpClient.request`.
        """
        headers = {"Accept": "application/json", **self.headers()}
        response = self.http.request(
            method, self.base_url + path, json=body, params=params, headers=headers, where=where,
        )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None


class ContactIds:
    """A destination's contact ids by user id, looked up at most once per run.

    ``find`` returns the id or None (no such contact); misses are remembered too, so
    a user missing from the platform costs one lookup per run however many segments
    they are in. Safe to share between threads.

    Examples:
        >>> calls = []
        >>> ids = ContactIds(lambda user_id: calls.append(user_id) or {"u1": "c1"}.get(user_id))
        >>> ids.get("u1"), ids.get("u1"), ids.get("u2"), ids.get("u2")
        ('c1', 'c1', None, None)
        >>> calls
        ['u1', 'u2']
    """

    def __init__(self, find: Callable[[str], str | None]):
        self._find = find
        self._ids: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> str | None:
        with self._lock:
            if user_id in self._ids:
                return self._ids[user_id]
        found = self._find(user_id)
        with self._lock:
            self._ids[user_id] = found
        return found

    def remember(self, user_id: str, contact_id: str) -> None:
        with self._lock:
            self._ids[user_id] = contact_id


NOT_FOUND = 404


class ContactAudience(PerRecordAudience):
    """Membership as a mark on a platform's contact (a tag, a label), one contact per
    call: adds find the contact by user id (and return its id, so removes need no
    lookup); a member with no contact there fails alone and is tried again next run.
    A remove whose contact is gone, or never existed, has nothing left to do.
    """

    platform: ClassVar[str]  # in messages: "Intercom", "Chatwoot"

    def __init__(self, contacts: ContactIds, marker: str):
        self.contacts = contacts
        self.marker = marker  # the tag id, the label...

    @abstractmethod
    def mark(self, contact_id: str) -> None:
        """Put the audience's mark on a contact."""

    @abstractmethod
    def unmark(self, contact_id: str) -> None:
        """Take the audience's mark off a contact; a 404 means it is not there."""

    def route(self, contact_id: str) -> None:
        """Set the spec's owner on a contact just marked, where the destination routes
        owners (:mod:`sync.routing`); by default nothing."""

    def mark_and_route(self, contact_id: str) -> None:
        """Mark a contact, then route its owner. An owner that cannot be set fails the
        record (the mark stays: both are tried again next run, and both are idempotent)."""
        self.mark(contact_id)
        self.routed(contact_id)

    def routed(self, contact_id: str) -> None:
        """:meth:`route`, its failure said as the owner's."""
        try:
            self.route(contact_id)
        except TerminalError as error:
            raise owner_failed(error) from None

    def add(self, record: Record) -> str | None:
        contact_id = self.contacts.get(record.user_id)
        if contact_id is None:
            raise TerminalError(f"no {self.platform} contact has this user id", NOT_FOUND)
        self.mark_and_route(contact_id)
        return contact_id

    def remove(self, record: Record) -> None:
        contact_id = record.remote_id or self.contacts.get(record.user_id)
        if contact_id is None:
            return
        try:
            self.unmark(contact_id)
        except TerminalError as error:
            if error.status != NOT_FOUND:
                raise
