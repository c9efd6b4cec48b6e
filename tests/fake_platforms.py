"""Fake messaging platforms on loopback, for the destination tests.

Each fake keeps the state the real platform would (who carries which tag, label,
segment or attribute) and answers with the vendor's documented shapes, installed
as handlers on a ``pytest-httpserver``. :class:`RecordingSession` keeps every request
exactly as it went on the wire, and :func:`openapi` checks those against the
vendors' published OpenAPI descriptions.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

API_SPECS = Path(__file__).resolve().parent / "api_specs"  # vendors' descriptions, see its README


class RecordingSession(requests.Session):
    """A session that keeps every prepared request it sends, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs):  # type: ignore[override]
        self.sent.append(request)
        return super().send(request, **kwargs)

    def calls(self) -> list[tuple[str, str, dict[str, list[str]], object]]:
        """(method, path, query, JSON body or None) of every request sent."""
        out = []
        for request in self.sent:
            parts = urlsplit(request.url)
            query = parse_qs(parts.query)
            body = json.loads(request.body) if request.body else None
            out.append((request.method, parts.path, query, body))
        return out


@functools.cache
def _spec(name: str) -> dict:
    path = API_SPECS / name
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def openapi(name: str, server_url: str) -> OpenAPI:
    """The vendor's description with its servers replaced by the fake's URL.

    The descriptions do not pass a strict check of the whole document (Intercom's
    has an unresolved path parameter elsewhere), so only requests are checked.
    Intercom's ``POST /tags`` body is a ``oneOf`` of payloads that overlap (its
    "Create or Update Tag" payload admits any extra key, so the documented "Tag Users"
    payload matches both and fails a strict ``oneOf``): it is read as the ``anyOf``
    it means, and :func:`tag_users_errors` checks the tagging payload on its own.
    """
    spec = copy.deepcopy(_spec(name))
    spec["servers"] = [{"url": server_url.rstrip("/")}]
    tags = spec.get("paths", {}).get("/tags", {}).get("post")
    if tags is not None:
        body = tags["requestBody"]["content"]["application/json"]["schema"]
        body["anyOf"] = body.pop("oneOf")
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


def tag_users_errors(body: object) -> list[str]:
    """Why ``body`` is not Intercom's "Tag Users Request Payload" (none when it is)."""
    import jsonschema

    schema = _spec("intercom-2.16.yaml")["components"]["schemas"]["tag_multiple_users_request"]
    return [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(body)]


def validate(api: OpenAPI, request: requests.PreparedRequest) -> None:
    """Raise unless ``request`` is one the description allows (path, method,
    parameters, body schema, security)."""
    api.validate_request(RequestsOpenAPIRequest(request))


def _json(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, content_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"type": "error.list", "request_id": "r", "errors": [{"code": code, "message": message}]}, status)


# ---- Intercom ---------------------------------------------------------------------------


@dataclass
class FakeIntercom:
    """Contacts by external_id, tags by name, and which contact carries which tag."""

    contacts: dict[str, str]  # external_id -> contact id
    tags: dict[str, str] = field(default_factory=dict)  # name -> tag id
    tagged: dict[str, set[str]] = field(default_factory=dict)  # contact id -> tag ids
    lookups: list[str] = field(default_factory=list)  # external ids looked up, in order
    throttle_next: int = 0  # answer this many requests with 429 first
    bulk_tags: list[int] = field(default_factory=list)  # contacts per POST /tags, in order
    owners: dict[str, str] = field(default_factory=dict)  # contact id -> owner_id (admin)
    refuse_owner: bool = False  # answer owner updates with 400, as for an id that is no admin

    def install(self, server: HTTPServer) -> FakeIntercom:
        server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self.handle)
        return self

    def members(self, tag_name: str) -> set[str]:
        tag_id = self.tags.get(tag_name)
        by_id = {v: k for k, v in self.contacts.items()}
        return {by_id[c] for c, tags in self.tagged.items() if tag_id in tags}

    def handle(self, request: Request) -> Response:
        if self.throttle_next:
            self.throttle_next -= 1
            return _error(429, "rate_limit_exceeded", "Exceeded rate limit")
        path, method = request.path, request.method
        if path == "/tags" and method == "POST":
            body = request.get_json()
            name = body["name"]
            users = [user["id"] for user in body.get("users", [])]
            if any(contact_id not in self.contacts.values() for contact_id in users):
                return _error(404, "not_found", "User Not Found")  # the whole call is refused
            tag_id = self.tags.setdefault(name, str(100 + len(self.tags)))
            self.bulk_tags.append(len(users))
            for contact_id in users:
                self.tagged.setdefault(contact_id, set()).add(tag_id)
            return _json({"type": "tag", "id": tag_id, "name": name})
        if match := re.fullmatch(r"/contacts/find_by_external_id/([^/]+)", path):
            external_id = match.group(1)
            self.lookups.append(external_id)
            if external_id not in self.contacts:
                return _error(404, "not_found", "User Not Found")
            return _json({"type": "contact", "id": self.contacts[external_id], "external_id": external_id, "role": "user"})
        if (match := re.fullmatch(r"/contacts/([^/]+)", path)) and method == "PUT":
            contact_id = match.group(1)
            if contact_id not in self.contacts.values():
                return _error(404, "not_found", "User Not Found")
            if self.refuse_owner:
                return _error(400, "parameter_invalid", "owner_id is not an admin")
            self.owners[contact_id] = request.get_json()["owner_id"]
            return _json({"type": "contact", "id": contact_id, "owner_id": self.owners[contact_id]})
        if match := re.fullmatch(r"/contacts/([^/]+)/tags(?:/([^/]+))?", path):
            contact_id, tag_id = match.groups()
            if contact_id not in self.contacts.values():
                return _error(404, "not_found", "User Not Found")
            tags = self.tagged.setdefault(contact_id, set())
            if method == "POST":
                tags.add(request.get_json()["id"])
                return _json({"type": "tag", "id": request.get_json()["id"], "name": "x"})
            if method == "DELETE" and tag_id is not None:
                tags.discard(tag_id)
                return _json({"type": "tag", "id": tag_id, "name": "x"})
        return _error(400, "bad_request", f"unexpected {method} {path}")


