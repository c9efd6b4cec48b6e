"""The platform destinations against fake platforms on loopback.

Request shapes (method, path, query, headers, body) per destination, the Intercom and
Chatwoot requests checked against the vendors' OpenAPI descriptions, lookups and their
caching, per-record failures, batching limits, configuration errors, and no secret or
PII in any message. Nothing reaches the network and nothing really sleeps: the HTTP
client runs on a fake clock.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
from fake_platforms import (
    FakeBraze,
    FakeChatwoot,
    FakeCustomerIo,
    FakeIntercom,
    FakeWati,
    RecordingSession,
    openapi,
    tag_users_errors,
    validate,
)
from openapi_core.exceptions import OpenAPIError
from werkzeug import Response

from segments.errors import SegmentsError
from segments.spec.nodes import DESTINATION_TYPES
from sync.destinations import REGISTRY
from sync.destinations.base import Destination
from sync.destinations.batches import Batch, BatchResult, Record
from sync.destinations.options import resolve_options
from sync.http import Clock, HttpClient, RetryPolicy, SinkError, TransientError

ENV = {
    "INTERCOM_TOKEN": "tok-intercom-SECRET",
    "CHATWOOT_TOKEN": "tok-chatwoot-SECRET",
    "CIO_SITE_ID": "site-SECRET",
    "CIO_API_KEY": "key-cio-SECRET",
    "BRAZE_API_KEY": "key-braze-SECRET",
    "WATI_TOKEN": "Bearer tok-wati-SECRET",  # pasted with its prefix, as Wati's dashboard shows it
}
SECRETS = ("SECRET",)
PHONE, PHONE_DIGITS = "+91 98765-43210", "919876543210"
EMAIL = "asha@example.com"


@dataclass
class FakeClock:
    now: float = 1_700_000_000.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.now, wall=lambda: self.now, sleep=self.sleep)


@pytest.fixture
def session():
    with RecordingSession() as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def retried() -> list[str]:
    return []


@pytest.fixture
def http(session, clock, retried) -> HttpClient:
    return HttpClient(
        session, policy=RetryPolicy(attempts=3, initial_wait=0.5, max_wait=60, jitter=0), clock=clock.clock(),
        on_retry=lambda error, wait: retried.append(str(error)),
    )


def options_for(type_: str, url: str) -> dict[str, object]:
    """A destination's options as a user writes them in _destinations.yml."""
    return {
        "intercom": {"token": "${INTERCOM_TOKEN}", "base_url": url},
        "chatwoot": {"base_url": url, "account_id": 3, "api_access_token": "${CHATWOOT_TOKEN}"},
        "customerio": {"site_id": "${CIO_SITE_ID}", "api_key": "${CIO_API_KEY}", "base_url": url},
        "braze": {"base_url": url, "api_key": "${BRAZE_API_KEY}"},
        "wati": {"base_url": url, "tenant_id": "12345", "token": "${WATI_TOKEN}"},
    }[type_]


def make(type_: str, options: dict[str, object], http: HttpClient) -> Destination:
    """What the engine does: check and resolve the options, then build the destination."""
    cls = REGISTRY[type_]
    return cls(type_, resolve_options(cls.declared_options(), options, f"destination {type_}", ENV), http)


def batch(added=(), removed=(), segment: str = "cart") -> Batch:
    return Batch("dest", segment, "sync-1", "msg_1", tuple(added), tuple(removed))


def add(user_id: str, **fields: object) -> Record:
    return Record(user_id, fields)


def rm(user_id: str, remote_id: str | None = None) -> Record:
    return Record(user_id, remote_id=remote_id)


def failed(result: BatchResult) -> dict[str, tuple[str, int | None]]:
    return {f.user_id: (f.operation, f.status) for f in result.failures}


def test_every_type_the_parser_accepts_is_registered():
    assert sorted(REGISTRY) == sorted(DESTINATION_TYPES)


# ---- request shapes, one table for all five ----------------------------------------------

