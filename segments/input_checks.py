"""What ``segments load`` checks before it writes anything (issue 18, item 6).

A build needs unique, non-null user keys and events with a user, a name and a time;
without them it fails later on a dbt test name, or silently drops rows. The checks
run on the rows staged in DuckDB, say which rows (counted from 1, the header not
counted) and never echo a value: input rows are member data.
"""

from __future__ import annotations

import re

import duckdb
from sqlglot import exp

from segments.errors import SegmentsError

ROWID = "rowid"  # DuckDB's row number of a table, in insertion (file) order
SHOWN = 5  # rows named per problem


def _rows(duck: duckdb.DuckDBPyConnection, table: str, where: exp.Expression) -> list[int]:
    query = exp.select(exp.column(ROWID)).from_(table).where(where).order_by(exp.column(ROWID)).limit(SHOWN + 1)
    return [int(r[0]) + 1 for r in duck.execute(query.sql("duckdb")).fetchall()]


def _listed(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN])
    return shown + (" and more" if len(rows) > SHOWN else "")


def _typed(column: exp.Expression, kind: str) -> exp.Expression:
    if kind == "timestamp":  # as the load casts: through TIMESTAMPTZ
        return exp.TryCast(this=exp.TryCast(this=column, to=exp.DataType.build("TIMESTAMPTZ")), to=exp.DataType.build("TIMESTAMP"))
    return exp.TryCast(this=column, to=exp.DataType.build({"number": "DOUBLE", "boolean": "BOOLEAN"}[kind]))


def check_values(duck: duckdb.DuckDBPyConnection, raw: str, path: object, columns: list[tuple[str, str]]) -> None:
    """Every value of a typed catalog column casts to its type, else SegmentsError
    naming the column, the type and the rows."""
    problems = []
    for name, kind in columns:
        if kind not in ("number", "boolean", "timestamp"):
            continue
        column = exp.column(name, quoted=True)
        bad = _rows(duck, raw, exp.and_(column.is_(exp.null()).not_(), _typed(column.copy(), kind).is_(exp.null())))
        if bad:
            problems.append(f"column {name} holds values that are not a {kind} at rows {_listed(bad)}")
    if problems:
        raise SegmentsError(f"{path}: " + "; ".join(problems) + "; nothing was written")


def check_required(
    duck: duckdb.DuckDBPyConnection, table: str, path: object, not_null: list[str], unique: str | None
) -> None:
    """The columns a build requires are filled, and ``unique`` holds no repeats."""
    problems = []
    for name in not_null:
        missing = _rows(duck, table, exp.column(name, quoted=True).is_(exp.null()))
        if missing:
            problems.append(f"{name} is empty at rows {_listed(missing)}")
    if unique is not None:
        key = exp.column(unique, quoted=True)
        repeated = exp.select(key.copy()).from_(table).group_by(key.copy()).having(exp.Count(this=exp.Star()) > 1)
        dup = _rows(duck, table, key.copy().isin(query=repeated))
        if dup:
            problems.append(f"{unique} repeats a key at rows {_listed(dup)} (a user key must be unique)")
    if problems:
        raise SegmentsError(f"{path}: " + "; ".join(problems) + "; nothing was written")


_LINE = re.compile(r"[Ll]ine:? ?(\d+)")


def read_error(path: object, error: duckdb.Error) -> SegmentsError:
    """A file DuckDB cannot read, said in plain words: DuckDB's own message quotes the
    offending line, which is member data."""
    text = str(error)
    line = _LINE.search(text)
    where = f" near line {line.group(1)}" if line else ""
    kind = "is not a CSV file with a header row and the same number of columns on every line" if "CSV" in text else "cannot be read as a table"
    return SegmentsError(f"{path}: {kind}{where}; nothing was written")
