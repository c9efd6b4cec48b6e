"""Owner routing: a spec's ``owner`` reaches the platform (``sync.routing``).

Intercom contacts have an owner (``owner_id``, an admin id: the destination's
``owners:`` maps spec owners to admins), checked against Intercom's OpenAPI
description; Braze, Wati, Chatwoot and Customer.io have none, so ``owner_attribute:``
names a contact attribute each add sets (the api-specs facts: Braze's attribute
objects, Wati's customParams, Customer.io's identify; Chatwoot's contact
``custom_attributes``, checked against its OpenAPI description). Through the engine,
on DuckDB and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from fake_platforms import FakeBraze, FakeChatwoot, FakeCustomerIo, FakeIntercom, FakeWati, RecordingSession, openapi, validate
from openapi_core.exceptions import OpenAPIError
from test_destinations import PHONE, PHONE_DIGITS, add, batch, clock, failed, http, make, options_for, retried, rm, session, wrong  # noqa: F401 - fixtures
from test_destinations_sync import ENV, fake_settings

from segments.errors import SegmentsError
from sync.engine import sync
from sync.routing import OWNER
from sync_fixtures import SyncWarehouse, postgres_database, publish, users, write_project, write_users

ADMIN = "991266252"


def test_intercom_sets_the_owners_admin_on_each_add(httpserver, session, http):
    fake = FakeIntercom({"u1": "c1", "u2": "c2", "u3": "c3"}).install(httpserver)
    options = {**options_for("intercom", httpserver.url_for("/")), "owners": {"sales-team": int(ADMIN)}}
    destination = make("intercom", options, http)
    audience = destination.audience("cart", {OWNER: "sales-team"})
    result = audience.send(batch([add("u1"), add("u2"), add("ghost")], [rm("u3", "c3")]))
    assert failed(result) == {"ghost": ("add", 404)}
    assert fake.owners == {"c1": ADMIN, "c2": ADMIN}  # removes keep their owner
    puts = [r for r in session.sent if r.method == "PUT"]
    assert [json.loads(r.body) for r in puts] == [{"owner_id": ADMIN}] * 2
    api = openapi("intercom-2.16.yaml", httpserver.url_for("/"))
    for request in puts:
        validate(api, request)
    with pytest.raises(OpenAPIError):  # owner_id is a string in the description
        validate(api, wrong(httpserver.url_for("/"), "PUT", "/contacts/c1",
                            {"Authorization": "Bearer x", "Intercom-Version": "2.16"}, {"owner_id": ["991266252"]}))


@pytest.mark.parametrize(
    ("owners", "owner", "puts"),
    [(None, "sales-team", 0), ({"sales-team": ADMIN}, None, 0), ({"sales-team": ADMIN}, "sales-team", 1)],
    ids=["no-owners-map", "spec-without-owner", "routed"],
)
def test_intercom_routes_only_what_is_asked(httpserver, session, http, owners, owner, puts):
    FakeIntercom({"u1": "c1"}).install(httpserver)
    options = {**options_for("intercom", httpserver.url_for("/")), **({"owners": owners} if owners else {})}
    make("intercom", options, http).audience("cart", {OWNER: owner}).send(batch([add("u1")]))
    assert sum(r.method == "PUT" for r in session.sent) == puts


def test_intercom_owner_refused_fails_the_record_for_the_next_run(httpserver, http):
    fake = FakeIntercom({"u1": "c1"}, refuse_owner=True).install(httpserver)
    options = {**options_for("intercom", httpserver.url_for("/")), "owners": {"sales-team": ADMIN}}
    result = make("intercom", options, http).audience("cart", {OWNER: "sales-team"}).send(batch([add("u1")]))
    assert failed(result) == {"u1": ("add", 400)}
    assert "setting the owner failed" in result.failures[0].message
    assert result.remote_ids == {}
    assert fake.members("cart") == {"u1"}  # tagged; the owner is tried again next run


def test_braze_and_wati_set_the_owner_attribute_on_adds(httpserver, session, http):
    FakeBraze().install(httpserver)
    braze = make("braze", {**options_for("braze", httpserver.url_for("/")), "owner_attribute": "segment_owner"}, http)
    braze.audience("cart", {OWNER: "sales-team"}).send(batch([add("u1")], [rm("u2")]))
    assert json.loads(session.sent[-1].body)["attributes"] == [
        {"external_id": "u1", "segments": {"add": ["cart"]}, "segment_owner": "sales-team"},
        {"external_id": "u2", "segments": {"remove": ["cart"]}},
    ]
    httpserver.clear()
    FakeWati("12345", {PHONE_DIGITS: {}, "919811111111": {"seg_cart": "true"}}).install(httpserver)
    wati = make("wati", {**options_for("wati", httpserver.url_for("/")), "owner_attribute": "owner"}, http)
    wati.audience("cart", {OWNER: "sales-team"}).send(batch([add("u1", phone=PHONE)], [rm("u2", "919811111111")]))
    bodies = [json.loads(r.body) for r in session.sent[-2:]]
    assert bodies == [
        {"customParams": [{"name": "seg_cart", "value": "true"}, {"name": "owner", "value": "sales-team"}]},
        {"customParams": [{"name": "seg_cart", "value": "false"}]},
    ]


def test_chatwoot_sets_the_owner_custom_attribute_on_adds(httpserver, session, http):
    fake = FakeChatwoot(3, [{"id": 7, "identifier": "u1"}, {"id": 9, "identifier": "u2"}],
                        account_labels={"cart"}, labels={9: ["cart"]},
                        custom_attributes={7: {"plan": "pro"}}).install(httpserver)
    options = {**options_for("chatwoot", httpserver.url_for("/")), "owner_attribute": "segment_owner"}
    audience = make("chatwoot", options, http).audience("cart", {OWNER: "sales-team"})
    result = audience.send(batch([add("u1")], [rm("u2", "9")]))
    assert failed(result) == {} and fake.members("cart") == {"u1"}
    assert fake.custom_attributes == {7: {"plan": "pro", "segment_owner": "sales-team"}}  # removes keep theirs
    puts = [r for r in session.sent if r.method == "PUT"]
    assert [(r.path_url, json.loads(r.body)) for r in puts] == [
        ("/api/v1/accounts/3/contacts/7", {"custom_attributes": {"segment_owner": "sales-team"}})]
    api = openapi("chatwoot.json", httpserver.url_for("/"))
    for request in session.sent:
        validate(api, request)
    with pytest.raises(OpenAPIError):  # custom_attributes is an object in the description
        validate(api, wrong(httpserver.url_for("/"), "PUT", "/api/v1/accounts/3/contacts/7",
                            {"api_access_token": "x"}, {"custom_attributes": "sales-team"}))


@pytest.mark.parametrize(
    ("id_type", "fields", "person"),
    [("id", {}, "u1"), ("email", {"email": "a@example.com"}, "a@example.com"), ("cio_id", {"cio": "f3e2"}, "cio_f3e2")],
)
def test_customerio_identifies_each_added_person_with_the_owner(httpserver, session, http, id_type, fields, person):
    fake = FakeCustomerIo().install(httpserver)
    options = {**options_for("customerio", httpserver.url_for("/")), "id_type": id_type, "owner_attribute": "owner",
               **({"id_attribute": "cio"} if id_type == "cio_id" else {})}
    audience = make("customerio", options, http).audience("cart", {"segment_id": 7, OWNER: "sales-team"})
    result = audience.send(batch([add("u1", **fields)], [rm("u2", "gone" if id_type != "id" else None)]))
    assert failed(result) == {}
    assert fake.people == {person: {"owner": "sales-team"}}  # the add only
    calls = [(r.method, r.path_url.split("?")[0]) for r in session.sent]
    assert calls == [("POST", "/api/v1/segments/7/add_customers"), ("PUT", f"/api/v1/customers/{quote(person, safe='')}"),
                     ("POST", "/api/v1/segments/7/remove_customers")]


@pytest.mark.parametrize("type_", ["chatwoot", "customerio"])
def test_an_owner_attribute_refused_fails_the_record_for_the_next_run(httpserver, http, type_):
    if type_ == "chatwoot":
        fake = FakeChatwoot(3, [{"id": 7, "identifier": "u1"}], account_labels={"cart"}, refuse_update=True)
        members = lambda: fake.members("cart")  # noqa: E731
    else:
        fake = FakeCustomerIo(refuse={"identify"})
        members = lambda: fake.segments[7]  # noqa: E731
    fake.install(httpserver)
    options = {**options_for(type_, httpserver.url_for("/")), "owner_attribute": "owner"}
    result = make(type_, options, http).audience("cart", {"segment_id": 7, OWNER: "sales-team"}).send(batch([add("u1")]))
    assert [(f.user_id, f.operation) for f in result.failures] == [("u1", "add")]
    assert result.failures[0].message.startswith("setting the owner failed: ")
    assert result.remote_ids == {}  # not acknowledged: sent again next run
    assert members() == {"u1"}  # the membership itself went through


@pytest.mark.parametrize("type_", ["chatwoot", "customerio"])
def test_no_owner_attribute_or_no_owner_routes_nothing(httpserver, session, http, type_):
    FakeChatwoot(3, [{"id": 7, "identifier": "u1"}], account_labels={"cart"}).install(httpserver) if type_ == "chatwoot" \
        else FakeCustomerIo().install(httpserver)
    for options, owner in (({}, "sales-team"), ({"owner_attribute": "owner"}, None)):
        destination = make(type_, {**options_for(type_, httpserver.url_for("/")), **options}, http)
        destination.audience("cart", {"segment_id": 7, OWNER: owner}).send(batch([add("u1")]))
    assert not [r for r in session.sent if r.method == "PUT"]


# ---- through the engine: the spec's owner, checked before anything is sent -----------------

DESTINATIONS = """\
destinations:
  intercom_main:
    type: intercom
    token: ${INTERCOM_TOKEN}
    base_url: ${FAKE_URL}
    owners: {sales: 991266252}
  support_desk:
    type: chatwoot
    base_url: ${FAKE_URL}
    account_id: 3
    api_access_token: ${CHATWOOT_TOKEN}
    owner_attribute: segment_owner
  cio:
    type: customerio
    site_id: ${CIO_SITE_ID}
    api_key: ${CIO_API_KEY}
    base_url: ${FAKE_URL}
    owner_attribute: segment_owner