AUTH = {
    "intercom": {"Authorization": "Bearer tok-intercom-SECRET", "Intercom-Version": "2.16"},
    "chatwoot": {"api_access_token": "tok-chatwoot-SECRET"},
    "customerio": {"Authorization": "Basic " + base64.b64encode(b"site-SECRET:key-cio-SECRET").decode()},
    "braze": {"Authorization": "Bearer key-braze-SECRET"},
    "wati": {"Authorization": "Bearer tok-wati-SECRET"},
}


@dataclass
class Shape:
    type: str
    fake: Callable[[], object]
    target: dict[str, object]
    batch: Batch
    calls: list[tuple[str, str, dict[str, list[str]], object]]
    remote_ids: dict[str, str] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)


SHAPES = [
    Shape(
        "intercom", lambda: FakeIntercom({"u1": "c1", "u2": "c2"}), {"tag": "Cart abandoners"},
        batch([add("u1")], [rm("u2", "c2")]),
        [("POST", "/tags", {}, {"name": "Cart abandoners"}),
         ("DELETE", "/contacts/c2/tags/100", {}, None),
         ("GET", "/contacts/find_by_external_id/u1", {}, None),
         ("POST", "/tags", {}, {"name": "Cart abandoners", "users": [{"id": "c1"}]})],
        {"u1": "c1"},
    ),
    Shape(
        "chatwoot",
        lambda: FakeChatwoot(3, [{"id": 7, "identifier": "u1", "name": "A"}, {"id": 9, "identifier": "u2", "name": "B"}],
                             account_labels={"cart", "vip"}, labels={9: ["vip", "cart"]}),
        {}, batch([add("u1")], [rm("u2", "9")]),
        [("GET", "/api/v1/accounts/3/labels", {}, None),
         ("GET", "/api/v1/accounts/3/contacts/search", {"q": ["u1"], "page": ["1"]}, None),
         ("GET", "/api/v1/accounts/3/contacts/7/labels", {}, None),
         ("POST", "/api/v1/accounts/3/contacts/7/labels", {}, {"labels": ["cart"]}),
         ("GET", "/api/v1/accounts/3/contacts/9/labels", {}, None),
         ("POST", "/api/v1/accounts/3/contacts/9/labels", {}, {"labels": ["vip"]})],
        {"u1": "7"},
    ),
    Shape(
        "customerio", FakeCustomerIo, {"segment_id": 42}, batch([add("u1"), add("u2")], [rm("u3")]),
        [("POST", "/api/v1/segments/42/add_customers", {"id_type": ["id"]}, {"ids": ["u1", "u2"]}),
         ("POST", "/api/v1/segments/42/remove_customers", {"id_type": ["id"]}, {"ids": ["u3"]})],
    ),
    Shape(
        "customerio", FakeCustomerIo, {"segment_id": 42}, batch([add("u1", email=EMAIL)], [rm("u3", "old@example.com")]),
        [("POST", "/api/v1/segments/42/add_customers", {"id_type": ["email"]}, {"ids": [EMAIL]}),
         ("POST", "/api/v1/segments/42/remove_customers", {"id_type": ["email"]}, {"ids": ["old@example.com"]})],
        {"u1": EMAIL}, {"id_type": "email"},
    ),
    Shape(
        "braze", FakeBraze, {"value": "VIP"}, batch([add("u1")], [rm("u2")]),
        [("POST", "/users/track", {}, {"attributes": [
            {"external_id": "u1", "segments": {"add": ["VIP"]}},
            {"external_id": "u2", "segments": {"remove": ["VIP"]}}]})],
    ),
    Shape(
        "braze", FakeBraze, {}, batch([add("u1")]),
        [("POST", "/users/track", {}, {"attributes": [
            {"external_id": "u1", "tiers": {"add": ["cart"]}, "_update_existing_only": True}]})],
        options={"attribute": "tiers", "update_existing_only": True},
    ),
    Shape(
        "wati", lambda: FakeWati("12345", {PHONE_DIGITS: {}, "919811111111": {"seg_cart": "true"}}), {},
        batch([add("u1", phone=PHONE)], [rm("u2", "919811111111")]),
        [("POST", f"/12345/api/v1/updateContactAttributes/{PHONE_DIGITS}", {},
          {"customParams": [{"name": "seg_cart", "value": "true"}]}),
         ("POST", "/12345/api/v1/updateContactAttributes/919811111111", {},
          {"customParams": [{"name": "seg_cart", "value": "false"}]})],
        {"u1": PHONE_DIGITS},
    ),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s.type}-{'-'.join(map(str, s.options.values())) or 'default'}")
