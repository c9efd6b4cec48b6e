"""Experiments (SPEC 2.7): arms by percentage, deterministic per user and experiment
name, in ``segment_membership.arm`` and its history, each arm synced on its own.

Expected arms are computed here from md5 in Python (``expected_arm``), never read from
the compiler; DuckDB and PostgreSQL run the same compiled SQL on the hand-written rows
of test_semantics.py (Spark runs the example experiment in test_engines.py).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from fake_platforms import FakeIntercom, RecordingSession
from sqlglot import exp
from test_destinations_sync import fake_settings, warehouse  # noqa: F401 - a fixture
from test_engines import expected_arm
from test_history import BUILD, TARGET, session
from test_postgres_semantics import engine_session, materialize  # noqa: F401 - a fixture
from test_semantics import AS_OF, UNIVERSE, _load_rows, write_project

from segments import history
from segments.compiler import models as md
from segments.compiler.render import standalone_sql
from segments.errors import SpecErrors
from segments.spec.parse import load_project
from sync.engine import sync
from sync_fixtures import CATALOG as SYNC_CATALOG

EXPERIMENTS = {
    "split": "where: {all: []}\nexperiment:\n  arms: {a: 45, b: 45, control: 10}\n",
    "renamed": "where: {all: []}\nexperiment:\n  name: split\n  arms: {a: 45, b: 45, control: 10}\n",
    "thirds": "where: {attribute: city, is_set: true}\nexperiment:\n  name: t\n  arms: {x: 33.33, y: 33.33, z: 33.34}\n",
    "tiered_arms": """\
        experiment: {name: split, arms: {a: 50, b: 50}}
        tiers:
          - {name: big, where: {attribute: lifetime_value, gte: 100}}
          - {name: rest}
        """,
    "plain": "where: {all: []}\n",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return load_project(write_project(tmp_path_factory.mktemp("experiments") / "specs", EXPERIMENTS))


def check_arms(rows: list[tuple], project) -> None:
    """``(segment_name, user_id, arm)`` rows against arms computed in Python."""
    got: dict[str, dict[str, str | None]] = {}
    for segment, user, arm in rows:
        got.setdefault(segment, {})[user] = arm
    for spec in project.segments:
        for name in spec.segment_names():
            expected = {u: expected_arm(spec.experiment, u) if spec.experiment else None for u in got.get(name, {})}
            assert got.get(name, {}) == expected, name
    assert set(got["split"]) == UNIVERSE
    # the arm follows the experiment's name, not the segment or its rule
    assert got["renamed"] == got["split"]
    assert all(got["tiered_arms__big"][u] == got["split"][u] for u in got["tiered_arms__big"])
    assert len(set(got["split"].values())) > 1  # the data reaches more than one arm


def test_arms_on_duckdb(project):
    con = _load_rows(duckdb.connect(":memory:"))
    sql = standalone_sql(md.compile_project(project), md.MEMBERSHIP, AS_OF)
    rows = con.execute(f"SELECT segment_name, user_id, arm FROM ({sql})").fetchall()
    check_arms(rows, project)


def test_arms_on_postgres(engine_session, project):  # noqa: F811
    materialize(engine_session, md.compile_project(project), schema="experiments")
    rows = engine_session.rows(exp.select("segment_name", "user_id", "arm").from_(exp.table_(md.MEMBERSHIP, db="experiments")))
    check_arms(rows, project)


def test_expected_arm_is_worked_out_by_hand():
    class Experiment:
        name = "split"
        arms = (("a", 45), ("b", 45), ("control", 10))

    import hashlib

    bucket = int(hashlib.md5(b"split:u01").hexdigest()[:8], 16) % 10_000
    assert expected_arm(Experiment, "u01") == ("a" if bucket < 4500 else "b" if bucket < 9000 else "control")


# ---- the validator --------------------------------------------------------------------------

BROKEN = [
    ("experiment:\n  arms: {a: 50, b: 40}\n", "s.yml:4:9", "the arms add up to 90%, not 100%"),
    ("experiment:\n  arms: {a: 100}\n", "s.yml:4:9", "an experiment needs at least two arms"),
    ("experiment:\n  arms: {a: 50.005, b: 49.995}\n", "s.yml:4:13", "at most two decimals"),
    ("experiment:\n  arms: {a: 0, b: 100}\n", "s.yml:4:13", "a percent above 0"),
    ("experiment:\n  arms: {A: 50, b: 50}\n", "s.yml:4:10", "invalid arm name 'A'"),
    ("holdout: 10\nexperiment:\n  arms: {a: 50, b: 50}\n", "s.yml:4:1", "holdout and experiment cannot be combined"),
    ("experiment:\n  arms: {a: 50, b: 50}\n  nam: x\n", "s.yml:5:3", "unknown key 'nam'"),
    ("experiment:\n  arms: {a: 50, b: 50}\nsync:\n  - {destination: hook, arm: c}\n", "s.yml:6:30", "unknown arm 'c'"),
    ("sync:\n  - {destination: hook, arm: a}\n", "s.yml:4:30", "arm: this spec has no experiment"),
]


@pytest.mark.parametrize(("body", "where", "message"), BROKEN)
def test_broken_experiments_are_located(tmp_path, body, where, message):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(SYNC_CATALOG)
    (specs / "_destinations.yml").write_text("destinations:\n  hook: {type: csv, path: /tmp/x}\n")
    (specs / "s.yml").write_text("name: s\nwhere: {attribute: email, is_set: true}\n" + body)
    with pytest.raises(SpecErrors) as raised:
        load_project(specs)
    assert any(str(e).endswith(f"{where}: {message}") or (f"{where}: " in str(e) and message in str(e))
               for e in raised.value.errors), [str(e) for e in raised.value.errors]


# ---- each arm synced to its own tag ---------------------------------------------------------

ARM_SPEC = """\
name: chatters
where: {attribute: email, is_set: true}
experiment: {name: copy_test, arms: {a: 50, b: 50}}
sync:
  - {destination: intercom_main, arm: a, tag: copy-a}
  - {destination: intercom_main, arm: b}
