"""The ``intercom`` destination: membership as a contact tag.

Each segment is one tag (the sync entry's ``tag:``, by default the segment's name),
found or created once with ``POST /tags``. A member is the Intercom contact whose
``external_id`` is the user id, found with ``GET /contacts/find_by_external_id/{id}``
(exact and immediately consistent, unlike the search index) and remembered for the
run; the contact id is returned as the member's remote id, so removes untag it with
no lookup. A batch's adds are tagged in one bulk call, ``POST /tags``
``{"name": tag, "users": [{"id": contact_id}, ...]}`` (the "Tag Users Request Payload"
of Intercom's OpenAPI description); if Intercom refuses it (a contact deleted since
its lookup), the batch's contacts are tagged one by one with ``POST
/contacts/{id}/tags`` ``{"id": tag_id}``, so only the refused ones fail. Untagging has
no bulk form for contacts: ``DELETE /contacts/{id}/tags/{tag_id}``, one per member.
With ``owners:`` (spec owner -> admin id), each add also sets the contact's
``owner_id`` to the spec owner's admin (``PUT /contacts/{id}``; see :mod:`sync.routing`).
All are idempotent, so a batch replayed after a crash does no harm.

Limits (Intercom's docs): 10,000 calls a minute per app, counted over 10-second
windows, answered with 429 and ``X-RateLimit-Reset``; we default to 150 calls a
second (90% of it), 8 in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from sync.destinations.api import NOT_FOUND, ApiDestination, ContactAudience, ContactIds, bearer, segment
from sync.destinations.base import Audience
from sync.destinations.batches import Batch, BatchResult, RecordFailure
from sync.destinations.options import Option
from sync.http import HttpClient, TerminalError
from sync.routing import admin_id, owner_of

API_VERSION = "2.16"


class IntercomAudience(ContactAudience):
    platform = "Intercom"

    def __init__(self, destination: IntercomDestination, tag_name: str, tag_id: str, owner_id: str | None = None):
        super().__init__(destination.contacts, tag_id)
        self.tag_name = tag_name
        self.owner_id = owner_id  # the admin the spec's owner maps to (owners:), set on each add
        self.call = destination.call

    def send(self, batch: Batch) -> BatchResult:
        """Look the adds' contacts up, tag them in one ``POST /tags``, then untag the
        removes one by one (:class:`ContactAudience`)."""
        result = super().send(replace(batch, added=()))
        found: list[tuple[str, str]] = []  # (user id, contact id)
        for record in batch.added:
            try:
                contact_id = self.contacts.get(record.user_id)
            except TerminalError as error:
                result.failures.append(RecordFailure(record.user_id, "add", error.status, str(error)))
                continue
            if contact_id is None:
                result.failures.append(RecordFailure(record.user_id, "add", NOT_FOUND, f"no {self.platform} contact has this user id"))
                continue
            found.append((record.user_id, contact_id))
        if not found:
            return result
        try:
            self.call("POST", "/tags", body={"name": self.tag_name, "users": [{"id": c} for _, c in found]})
        except TerminalError:
            # one bad contact refuses the whole call: tag each, so only it fails
            tagged = []
            for user_id, contact_id in found:
                try:
                    self.mark(contact_id)
                except TerminalError as error:
                    result.failures.append(RecordFailure(user_id, "add", error.status, str(error)))
                    continue
                tagged.append((user_id, contact_id))
            found = tagged
        for user_id, contact_id in found:
            try:
                self.routed(contact_id)
            except TerminalError as error:  # tagged, not routed: tried again next run
                result.failures.append(RecordFailure(user_id, "add", error.status, str(error)))
                continue
            result.remote_ids[user_id] = contact_id
        return result

    def route(self, contact_id: str) -> None:
        """Make the owner's admin the contact's owner (``PUT /contacts/{id}``)."""
        if self.owner_id is not None:
            self.call("PUT", f"/contacts/{segment(contact_id)}", body={"owner_id": self.owner_id})

    def mark(self, contact_id: str) -> None:
        self.call("POST", f"/contacts/{segment(contact_id)}/tags", body={"id": self.marker})

    def unmark(self, contact_id: str) -> None:
        self.call("DELETE", f"/contacts/{segment(contact_id)}/tags/{segment(self.marker)}")


class IntercomDestination(ApiDestination):
    type = "intercom"
    OPTIONS = (
        Option("token", required=True, secret=True),
        Option("region", default="us"),
        Option("base_url"),
        Option("owners", dict),  # spec owner -> Intercom admin id, set as the contact's owner_id
    )
    TARGET_OPTIONS = (Option("tag"),)
    REGIONS = {
        "us": "https://api.intercom.io",
        "eu": "https://api.eu.intercom.io",
        "au": "https://api.au.intercom.io",
    }
    DEFAULT_BATCH_SIZE = 100
    MAX_BATCH_SIZE = 1_000
    DEFAULT_RATE = 150.0
    DEFAULT_CONCURRENCY = 8

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self.contacts = ContactIds(self.find_contact)
        self._tags: dict[str, str] = {}
        self._tags_lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        return {**bearer(str(self.options["token"])), "Intercom-Version": API_VERSION}

    def find_contact(self, user_id: str) -> str | None:
        """The id of the user contact whose external_id is ``user_id``, or None."""
        try:
            contact = self.call("GET", f"/contacts/find_by_external_id/{segment(user_id)}")
        except TerminalError as error:
            if error.status == NOT_FOUND:
                return None
            raise
        if not isinstance(contact, dict) or not contact.get("id"):
            raise TerminalError(f"{self.where}: a contact lookup answered without a contact id")
        return str(contact["id"])

    def tag_id(self, name: str) -> str:
        """The id of the tag ``name``, created if missing (``POST /tags`` finds or creates)."""
        with self._tags_lock:
            if name not in self._tags:
                tag = self.call("POST", "/tags", body={"name": name})
                if not isinstance(tag, dict) or not tag.get("id"):
                    raise TerminalError(f"{self.where}: creating tag {name!r} answered without a tag id")
                self._tags[name] = str(tag["id"])
            return self._tags[name]

    def audience(self, segment_name: str, options: Mapping[str, object]) -> Audience:
        name = str(options.get("tag") or segment_name)
        return IntercomAudience(self, name, self.tag_id(name), admin_id(self.options.get("owners"), owner_of(options)))