def test_request_shapes(shape: Shape, httpserver, session, http):
    shape.fake().install(httpserver)
    destination = make(shape.type, {**options_for(shape.type, httpserver.url_for("/")), **shape.options}, http)
    result = destination.audience("cart", shape.target).send(shape.batch)
    assert result.failures == []
    assert result.remote_ids == shape.remote_ids
    assert session.calls() == shape.calls
    for request in session.sent:
        for name, value in AUTH[shape.type].items():
            assert request.headers[name] == value
        if request.body:
            assert request.headers["Content-Type"] == "application/json"


# ---- checked against the vendors' OpenAPI descriptions -----------------------------------


def intercom_run(httpserver, http) -> None:
    FakeIntercom({"u1": "c1", "u2": "c2"}).install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    destination.audience("cart", {}).send(batch([add("u1"), add("nobody")], [rm("u2", "c2"), rm("u3")]))


def chatwoot_run(httpserver, http) -> None:
    FakeChatwoot(3, [{"id": 7, "identifier": "u1"}, {"id": 9, "identifier": "u2"}], labels={9: ["cart"]}).install(httpserver)
    destination = make("chatwoot", options_for("chatwoot", httpserver.url_for("/")), http)
    destination.audience("cart", {}).send(batch([add("u1")], [rm("u2", "9")]))


def wrong(url: str, method: str, path: str, headers: dict[str, str], body: object = None) -> requests.PreparedRequest:
    return requests.Request(method, url.rstrip("/") + path, headers=headers, json=body).prepare()


OPENAPI_CASES = [
    pytest.param(
        "intercom-2.16.yaml", intercom_run,
        {"POST /tags", "GET /contacts/find_by_external_id/u1", "GET /contacts/find_by_external_id/nobody",
         "GET /contacts/find_by_external_id/u3", "DELETE /contacts/c2/tags/100"},
        [("POST", "/tags", AUTH["intercom"], {"users": [{"id": "c1"}]}),  # the tag's name is required
         ("POST", "/contacts/c1/tags", AUTH["intercom"], {"id": 100}),  # the tag id must be a string
         ("POST", "/contacts/c1/tags", {"Intercom-Version": "2.16"}, {"id": "100"}),  # no bearer token
         ("POST", "/contacts/c1/tags", {**AUTH["intercom"], "Intercom-Version": "2.99"}, {"id": "100"}),
         ("PUT", "/contacts/c1/tags/100", AUTH["intercom"], None)],
        id="intercom",
    ),
    pytest.param(
        "chatwoot.json", chatwoot_run,
        {"GET /api/v1/accounts/3/labels", "POST /api/v1/accounts/3/labels", "GET /api/v1/accounts/3/contacts/search",
         "GET /api/v1/accounts/3/contacts/7/labels", "POST /api/v1/accounts/3/contacts/7/labels",
         "GET /api/v1/accounts/3/contacts/9/labels", "POST /api/v1/accounts/3/contacts/9/labels"},
        [("POST", "/api/v1/accounts/3/contacts/7/labels", AUTH["chatwoot"], {"labels": "cart"}),  # not an array
         ("POST", "/api/v1/accounts/3/contacts/7/labels", AUTH["chatwoot"], {"label": ["cart"]}),  # no labels
         ("POST", "/api/v1/accounts/3/contacts/7/labels", {}, {"labels": ["cart"]}),  # no token
         ("GET", "/api/v1/accounts/three/contacts/7/labels", AUTH["chatwoot"], None)],  # account id not a number
        id="chatwoot",
    ),
]