"""


def _publish_arms(warehouse, users: list[str], experiment) -> dict[str, str]:
    arms = {u: expected_arm(experiment, u) for u in users}
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE OR REPLACE TABLE main.segment_membership "
                    "(segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP, arm VARCHAR)")
        con.executemany("INSERT INTO main.segment_membership VALUES ('chatters', ?, false, ?, ?)",
                        [[u, dt.datetime(2026, 1, 15), a] for u, a in arms.items()])
        con.execute("CREATE OR REPLACE TABLE main.segment_catalog AS SELECT 'chatters' AS segment_name")
    return arms


def test_each_arm_is_synced_to_its_own_tag(tmp_path, warehouse, httpserver):  # noqa: F811
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(SYNC_CATALOG)
    (specs / "_destinations.yml").write_text(
        "destinations:\n  intercom_main:\n    type: intercom\n    token: ${INTERCOM_TOKEN}\n    base_url: ${FAKE_URL}\n")
    (specs / "chatters.yml").write_text(ARM_SPEC)
    project = load_project(specs)
    users = [f"u{i:05d}" for i in range(40)]
    fake = FakeIntercom({u: f"c-{u}" for u in users}).install(httpserver)
    arms = _publish_arms(warehouse, users, project.spec("chatters").experiment)
    outcomes = sync(project, warehouse, settings=fake_settings(httpserver.url_for("/"), RecordingSession()))
    assert [(o.segment, o.status) for o in outcomes] == [("chatters__a", "succeeded"), ("chatters__b", "succeeded")]
    assert fake.members("copy-a") == {u for u, a in arms.items() if a == "a"}
    assert fake.members("chatters__b") == {u for u, a in arms.items() if a == "b"}
    assert fake.members("copy-a") and fake.members("chatters__b")
    with duckdb.connect(str(warehouse)) as con:
        keys = con.execute("SELECT segment_name, COUNT(*) FROM main.sync_state GROUP BY 1 ORDER BY 1").fetchall()
    assert keys == [("chatters__a", len(fake.members("copy-a"))), ("chatters__b", len(fake.members("chatters__b")))]


# ---- history ------------------------------------------------------------------------------------


def test_history_records_the_arm_and_gains_the_column(tmp_path):
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {TARGET}")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {BUILD}")
    # a history recorded before arms existed
    con.execute(f"CREATE TABLE {TARGET}.{history.HISTORY} (segment_name VARCHAR, user_id VARCHAR, change VARCHAR, "
                "as_of TIMESTAMP, published_at TIMESTAMP)")
    con.execute(f"CREATE TABLE {TARGET}.{md.MEMBERSHIP} (segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP)")
    con.execute(f"INSERT INTO {TARGET}.{md.MEMBERSHIP} VALUES ('x', 'gone', false, '2026-01-14')")
    con.execute(f"CREATE TABLE {BUILD}.{md.MEMBERSHIP} (segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, "
                "as_of TIMESTAMP, arm VARCHAR)")
    con.execute(f"INSERT INTO {BUILD}.{md.MEMBERSHIP} VALUES ('x', 'new', false, '2026-01-15', 'b')")
    opened = session(con)
    for statement in history.record(opened, ["x"], dt.datetime(2026, 1, 15), dt.datetime(2026, 1, 15, 1)):
        opened.execute(statement)
    rows = con.execute(f"SELECT user_id, change, arm FROM {TARGET}.{history.HISTORY} ORDER BY user_id").fetchall()
    assert rows == [("gone", "exited", None), ("new", "entered", "b")]
