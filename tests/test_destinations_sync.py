"""Each platform destination end to end through :class:`sync.engine.Engine`.

A specs directory with one destination of each type, a warehouse holding what a
build publishes (membership is written directly, as a build would, so it can change
between syncs), and the fake platforms of ``fake_platforms`` on loopback. A sync must
make each platform's audience equal the segment (less members without a contact,
a phone or consent), record per-record failures in ``sync_errors``, remove through
the ids it recorded without looking anyone up again, and send nothing when nothing
changed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from fake_platforms import FakeBraze, FakeChatwoot, FakeCustomerIo, FakeIntercom, FakeWati, RecordingSession

from segments.spec.parse import load_project
from sync.engine import Settings, sync
from sync.http import Clock, RetryPolicy
from sync_fixtures import CATALOG

USERS = [f"u{i:05d}" for i in range(2500)]
GHOST = "u00005"  # a member with no contact at Intercom, Chatwoot or Wati
NO_PHONE = "u00003"
CHATTERS = (USERS[:12], USERS[4:16])  # membership at the first and the second sync
BUYERS = (USERS, USERS[100:])
ENV = {"INTERCOM_TOKEN": "t1", "CHATWOOT_TOKEN": "t2", "CIO_SITE_ID": "s", "CIO_API_KEY": "k",
       "BRAZE_API_KEY": "b", "WATI_TOKEN": "w"}


def digits(user_id: str) -> str:
    return f"9198{int(user_id[1:]):08d}"


DESTINATIONS = """\
destinations:
  intercom_main:
    type: intercom
    token: ${INTERCOM_TOKEN}
    base_url: ${FAKE_URL}
  support_desk:
    type: chatwoot
    base_url: ${FAKE_URL}
    account_id: 3
    api_access_token: ${CHATWOOT_TOKEN}
  whatsapp:
    type: wati
    base_url: ${FAKE_URL}
    tenant_id: "12345"
    token: ${WATI_TOKEN}
    requires: whatsapp_opt_in
  cio:
    type: customerio
    site_id: ${CIO_SITE_ID}
    api_key: ${CIO_API_KEY}
    base_url: ${FAKE_URL}
  braze_main:
    type: braze
    base_url: ${FAKE_URL}
    api_key: ${BRAZE_API_KEY}