@pytest.mark.parametrize(("spec", "run", "operations", "bad"), OPENAPI_CASES)
def test_requests_match_the_vendors_openapi(spec, run, operations, bad, httpserver, session, http):
    run(httpserver, http)
    api = openapi(spec, httpserver.url_for("/"))
    sent = {f"{r.method} {requests.utils.urlparse(r.url).path}" for r in session.sent}
    assert sent == operations  # every kind of call the destination makes was checked
    for request in session.sent:
        validate(api, request)
    for method, path, headers, body in bad:  # the check can fail
        with pytest.raises(OpenAPIError):
            validate(api, wrong(httpserver.url_for("/"), method, path, headers, body))


# ---- Intercom --------------------------------------------------------------------------


def test_intercom_looks_each_user_up_once_per_run_and_removes_by_remote_id(httpserver, http):
    fake = FakeIntercom({"u1": "c1", "u2": "c2", "u3": "c3"}).install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    first, second = destination.audience("cart", {}), destination.audience("vip", {"tag": "VIP"})
    assert first.send(batch([add("u1"), add("u2")])).remote_ids == {"u1": "c1", "u2": "c2"}
    assert second.send(batch([add("u1"), add("nobody")])).failures[0].user_id == "nobody"
    second.send(batch([add("nobody")]))
    assert fake.lookups == ["u1", "u2", "nobody"]  # u1 and the miss are remembered
    first.send(batch(removed=[rm("u3", "c3"), rm("u2")]))  # u3 by its remote id; u2 from the run's cache
    assert fake.lookups == ["u1", "u2", "nobody"]
    assert fake.members("cart") == {"u1"} and fake.members("VIP") == {"u1"}


def test_intercom_tags_a_batchs_contacts_in_one_post_tags_call(httpserver, session, http):
    fake = FakeIntercom({f"u{i}": f"c{i}" for i in range(250)}).install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    audience = destination.audience("cart", {})
    for first in range(0, 250, 100):  # the engine's batches of batch_size (100)
        assert audience.send(batch([add(f"u{i}") for i in range(first, min(first + 100, 250))])).failures == []
    assert fake.bulk_tags == [0, 100, 100, 50]  # the find-or-create, then one call a batch
    assert fake.members("cart") == {f"u{i}" for i in range(250)}
    api = openapi("intercom-2.16.yaml", httpserver.url_for("/"))
    bulk = [r for r in session.sent if r.method == "POST" and r.url.endswith("/tags") and b"users" in r.body]
    assert len(bulk) == 3
    for request in bulk:
        validate(api, request)
        assert tag_users_errors(requests.models.complexjson.loads(request.body)) == []
    assert tag_users_errors({"name": "cart", "users": "c1"}) != []  # the check can fail


def test_intercom_bulk_tag_refused_falls_back_to_one_call_per_contact(httpserver, http):
    fake = FakeIntercom({"u1": "c1", "u2": "c2"}).install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    audience = destination.audience("cart", {})
    destination.contacts.remember("u3", "c-deleted")  # a contact deleted since it was looked up
    result = audience.send(batch([add("u1"), add("u3"), add("u2")]))
    assert failed(result) == {"u3": ("add", 404)}
    assert result.remote_ids == {"u1": "c1", "u2": "c2"}
    assert fake.members("cart") == {"u1", "u2"}


def test_intercom_missing_contact_fails_alone_and_gone_contact_counts_as_removed(httpserver, http):
    fake = FakeIntercom({"u1": "c1", "u2": "c2"}).install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    result = destination.audience("cart", {}).send(
        batch([add("u1"), add("ghost"), add("u2")], [rm("deleted", "c-deleted"), rm("never")]))
    assert failed(result) == {"ghost": ("add", 404)}
    assert "no Intercom contact" in result.failures[0].message
    assert fake.members("cart") == {"u1", "u2"}