# ---- Chatwoot ---------------------------------------------------------------------------

CHATWOOT_PAGE = 15


@dataclass
class FakeChatwoot:
    """An account's contacts, the labels it defines, and each contact's labels.

    Like Chatwoot, the labels POST replaces a contact's set and drops labels the
    account does not define; search is a substring match over name, email, phone
    and identifier, 15 a page.
    """

    account_id: int
    contacts: list[dict[str, object]]  # {"id", "identifier", "name", "email", ...}
    account_labels: set[str] = field(default_factory=set)
    labels: dict[int, list[str]] = field(default_factory=dict)  # contact id -> labels
    admin: bool = True  # may create account labels
    searches: list[tuple[str, int]] = field(default_factory=list)
    #: contact id -> custom attributes (a contact update merges them, as Chatwoot does)
    custom_attributes: dict[int, dict[str, object]] = field(default_factory=dict)
    refuse_update: bool = False  # answer contact updates with 422, as for an undefined attribute

    def install(self, server: HTTPServer) -> FakeChatwoot:
        server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self.handle)
        return self

    def members(self, label: str) -> set[str]:
        by_id = {c["id"]: c["identifier"] for c in self.contacts}
        return {str(by_id[c]) for c, labels in self.labels.items() if label in labels}

    def handle(self, request: Request) -> Response:
        prefix = f"/api/v1/accounts/{self.account_id}"
        path, method = request.path, request.method
        if not path.startswith(prefix):
            return _json({"error": "not found"}, 404)
        path = path[len(prefix):]
        if path == "/contacts/search" and method == "GET":
            q, page = request.args["q"].lower(), int(request.args.get("page", 1))
            self.searches.append((request.args["q"], page))
            hits = [c for c in self.contacts if any(q in str(c.get(k) or "").lower()
                                                    for k in ("name", "email", "phone_number", "identifier"))]
            chunk = hits[(page - 1) * CHATWOOT_PAGE: page * CHATWOOT_PAGE]
            return _json({"meta": {"count": len(hits), "current_page": page}, "payload": chunk})
        if path == "/labels":
            if method == "GET":
                return _json({"payload": [{"id": i, "title": t} for i, t in enumerate(sorted(self.account_labels))]})
            if not self.admin:
                return _json({"error": "You are not authorized to do this action"}, 401)
            self.account_labels.add(request.get_json()["title"])
            return _json({"id": len(self.account_labels), "title": request.get_json()["title"]})
        if (match := re.fullmatch(r"/contacts/(\d+)", path)) and method == "PUT":
            contact_id = int(match.group(1))
            if contact_id not in {c["id"] for c in self.contacts}:
                return _json({"error": "Resource could not be found"}, 404)
            if self.refuse_update:
                return _json({"message": "Custom attributes is invalid"}, 422)
            attributes = self.custom_attributes.setdefault(contact_id, {})
            attributes.update(request.get_json().get("custom_attributes") or {})
            return _json({"id": contact_id, "custom_attributes": attributes})
        if match := re.fullmatch(r"/contacts/(\d+)/labels", path):
            contact_id = int(match.group(1))
            if contact_id not in {c["id"] for c in self.contacts}:
                return _json({"error": "Resource could not be found"}, 404)
            if method == "POST":
                wanted = request.get_json()["labels"]
                self.labels[contact_id] = [label for label in wanted if label in self.account_labels]
            return _json({"payload": self.labels.get(contact_id, [])})
        return _json({"error": f"unexpected {method} {path}"}, 400)


