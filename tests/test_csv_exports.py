"""Exports are safe to open (issue 18, item 8): cells a spreadsheet would run as a
formula are written with a leading apostrophe, in csv change files and `segments members`."""

from __future__ import annotations

import csv
import io

import duckdb

from segments.cli import main
from sync import engine
from sync_fixtures import publish, write_project

FORMULAS = ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\t=1"]


def _warehouse(tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.users (user_id VARCHAR, email VARCHAR, phone VARCHAR, whatsapp_opt_in BOOLEAN)")
        con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP)")
        rows = [[f, f"{f}@example.com", "+91 98765 43210", True] for f in FORMULAS] + [["plain", "=x@example.com", None, True]]
        con.executemany("INSERT INTO raw.users VALUES (?, ?, ?, ?)", rows)
        publish(con, {"vip": {r[0]: False for r in rows}})
    return warehouse


def test_csv_change_files_escape_formulas(tmp_path):
    warehouse, out = _warehouse(tmp_path), tmp_path / "out"
    project = write_project(tmp_path / "c", f"destinations:\n  files:\n    type: csv\n    path: {out}\n    fields: [email, phone]\n",
                            {"vip": "sync:\n  - destination: files"})
    [run] = engine.sync(project, warehouse, settings=engine.Settings(env={}))
    with (out / "vip" / f"{run.sync_id}_added.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == {"'" + f for f in FORMULAS} | {"plain"}
    assert by_id["plain"] == ["plain", "'=x@example.com", ""]
    assert by_id["'-2+3"] == ["'-2+3", "'-2+3@example.com", "'+91 98765 43210"]


def test_members_output_escapes_formulas(tmp_path, capsys):
    warehouse = _warehouse(tmp_path)
    assert main(["members", "--warehouse", str(warehouse)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert {r[1] for r in rows[1:]} == {"'" + f for f in FORMULAS} | {"plain"}