def test_intercom_throttled_lookup_is_retried_after_the_reset(httpserver, http, clock):
    fake = FakeIntercom({"u1": "c1"})
    reset = {"X-RateLimit-Reset": str(int(clock.now) + 7)}
    httpserver.expect_oneshot_request("/contacts/find_by_external_id/u1").respond_with_response(
        Response("{}", status=429, headers=reset))
    fake.install(httpserver)
    destination = make("intercom", options_for("intercom", httpserver.url_for("/")), http)
    assert destination.audience("cart", {}).send(batch([add("u1")])).failures == []
    assert clock.slept and clock.slept[0] >= 7
    assert fake.members("cart") == {"u1"}


@pytest.mark.parametrize(("options", "base"), [
    ({}, "https://api.intercom.io"),
    ({"region": "eu"}, "https://api.eu.intercom.io"),
    ({"region": "au"}, "https://api.au.intercom.io"),
    ({"region": "eu", "base_url": "http://127.0.0.1:9/"}, "http://127.0.0.1:9"),
])
def test_intercom_regions(options, base, http):
    assert make("intercom", {"token": "${INTERCOM_TOKEN}", **options}, http).base_url == base


# ---- Chatwoot --------------------------------------------------------------------------


def test_chatwoot_keeps_every_other_label(httpserver, http):
    fake = FakeChatwoot(3, [{"id": 1, "identifier": "u1"}, {"id": 2, "identifier": "u2"}],
                        account_labels={"vip", "support", "cart"},
                        labels={1: ["vip", "support"], 2: ["cart", "support"]}).install(httpserver)
    destination = make("chatwoot", options_for("chatwoot", httpserver.url_for("/")), http)
    audience = destination.audience("cart", {})
    audience.send(batch([add("u1")]))
    assert fake.labels[1] == ["vip", "support", "cart"]
    audience.send(batch(removed=[rm("u1", "1")]))
    assert fake.labels[1] == ["vip", "support"]
    audience.send(batch([add("u2")]))  # already labelled: read, nothing written
    assert fake.labels[2] == ["cart", "support"]


def test_chatwoot_pages_through_partial_matches_to_the_exact_identifier(httpserver, http, clock):
    noise = [{"id": 100 + i, "identifier": f"u1{i}", "name": f"User u1{i}"} for i in range(20)]
    noise.insert(3, {"id": 99, "identifier": None, "name": "Tu1ip", "email": "u1@example.com"})
    fake = FakeChatwoot(3, [*noise, {"id": 7, "identifier": "u1"}, {"id": 8, "identifier": "u2"}],
                        account_labels={"cart"}).install(httpserver)
    destination = make("chatwoot", {**options_for("chatwoot", httpserver.url_for("/")), "search_rate_limit": 0.5}, http)
    audience = destination.audience("cart", {})
    result = audience.send(batch([add("u1"), add("u2"), add("u3")]))
    assert result.remote_ids == {"u1": "7", "u2": "8"}
    assert failed(result) == {"u3": ("add", 404)}
    assert fake.searches == [("u1", 1), ("u1", 2), ("u2", 1), ("u3", 1)]
    assert sum(clock.slept) >= 3 * 2 - 0.01  # four searches at 0.5 a second
    audience.send(batch([add("u1")]))  # remembered: no new search
    assert len(fake.searches) == 4


def test_chatwoot_gives_up_on_too_many_partial_matches(httpserver, http):
    noise = [{"id": 100 + i, "identifier": f"u1{i:02d}"} for i in range(40)]
    FakeChatwoot(3, noise, account_labels={"cart"}).install(httpserver)
    destination = make("chatwoot", {**options_for("chatwoot", httpserver.url_for("/")), "max_search_pages": 2}, http)
    result = destination.audience("cart", {}).send(batch([add("u1")]))
    assert len(result.failures) == 1 and "raise max_search_pages" in result.failures[0].message