"""

SPECS = {
    "chatters": "sync:\n  - {destination: intercom_main, tag: chatters}\n  - {destination: support_desk}\n"
                "  - {destination: whatsapp}\n",
    "buyers": "sync:\n  - {destination: cio, segment_id: 7}\n  - {destination: braze_main, value: buyer}\n",
}


@dataclass
class World:
    """A fake platform and how to read the audience it holds, as user ids."""

    segment: str
    make: Callable[[], object]
    members: Callable[[object], set[str]]
    not_sent: frozenset[str] = frozenset()  # members the platform never gets
    failing: frozenset[str] = frozenset()  # members that fail every run
    lookups: Callable[[object], list[str]] | None = None  # user ids looked up so far


KNOWN = [u for u in USERS[:20] if u != GHOST]
WORLDS = {
    "intercom_main": World(
        "chatters", lambda: FakeIntercom({u: f"c-{u}" for u in KNOWN}),
        lambda fake: fake.members("chatters"), failing=frozenset({GHOST}), lookups=lambda fake: fake.lookups),
    "support_desk": World(
        "chatters", lambda: FakeChatwoot(3, [{"id": i + 1, "identifier": u, "name": f"Name {u}"} for i, u in enumerate(KNOWN)]),
        lambda fake: fake.members("chatters"), failing=frozenset({GHOST}),
        lookups=lambda fake: [q for q, page in fake.searches]),
    "whatsapp": World(
        "chatters", lambda: FakeWati("12345", {digits(u): {} for u in KNOWN}),
        lambda fake: {f"u{int(n[4:]):05d}" for n in fake.members("seg_chatters")},
        not_sent=frozenset({NO_PHONE}), failing=frozenset({GHOST})),
    "cio": World("buyers", FakeCustomerIo, lambda fake: fake.segments.get(7, set())),
    "braze_main": World("buyers", FakeBraze, lambda fake: fake.members("segments", "buyer")),
}


def publish(warehouse: Path, run: int) -> None:
    """What a build publishes, at the first (0) or second (1) sync."""
    membership = {"chatters": CHATTERS[run], "buyers": BUYERS[run]}
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE OR REPLACE TABLE main.segment_membership "
                    "(segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP)")
        for segment, users in membership.items():
            con.execute("INSERT INTO main.segment_membership SELECT ?, unnest(?::VARCHAR[]), false, ?",
                        [segment, list(users), dt.datetime(2026, 1, 15 + run)])
        con.execute("CREATE OR REPLACE TABLE main.segment_catalog AS SELECT unnest(?::VARCHAR[]) AS segment_name",
                    [list(membership)])


@pytest.fixture
def project(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "_destinations.yml").write_text(DESTINATIONS)
    for name, entries in SPECS.items():
        (specs / f"{name}.yml").write_text(f"name: {name}\nwhere: {{attribute: email, is_set: true}}\n{entries}")
    return load_project(specs)


@pytest.fixture
def warehouse(tmp_path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.users (user_id VARCHAR, email VARCHAR, phone VARCHAR, whatsapp_opt_in BOOLEAN)")
        con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP)")
        con.execute(
            "INSERT INTO raw.users SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), true",
            [USERS, [f"{u}@example.com" for u in USERS],
             [None if u == NO_PHONE else f"+91 98{int(u[1:]):08d}" for u in USERS]])
    return path


def fake_settings(url: str, session: RecordingSession) -> Settings:
    """The fakes' environment, a recording session, a clock that sleeps instantly."""
    now = [1_700_000_000.0]
    return Settings(
        env={**ENV, "FAKE_URL": url}, session=session,
        clock=Clock(monotonic=lambda: now[0], wall=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)),
        policy=RetryPolicy(attempts=2, initial_wait=0.1, max_wait=1, jitter=0),
    )


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_sync_makes_the_platform_audience_equal_the_segment(name, project, warehouse, httpserver):
    world = WORLDS[name]
    fake = world.make().install(httpserver)
    session = RecordingSession()
    settings = fake_settings(httpserver.url_for("/"), session)
    wanted = CHATTERS if world.segment == "chatters" else BUYERS
    looked_up = (lambda: list(world.lookups(fake))) if world.lookups else (lambda: [])

    for run in (0, 1):
        publish(warehouse, run)
        sent_before, lookups_before = len(session.sent), len(looked_up())
        [outcome] = sync(project, warehouse, destination=name, settings=settings)
        members = set(wanted[run]) - world.not_sent
        assert outcome.status == "succeeded", outcome.message
        assert outcome.failed == len(members & world.failing)
        assert world.members(fake) == members - world.failing
        if run == 1:  # leavers are removed through their recorded ids: only joiners are looked up
            joiners = (set(wanted[1]) - set(wanted[0])) | (set(wanted[1]) & world.failing)
            assert sorted(looked_up()[lookups_before:]) == (sorted(joiners - world.not_sent) if world.lookups else [])
        bodies = [json.loads(r.body) for r in session.sent[sent_before:] if r.body]
        if name == "cio":
            assert sorted(len(b["ids"]) for b in bodies) == ([500, 1000, 1000] if run == 0 else [100])
        if name == "braze_main":
            assert max(len(b["attributes"]) for b in bodies) == 75 and len(bodies) == (34 if run == 0 else 2)

    with duckdb.connect(str(warehouse), read_only=True) as con:
        errors = con.execute("SELECT user_id, operation, status_code FROM main.sync_errors WHERE destination = ?",
                             [name]).fetchall()
        state = dict(con.execute("SELECT user_id, remote_id FROM main.sync_state WHERE destination = ?", [name]).fetchall())
    assert sorted(errors) == sorted((u, "add", None if name == "whatsapp" else 404)
                                    for run in (0, 1) for u in set(wanted[run]) & world.failing)
    assert set(state) == set(wanted[1]) - world.not_sent - world.failing
    if name == "whatsapp":
        assert all(remote == digits(u) for u, remote in state.items())

    # Nothing changed: only the members that failed are tried again.
    sent_before, lookups_before = len(session.sent), len(looked_up())
    [outcome] = sync(project, warehouse, destination=name, settings=settings)
    assert (outcome.status, outcome.added, outcome.removed) == ("succeeded", 0, 0)
    assert outcome.failed == len(set(wanted[1]) & world.failing)
    if world.lookups:
        assert looked_up()[lookups_before:] == sorted(set(wanted[1]) & world.failing)
    if not world.failing:
        assert session.sent[sent_before:] == []
