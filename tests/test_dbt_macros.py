"""The project's dbt test macros, rendered as dbt renders them and run on DuckDB.

``segments_unique_together`` has a DuckDB form (hashes first) and a plain one for the
other engines: both must fail on exactly the same rows.
"""

from __future__ import annotations

import re

import duckdb
import jinja2
import pytest

from segments import paths

MACRO = paths.DBT_PROJECT_DIR / "macros" / "tests" / "segments_unique_together.sql"


def unique_together_sql(engine: str, model: str, columns: list[str]) -> str:
    """The test's query for ``engine`` (dbt's ``{% test %}`` block read as a plain
    Jinja template of its arguments)."""
    text = MACRO.read_text()
    body = re.search(r"{% test segments_unique_together\(model, columns\) %}(.*){% endtest %}", text, re.S)
    assert body is not None, "the macro's test block"
    return jinja2.Template(body.group(1)).render(model=model, columns=columns, target={"type": engine})


ROWS = [("a", "u1"), ("a", "u2"), ("b", "u1"), ("b", "u2")]
CASES = [
    ("unique", ROWS, []),
    ("one repeated pair", ROWS + [("a", "u2")], [("a", "u2", 2)]),
    ("pairs repeated twice and thrice", ROWS + [("b", "u1"), ("a", "u1"), ("a", "u1")], [("a", "u1", 3), ("b", "u1", 2)]),
    ("nulls group together", ROWS + [(None, "u1"), (None, "u1")], [(None, "u1", 2)]),
]


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
@pytest.mark.parametrize("label,rows,failures", CASES, ids=[c[0] for c in CASES])
def test_unique_together_fails_on_every_repeated_combination(engine, label, rows, failures):
    con = duckdb.connect()
    con.execute("CREATE TABLE membership (segment_name TEXT, user_id TEXT)")
    con.executemany("INSERT INTO membership VALUES (?, ?)", rows)
    sql = unique_together_sql(engine, "membership", ["segment_name", "user_id"])
    assert ("hash(" in sql) == (engine == "duckdb")
    assert sorted(con.execute(sql).fetchall(), key=repr) == sorted(failures, key=repr)