def test_chatwoot_defines_a_missing_label_and_says_when_it_cannot(httpserver, http):
    fake = FakeChatwoot(3, [{"id": 1, "identifier": "u1"}]).install(httpserver)
    destination = make("chatwoot", options_for("chatwoot", httpserver.url_for("/")), http)
    destination.audience("cart", {"label": "Cart Abandoners"}).send(batch([add("u1")]))
    assert fake.account_labels == {"cart-abandoners"} and fake.labels[1] == ["cart-abandoners"]

    fake.admin = False
    with pytest.raises(SinkError, match="label 'vip' is not defined in the account and creating it failed"):
        destination.audience("vip", {})


def test_chatwoot_label_dropped_by_the_account_is_a_failure(httpserver, http):
    fake = FakeChatwoot(3, [{"id": 1, "identifier": "u1"}], account_labels={"cart"}).install(httpserver)
    audience = make("chatwoot", options_for("chatwoot", httpserver.url_for("/")), http).audience("cart", {})
    fake.account_labels.clear()  # someone deletes the label mid-run
    result = audience.send(batch([add("u1")]))
    assert failed(result) == {"u1": ("add", None)} and "dropped label 'cart'" in result.failures[0].message


# ---- Customer.io -----------------------------------------------------------------------


def test_customerio_sends_up_to_1000_ids_a_call(httpserver, http):
    fake = FakeCustomerIo().install(httpserver)
    destination = make("customerio", {**options_for("customerio", httpserver.url_for("/")), "batch_size": 5000}, http)
    assert destination.batch_size == 1000
    ids = [f"u{i}" for i in range(1000)]
    result = destination.audience("cart", {"segment_id": 42}).send(batch([add(u) for u in ids], [rm("x")]))
    assert result.failures == [] and fake.segments[42] == set(ids)


def test_customerio_refused_call_fails_only_its_records(httpserver, http, session):
    fake = FakeCustomerIo(refuse={"remove"}).install(httpserver)
    destination = make("customerio", {**options_for("customerio", httpserver.url_for("/")), "id_type": "email"}, http)
    result = destination.audience("cart", {"segment_id": 42}).send(
        batch([add("u1", email=EMAIL), add("u2", email="  ")], [rm("u3", "c@example.com"), rm("u4")]))
    assert failed(result) == {"u2": ("add", None), "u3": ("remove", 400), "u4": ("remove", None)}
    assert result.remote_ids == {"u1": EMAIL}
    assert fake.segments[42] == {EMAIL}
    assert all(EMAIL not in f.message and "c@example.com" not in f.message for f in result.failures)


@pytest.mark.parametrize(("options", "base"), [
    ({}, "https://track.customer.io"), ({"region": "eu"}, "https://track-eu.customer.io"),
])
def test_customerio_regions(options, base, http):
    assert make("customerio", {"site_id": "${CIO_SITE_ID}", "api_key": "${CIO_API_KEY}", **options}, http).base_url == base


# ---- Braze -----------------------------------------------------------------------------


def test_braze_caps_requests_at_75_objects(httpserver, http, session):
    fake = FakeBraze().install(httpserver)
    destination = make("braze", {**options_for("braze", httpserver.url_for("/")), "batch_size": 500}, http)
    assert destination.batch_size == 75
    users = [f"u{i}" for i in range(160)]
    destination.audience("cart", {}).send(batch([add(u) for u in users]))
    assert [len(body["attributes"]) for _, _, _, body in session.calls()] == [75, 75, 10]
    assert fake.members("segments", "cart") == set(users)