"""
MEMBERS = users(12)
SYNC = "sync:\n  - destination: intercom_main\n  - destination: support_desk\n  - {destination: cio, segment_id: 7}\n"


@dataclass(frozen=True)
class Platform:
    """A fake platform holding every member, and the owner it ends with per member."""

    make: Callable[[], object]
    owners: Callable[[object], dict[str, object]]


PLATFORMS = {
    "intercom_main": Platform(lambda: FakeIntercom({u: f"c-{u}" for u in MEMBERS}),
                              lambda fake: {c[2:]: o for c, o in fake.owners.items()}),
    "support_desk": Platform(
        lambda: FakeChatwoot(3, [{"id": i + 1, "identifier": u} for i, u in enumerate(MEMBERS)], account_labels={"chatters"}),
        lambda fake: {MEMBERS[c - 1]: a.get("segment_owner") for c, a in fake.custom_attributes.items()}),
    "cio": Platform(FakeCustomerIo, lambda fake: {p: a.get("segment_owner") for p, a in fake.people.items()}),
}
ROUTED_AS = {"intercom_main": ADMIN, "support_desk": "sales", "cio": "sales"}


@pytest.fixture(params=["duckdb", "postgres"])
def target(request, tmp_path, monkeypatch) -> Iterator[SyncWarehouse]:
    if request.param == "duckdb":
        yield SyncWarehouse("duckdb", tmp_path / "wh.duckdb")
        return
    with postgres_database(request.getfixturevalue("postgres_env"), monkeypatch) as env:
        yield SyncWarehouse("postgres", tmp_path / "unused.duckdb", env)


def _project(tmp_path, target: SyncWarehouse, owner: str):
    with target.connect() as con:
        write_users(con, MEMBERS)
        publish(con, {"chatters": dict.fromkeys(MEMBERS, False)})
    return write_project(tmp_path / "specs", DESTINATIONS, {"chatters": f"owner: {owner}\n{SYNC}"})


@pytest.mark.parametrize("destination", sorted(PLATFORMS))
def test_the_engine_routes_the_specs_owner_and_the_dry_run_counts_it(tmp_path, target, httpserver, destination):
    fake = PLATFORMS[destination].make().install(httpserver)
    session = RecordingSession()
    settings = fake_settings(httpserver.url_for("/"), session)
    project = _project(tmp_path, target, "sales")
    [planned] = sync(project, target.engine, destination, dry_run=True, settings=settings)
    assert planned.cost.calls[-1].what.startswith("owner") and planned.cost.calls[-1].count == len(MEMBERS)
    [done] = sync(project, target.engine, destination, settings=settings)
    assert done.status == "succeeded" and done.added == len(MEMBERS)
    assert PLATFORMS[destination].owners(fake) == dict.fromkeys(MEMBERS, ROUTED_AS[destination])
    assert len(session.sent) <= planned.cost.total  # lookups and label checks are upper bounds
    assert sum(r.method == "PUT" for r in session.sent) == len(MEMBERS)


def test_an_owner_without_an_admin_id_sends_nothing(tmp_path, httpserver):
    target = SyncWarehouse("duckdb", tmp_path / "wh.duckdb")
    session = RecordingSession()
    project = _project(tmp_path, target, "lifecycle")
    with pytest.raises(SegmentsError, match="owners has no id for owner 'lifecycle' \\(segment chatters\\)"):
        sync(project, target.engine, settings=fake_settings(httpserver.url_for("/"), session))
    assert session.sent == []
    assert ENV  # the fixtures' environment is the one the engine read
