"""A second writer on a busy DuckDB warehouse says so in one line and exits 1 (issue 18, item 7)."""

from __future__ import annotations

import subprocess
import sys

import duckdb

from segments.cli import main
from sync_fixtures import CATALOG, users, write_users

HOLD = "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n"


def test_a_build_on_a_busy_warehouse_prints_one_line_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGMENTS_WORK_DIR", str(tmp_path / "work"))
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, users(3))
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "a.yml").write_text("name: a\nwhere: {attribute: email, is_set: true}\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["build", "--specs", str(specs), "--warehouse", str(warehouse)]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is busy" in err, err