def test_braze_errors_naming_an_object_fail_that_record(httpserver, http):
    fake = FakeBraze(profiles={"u3": {"segments": ["cart", "vip"]}}, refuse={"u2"}).install(httpserver)
    destination = make("braze", options_for("braze", httpserver.url_for("/")), http)
    result = destination.audience("cart", {}).send(batch([add("u1"), add("u2")], [rm("u3")]))
    assert failed(result) == {"u2": ("add", None)}
    assert "'external_id' is not valid" in result.failures[0].message
    assert fake.members("segments", "cart") == {"u1"} and fake.profiles["u3"]["segments"] == ["vip"]


# ---- Wati ------------------------------------------------------------------------------


def test_wati_sends_members_with_a_phone_by_its_digits(httpserver, http):
    fake = FakeWati("12345", {PHONE_DIGITS: {}, "447700900123": {}}).install(httpserver)
    destination = make("wati", {**options_for("wati", httpserver.url_for("/")), "phone_attribute": "mobile"}, http)
    assert destination.fields() == ("mobile",) and destination.required_fields() == ("mobile",)
    audience = destination.audience("cart", {"attribute": "abandoned"})
    result = audience.send(batch(
        [add("u1", mobile=PHONE), add("u2", mobile="n/a"), add("u3", mobile="+1 555 0100")], [rm("u9")]))
    assert result.remote_ids == {"u1": PHONE_DIGITS}
    assert failed(result) == {"u2": ("add", None), "u3": ("add", None), "u9": ("remove", None)}
    assert "result: false" in result.failures[1].message
    assert fake.members("abandoned") == {PHONE_DIGITS}
    audience.send(batch(removed=[rm("u1", PHONE_DIGITS)]))
    assert fake.members("abandoned") == set() and fake.contacts[PHONE_DIGITS] == {"abandoned": "false"}


# ---- no secret or PII in any message ----------------------------------------------------

LEAKY = {  # a batch per destination carrying PII where the destination reads it
    "intercom": batch([add("u1")], [rm("u2", "c2")]),
    "chatwoot": batch([add("u1")], [rm("u2", "9")]),
    "customerio": batch([add("u1", email=EMAIL)], [rm("u2", EMAIL)]),
    "braze": batch([add("u1")], [rm("u2")]),
    "wati": batch([add("u1", phone=PHONE)], [rm("u2", PHONE_DIGITS)]),
}
EXTRA = {"customerio": {"id_type": "email"}}
TARGET = {"customerio": {"segment_id": 1}}


@pytest.mark.parametrize("status", [401, 503])
@pytest.mark.parametrize("type_", sorted(LEAKY))
def test_no_secret_or_pii_in_messages(type_, status, httpserver, http, retried):
    if type_ == "chatwoot":  # let the label set-up through, so per-record calls are made
        httpserver.expect_request("/api/v1/accounts/3/labels").respond_with_json({"payload": [{"title": "cart"}]})
    if type_ == "intercom":
        httpserver.expect_request("/tags").respond_with_json({"type": "tag", "id": "1", "name": "cart"})
    httpserver.expect_request(re.compile("^/.*$")).respond_with_json(
        {"error": f"bad token tok-{type_} for {PHONE_DIGITS} {EMAIL}"}, status=status)
    destination = make(type_, {**options_for(type_, httpserver.url_for("/")), **EXTRA.get(type_, {})}, http)
    messages = []
    try:
        result = destination.audience("cart", TARGET.get(type_, {})).send(LEAKY[type_])
        messages += [f.message for f in result.failures]
    except SinkError as error:
        assert isinstance(error, TransientError) == (status == 503)
        messages.append(str(error))
    messages += retried
    assert messages
    for message in messages:
        for secret in (*ENV.values(), "SECRET", PHONE_DIGITS, EMAIL, "98765"):
            assert secret not in message, message


# ---- bad configuration ----------------------------------------------------------------

