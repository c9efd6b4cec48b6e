"""A checkpoint finds the state rows of a batch's removes by the rowids the plan read
(sync.ledger.Ledger._delete), and removes exactly what the plain delete would even
when those rowids no longer name the rows they named."""

from __future__ import annotations

import duckdb
import pytest
from sqlglot import exp

from segments.engines.duckdb_engine import DuckDBEngine, DuckDBSession
from sync.ledger import Changes, Ledger

ROWS = [("hook", "vip", f"u{n}") for n in range(1, 7)] + [("hook", "other", "u1"), ("crm", "vip", "u2")]


def _ledger(tmp_path) -> tuple[duckdb.DuckDBPyConnection, Ledger]:
    con = duckdb.connect()
    ledger = Ledger(DuckDBSession(DuckDBEngine(tmp_path / "wh.duckdb"), con), "main")
    ledger.ensure_tables()
    for destination, segment, user in ROWS:
        con.execute("INSERT INTO main.sync_state VALUES (?, ?, ?, NULL, now(), 'old')", [destination, segment, user])
    ledger.start_runs("hook", [("s1", "vip", 0, 2)])
    return con, ledger


def _state(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str, str]]:
    return set(con.execute("SELECT destination, segment_name, user_id FROM main.sync_state").fetchall())


def _rowid(con: duckdb.DuckDBPyConnection, destination: str, segment: str, user: str) -> int:
    query = "SELECT rowid FROM main.sync_state WHERE destination = ? AND segment_name = ? AND user_id = ?"
    return con.execute(query, [destination, segment, user]).fetchone()[0]


@pytest.mark.parametrize("stale", [False, True])
def test_removes_by_rowid_take_exactly_the_batch_s_rows(tmp_path, stale):
    con, ledger = _ledger(tmp_path)
    removed = [("vip", "u1"), ("vip", "u2")]
    # stale: the rowids now name other rows, another pair's and another destination's among them
    named = [("hook", "other", "u1"), ("crm", "vip", "u2")] if stale else [("hook", s, u) for s, u in removed]
    con.execute("CREATE TABLE plan (user_id TEXT, state_row BIGINT)")
    for (_, user), row in zip(removed, named):
        con.execute("INSERT INTO plan VALUES (?, ?)", [user, _rowid(con, *row)])
    deletes: list[str] = []
    execute = ledger.session.execute
    ledger.session.execute = lambda statement: (  # type: ignore[method-assign]
        deletes.append(statement.sql()) if isinstance(statement, exp.Delete) else None, execute(statement))
    adds = exp.select(exp.cast(exp.null(), "TEXT").as_("user_id"), exp.cast(exp.null(), "TEXT").as_("remote_id")).where(exp.false())
    changes = Changes(adds, exp.select("user_id").from_("plan"), 0, len(removed), exp.select("state_row").from_("plan"))
    ledger.checkpoint("s1", "hook", "vip", changes, [])
    assert _state(con) == set(ROWS) - {("hook", "vip", "u1"), ("hook", "vip", "u2")}
    assert len(deletes) == stale  # the plain delete runs only when the rowids missed
    assert con.execute("SELECT removed, batches FROM main.sync_runs WHERE sync_id = 's1'").fetchone() == (2, 1)
