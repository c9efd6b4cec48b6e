"""`segments load` stops bad input at the door (issue 18, item 6): what a build requires
is checked with row numbers, nothing is loaded on failure, and no value is echoed."""

from __future__ import annotations

import duckdb
import pytest

from segments.cli import main

CATALOG = (
    "users:\n  table: raw.users\n  key: user_id\n  attributes:\n    lifetime_value: {type: number}\n"
    "events:\n  table: raw.events\n  user_key: user_id\n  name: event_name\n  timestamp: occurred_at\n"
)
USERS = "user_id,lifetime_value\nu1,1\nu2,2\n"
EVENTS = "user_id,event_name,occurred_at\nu1,login,2026-01-02 00:00:00\n"


@pytest.mark.parametrize(
    ("users", "events", "message"),
    [
        ("user_id,lifetime_value\nsecret-a,1\n,2\nsecret-a,3\nu4,4\n", EVENTS,
         "user_id is empty at rows 2; user_id repeats a key at rows 1, 3 (a user key must be unique)"),
        (USERS, "user_id,event_name,occurred_at\nu1,login,2026-01-02\n,login,2026-01-02\nu1,,2026-01-02\nu2,buy,\n", 
         "user_id is empty at rows 2; event_name is empty at rows 3; occurred_at is empty at rows 4"),
        ("user_id,lifetime_value\nu1,1\nu2,secret-abc\nu3,2\n", EVENTS,
         "column lifetime_value holds values that are not a number at rows 2"),
        (USERS, "user_id,event_name,occurred_at\nu1,login,2026-01-02\nu2,login,not-a-time-secret\n",
         "column occurred_at holds values that are not a timestamp at rows 2"),
        ("user_id,lifetime_value\nu1,1\nu2,2,secret-extra,more\n", EVENTS, "is not a CSV file with a header row"),
    ],
    ids=["users_key", "events_required", "bad_number", "bad_timestamp", "ragged_csv"],
)
def test_bad_input_is_refused_with_rows_and_nothing_is_loaded(tmp_path, capsys, users, events, message):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (tmp_path / "u.csv").write_text(users)
    (tmp_path / "e.csv").write_text(events)
    warehouse = tmp_path / "w.duckdb"
    argv = ["load", "--users", str(tmp_path / "u.csv"), "--events", str(tmp_path / "e.csv"), "--specs", str(specs), "--warehouse", str(warehouse)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "nothing was written" in err
    assert "secret" not in err and "Traceback" not in err
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'raw'").fetchone()[0] == 0


def test_good_input_loads(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (tmp_path / "u.csv").write_text(USERS)
    (tmp_path / "e.csv").write_text(EVENTS)
    warehouse = tmp_path / "w.duckdb"
    assert main(["load", "--users", str(tmp_path / "u.csv"), "--events", str(tmp_path / "e.csv"), "--specs", str(specs), "--warehouse", str(warehouse)]) == 0
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT COUNT(*) FROM raw.users").fetchone()[0] == 2
