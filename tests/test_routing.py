"""Owner routing: a spec's ``owner`` reaches the platform (``sync.routing``).

Intercom contacts have an owner (``owner_id``, an admin id: the destination's
``owners:`` maps spec owners to admins), checked against Intercom's OpenAPI
description; Braze and Wati have none, so ``owner_attribute:`` names a contact
attribute each add sets (the api-specs facts: Braze's attribute objects, Wati's
customParams).
"""

from __future__ import annotations

import json

import pytest
from fake_platforms import FakeBraze, FakeIntercom, FakeWati, RecordingSession, openapi, validate
from openapi_core.exceptions import OpenAPIError
from test_destinations import PHONE, PHONE_DIGITS, add, batch, clock, failed, http, make, options_for, retried, rm, session, wrong  # noqa: F401 - fixtures
from test_destinations_sync import ENV, fake_settings, publish, warehouse  # noqa: F401 - a fixture

from segments.errors import SegmentsError
from segments.spec.parse import load_project
from sync.engine import sync
from sync.routing import OWNER
from sync_fixtures import CATALOG

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


# ---- through the engine: the spec's owner, checked before anything is sent -----------------

DESTINATIONS = """\
destinations:
  intercom_main:
    type: intercom
    token: ${INTERCOM_TOKEN}
    base_url: ${FAKE_URL}
    owners: {sales: 991266252}
"""


def _project(tmp_path, owner: str):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "_destinations.yml").write_text(DESTINATIONS)
    (specs / "chatters.yml").write_text(
        f"name: chatters\nowner: {owner}\nwhere: {{attribute: email, is_set: true}}\nsync:\n  - destination: intercom_main\n")
    return load_project(specs)


def test_the_engine_routes_the_specs_owner_and_the_dry_run_counts_it(tmp_path, warehouse, httpserver):  # noqa: F811
    fake = FakeIntercom({f"u{i:05d}": f"c{i}" for i in range(12)}).install(httpserver)
    session = RecordingSession()
    settings = fake_settings(httpserver.url_for("/"), session)
    project = _project(tmp_path, "sales")
    publish(warehouse, 0)  # chatters: u00000..u00011
    [planned] = sync(project, warehouse, dry_run=True, settings=settings)
    assert [c.count for c in planned.cost.calls] == [1, 12, 1, 0, 12]
    [done] = sync(project, warehouse, settings=settings)
    assert done.status == "succeeded" and done.added == 12
    assert set(fake.owners.values()) == {ADMIN} and len(fake.owners) == 12
    assert len(session.sent) == planned.cost.total


def test_an_owner_without_an_admin_id_sends_nothing(tmp_path, warehouse, httpserver):  # noqa: F811
    session = RecordingSession()
    publish(warehouse, 0)
    with pytest.raises(SegmentsError, match="owners has no id for owner 'lifecycle' \\(segment chatters\\)"):
        sync(_project(tmp_path, "lifecycle"), warehouse, settings=fake_settings(httpserver.url_for("/"), session))
    assert session.sent == []
    assert ENV  # the fixtures' environment is the one the engine read
