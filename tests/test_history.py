"""Membership history: each publish records who entered and who left, and sizes.

The builds here are written straight into the build schema, then published the way
:func:`segments.warehouse.publish` does (history first, then the membership replaced),
so every case runs in milliseconds without dbt.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import duckdb
import pytest

from segments import history
from segments.compiler import models as md
from segments.engines.duckdb_engine import DuckDBEngine, DuckDBSession

TARGET, BUILD = "main", "main_segments_build"
T0 = dt.datetime(2026, 1, 15, 6)

# Each step: the build's members per segment, then what the history must say about it:
# (segment, user, change) rows and segment -> (members, entered, exited, change %).
STEPS: list[tuple[dict[str, list[str]], set[tuple[str, str, str]], dict[str, tuple[int, int, int, float | None]]]] = [
    (
        {"a": ["u1", "u2"], "b": []},
        {("a", "u1", "entered"), ("a", "u2", "entered")},
        {"a": (2, 2, 0, None), "b": (0, 0, 0, None)},
    ),
    (
        {"a": ["u2", "u3"], "b": ["u1"]},
        {("a", "u3", "entered"), ("a", "u1", "exited"), ("b", "u1", "entered")},
        {"a": (2, 1, 1, 0.0), "b": (1, 1, 0, math.inf)},
    ),
    (
        {"a": ["u2", "u3", "u4", "u5"], "b": ["u1"]},
        {("a", "u4", "entered"), ("a", "u5", "entered")},
        {"a": (4, 2, 0, 100.0), "b": (1, 0, 0, 0.0)},
    ),
    (  # segment a left the specs: all its members exit; it gets no size row
        {"b": []},
        {("a", u, "exited") for u in ("u2", "u3", "u4", "u5")} | {("b", "u1", "exited")},
        {"b": (0, 0, 1, 100.0)},
    ),
]


def publish(con: duckdb.DuckDBPyConnection, members: dict[str, list[str]], as_of: dt.datetime) -> None:
    rows = [(s, u, u.endswith("1"), as_of) for s, users in members.items() for u in users]
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {BUILD}")
    con.execute(
        f"CREATE OR REPLACE TABLE {BUILD}.{md.MEMBERSHIP} "
        "(segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP)"
    )
    if rows:
        con.executemany(f"INSERT INTO {BUILD}.{md.MEMBERSHIP} VALUES (?, ?, ?, ?)", rows)
    recorded = history.record(session(con), list(members), as_of, as_of)
    con.execute("BEGIN TRANSACTION")
    for statement in recorded:
        session(con).execute(statement)
    con.execute(f"CREATE OR REPLACE TABLE {TARGET}.{md.MEMBERSHIP} AS SELECT * FROM {BUILD}.{md.MEMBERSHIP}")
    con.execute("COMMIT")


def session(con: duckdb.DuckDBPyConnection) -> DuckDBSession:
    """An engine session over the test's in-memory DuckDB, schema ``main``."""
    return DuckDBSession(DuckDBEngine(Path("in-memory"), TARGET), con)


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def test_no_history_before_the_first_publish(con):
    assert history.latest(session(con)) == {}


def test_each_publish_records_changes_and_sizes(con):
    for step, (members, changes, sizes) in enumerate(STEPS):
        as_of = T0 + dt.timedelta(hours=step)
        publish(con, members, as_of)
        recorded = con.execute(
            f"SELECT segment_name, user_id, change FROM {TARGET}.{history.HISTORY} WHERE as_of = ?", [as_of]
        ).fetchall()
        assert set(recorded) == changes, f"step {step}"
        latest = history.latest(session(con), list(members))
        got = {name: (b.members, b.entered, b.exited, b.change_pct) for name, b in latest.items()}
        assert got == sizes, f"step {step}"
        assert {b.as_of for b in latest.values()} <= {as_of}


def test_sizes_count_the_holdout(con):
    publish(con, {"a": ["u1", "u2", "u11"]}, T0)
    (a,) = history.latest(session(con)).values()
    assert (a.members, a.holdout) == (3, 2)


def test_a_failed_publish_records_nothing(con):
    publish(con, {"a": ["u1"]}, T0)
    recorded = history.record(session(con), ["a"], T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=1))
    con.execute("BEGIN TRANSACTION")
    for statement in recorded:
        session(con).execute(statement)
    con.execute("ROLLBACK")
    assert con.execute(f"SELECT COUNT(*) FROM {TARGET}.{history.SIZES}").fetchone() == (1,)
    assert con.execute(f"SELECT COUNT(*) FROM {TARGET}.{history.HISTORY}").fetchone() == (1,)