BAD_CONFIG = [
    ("intercom", {"token": "${INTERCOM_TOKEN}", "region": "mars"}, "unknown region 'mars' (known: us, eu, au)"),
    ("intercom", {}, "option 'token' is required"),
    ("intercom", {"token": "${NOT_SET}"}, "environment variable NOT_SET is not set"),
    ("chatwoot", {"account_id": 3, "api_access_token": "x"}, "option 'base_url' is required"),
    ("chatwoot", {"base_url": "ftp://chat.example.com", "account_id": 3, "api_access_token": "x"},
     "option 'base_url' must be an http:// or https:// URL"),
    ("chatwoot", {"base_url": "https://c.example.com", "account_id": "main", "api_access_token": "x"},
     "option 'account_id' must be the account's number"),
    ("customerio", {"site_id": "s", "api_key": "k", "id_type": "phone"}, "id_type must be one of id, email, cio_id"),
    ("customerio", {"site_id": "s", "api_key": "k", "id_type": "cio_id"}, "id_type cio_id needs id_attribute"),
    ("customerio", {"site_id": "s", "api_key": "k", "region": "apac"}, "unknown region 'apac'"),
    ("braze", {"api_key": "k"}, "option 'base_url' is required"),
    ("braze", {"base_url": "https://rest.iad-01.braze.com", "api_key": "k", "update_existing_only": "yes"},
     "option 'update_existing_only' must be bool"),
    ("wati", {"base_url": "https://live-mt-server.wati.io", "tenant_id": "a/b", "token": "t"},
     "option 'tenant_id' must be letters, digits"),
    ("wati", {"base_url": "https://live-mt-server.wati.io", "token": "t", "tier": 1}, "unknown option 'tier'"),
]


@pytest.mark.parametrize(("type_", "options", "message"), BAD_CONFIG)
def test_bad_configuration_is_a_clear_error_naming_the_destination(type_, options, message, http):
    with pytest.raises(SegmentsError) as info:
        make(type_, options, http)
    assert str(info.value).startswith(f"destination {type_}")
    assert message in str(info.value)


@pytest.mark.parametrize(("type_", "target", "message"), [
    ("customerio", {"segment_id": "vip"}, "option 'segment_id' must be int, got str"),
    ("customerio", {}, "option 'segment_id' is required"),
    ("intercom", {"tag": "x", "label": "y"}, "unknown option 'label' (known: tag)"),
    ("chatwoot", {"label": "!"}, "label '!' has fewer than two letters or digits"),
])
def test_bad_sync_entry_is_a_clear_error_naming_the_segment(type_, target, message, httpserver, http):
    FakeChatwoot(3, []).install(httpserver)
    destination = make(type_, options_for(type_, httpserver.url_for("/")), http)
    where = f"segment cart: sync to {type_}"
    with pytest.raises(SegmentsError) as info:  # what the engine does, the options first
        destination.audience("cart", resolve_options(destination.TARGET_OPTIONS, target, where, ENV))
    assert str(info.value).startswith(where) and message in str(info.value)


# ---- the repository's example destinations ----------------------------------------------


def test_example_destinations_and_sync_entries_are_valid(http):
    """Every example destination builds (its ``${VAR}`` set to a plausible value) and
    every example sync entry fits its destination's type."""
    from segments import paths
    from segments.spec.parse import load_project

    project = load_project(paths.SPECS_DIR)
    plausible = {"URL": "https://example.com", "ENDPOINT": "https://example.com", "SECRET": "whsec_c2VjcmV0"}
    env = {var: next((v for k, v in plausible.items() if k in var), "12345")
           for var in re.findall(r"\$\{(\w+)\}", (paths.SPECS_DIR / "_destinations.yml").read_text())}
    built = {}
    for name, config in project.destinations.items():
        cls = REGISTRY[config.type]
        built[name] = cls(name, resolve_options(cls.declared_options(), config.options, name, env), http)
    assert {d.type for d in built.values()} >= {"intercom", "chatwoot", "customerio", "braze", "wati"}
    for spec in project.segments:
        for target in spec.sync:
            resolve_options(built[target.destination].TARGET_OPTIONS, target.options, spec.name, env)