# ---- Customer.io, Braze, Wati --------------------------------------------------------


@dataclass
class FakeCustomerIo:
    """Manual segments by id: the set of people (ids of one id_type) in each."""

    segments: dict[int, set[str]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)  # "add" / "remove" / "identify": answer those with 400
    #: identifier (as in the path: an id, an email, cio_<id>) -> attributes, merged as identify does
    people: dict[str, dict[str, object]] = field(default_factory=dict)

    def install(self, server: HTTPServer) -> FakeCustomerIo:
        server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self.handle)
        return self

    def handle(self, request: Request) -> Response:
        person = re.fullmatch(r"/api/v1/customers/([^/]+)", request.path)
        if person is not None and request.method == "PUT":
            body = request.get_json()
            if "identify" in self.refuse or not isinstance(body, dict):
                return _json({"meta": {"error": "invalid attributes"}}, 400)
            self.people.setdefault(person.group(1), {}).update(body)  # werkzeug decodes the path
            return _json({})
        match = re.fullmatch(r"/api/v1/segments/(\d+)/(add|remove)_customers", request.path)
        if match is None or request.method != "POST":
            return _json({"meta": {"error": "not found"}}, 404)
        segment_id, operation = int(match.group(1)), match.group(2)
        if operation in self.refuse:
            return _json({"meta": {"error": "segment is not a manual segment"}}, 400)
        ids = request.get_json()["ids"]
        if not 1 <= len(ids) <= 1000:
            return _json({"meta": {"error": "ids: 1 to 1000"}}, 400)
        members = self.segments.setdefault(segment_id, set())
        (members.update if operation == "add" else members.difference_update)(ids)
        return _json({})


@dataclass
class FakeBraze:
    """User profiles' array attributes; ``refuse`` external ids get a per-object error."""

    profiles: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)

    def install(self, server: HTTPServer) -> FakeBraze:
        server.expect_request("/users/track", method="POST").respond_with_handler(self.handle)
        return self

    def members(self, attribute: str, value: str) -> set[str]:
        return {uid for uid, attrs in self.profiles.items() if value in attrs.get(attribute, [])}

    def handle(self, request: Request) -> Response:
        objects = request.get_json()["attributes"]
        if len(objects) > 75:
            return _json({"message": "Too many attribute objects", "errors": []}, 400)
        errors = []
        for index, obj in enumerate(objects):
            uid = obj["external_id"]
            if uid in self.refuse:
                errors.append({"type": "'external_id' is not valid", "input_array": "attributes", "index": index})
                continue
            if obj.get("_update_existing_only") and uid not in self.profiles:
                continue
            profile = self.profiles.setdefault(uid, {})
            for key, change in obj.items():
                if isinstance(change, dict):
                    values = profile.setdefault(key, [])
                    values += [v for v in change.get("add", []) if v not in values]
                    profile[key] = [v for v in values if v not in change.get("remove", [])]
        body: dict[str, object] = {"message": "success", "attributes_processed": len(objects) - len(errors)}
        if errors:
            body["errors"] = errors
        return _json(body, 201)


@dataclass
class FakeWati:
    """WhatsApp contacts by number, each with its custom attributes."""

    tenant: str
    contacts: dict[str, dict[str, str]]  # number -> {attribute: value}

    def install(self, server: HTTPServer) -> FakeWati:
        server.expect_request(re.compile(r"^/.*$")).respond_with_handler(self.handle)
        return self

    def members(self, attribute: str) -> set[str]:
        return {n for n, attrs in self.contacts.items() if attrs.get(attribute) == "true"}

    def handle(self, request: Request) -> Response:
        match = re.fullmatch(rf"/{re.escape(self.tenant)}/api/v1/updateContactAttributes/([^/]+)", request.path)
        if match is None or request.method != "POST":
            return _json({"result": False, "info": "Not found"}, 404)
        number = match.group(1)
        if number not in self.contacts:
            return _json({"result": False, "info": f"Invalid Contact {number}"})
        for param in request.get_json()["customParams"]:
            self.contacts[number][param["name"]] = param["value"]
        return _json({"result": True})
