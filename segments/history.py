"""Membership history: who entered and who left each segment, build after build.

Publishing a build records it, in the publish's own transaction (see
:func:`segments.warehouse.publish`), by comparing the membership being replaced with
the build's:

``segment_membership_history``
    one row per change: ``segment_name, user_id, change ('entered' | 'exited'),
    as_of, published_at, arm`` (``arm``: the member's experiment arm, SPEC 2.7; a
    history recorded before arms existed gets the column added). A segment that
    disappears from the specs sees all its members exit.
``segment_size_history``
    one row per segment per publish: ``segment_name, as_of, published_at, members,
    holdout, entered, exited``. The size check and the size-over-time plots read it.

``as_of`` is the build's instant; ``published_at`` the wall-clock time of the publish
(UTC), which tells two publishes of the same ``as_of`` apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from segments.compiler import models as md

HISTORY = "segment_membership_history"
SIZES = "segment_size_history"
ENTERED, EXITED = "entered", "exited"

_HISTORY_COLUMNS = "segment_name VARCHAR, user_id VARCHAR, change VARCHAR, as_of TIMESTAMP, published_at TIMESTAMP, arm VARCHAR"
ARM = "arm"
_SIZES_COLUMNS = (
    "segment_name VARCHAR, as_of TIMESTAMP, published_at TIMESTAMP, "
    "members BIGINT, holdout BIGINT, entered BIGINT, exited BIGINT"
)


def _literal(value: str | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        typed = exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.Type.TIMESTAMP)
        return typed.sql(dialect="duckdb")
    return exp.Literal.string(value).sql(dialect="duckdb")


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def record(
    con: duckdb.DuckDBPyConnection,
    target_schema: str,
    build_schema: str,
    segments: Sequence[str],
    as_of: dt.datetime,
    published_at: dt.datetime | None = None,
) -> list[str]:
    """The statements that record a publish on a DuckDB connection (see :func:`statements`)."""
    published = _exists(con, target_schema, md.MEMBERSHIP)
    return statements(
        target_schema, build_schema, segments, as_of, published, published_at,
        columns={"history": _columns(con, target_schema, HISTORY), "published": _columns(con, target_schema, md.MEMBERSHIP),
                 "built": _columns(con, build_schema, md.MEMBERSHIP)},
    )


def _columns(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", [schema, table]
    ).fetchall()
    return {str(row[0]) for row in rows}


def statements(
    target_schema: str,
    build_schema: str,
    segments: Sequence[str],
    as_of: dt.datetime,
    published_before: bool,
    published_at: dt.datetime | None = None,
    columns: dict[str, set[str]] | None = None,
) -> list[str]:
    """The statements that record a publish; run them before the membership is replaced.

    Args:
        target_schema: where ``segment_membership`` is published (and history kept).
        build_schema: where the build wrote its ``segment_membership``.
        segments: every segment of the build (each gets a size row).
        as_of: the build's instant.
        published_before: whether a membership was published before.
        published_at: when the publish happens (default: now, UTC).
        columns: the columns of the ``history`` (empty before the first publish), of
            the ``published`` and of the ``built`` ``segment_membership``; by default
            all have ``arm``. A membership without it gives no arm.
    """
    columns = columns or {}
    history_columns, before_columns, built_columns = (columns.get(k, {ARM}) for k in ("history", "published", "built"))
    published_at = published_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    history, sizes = f"{target_schema}.{HISTORY}", f"{target_schema}.{SIZES}"
    built = f"{build_schema}.{md.MEMBERSHIP}"
    before = f"{target_schema}.{md.MEMBERSHIP}"
    if not published_before:
        before = "(SELECT CAST(NULL AS VARCHAR) AS segment_name, CAST(NULL AS VARCHAR) AS user_id WHERE FALSE) AS nothing_published"
        before_columns = set()
    at, now = _literal(as_of), _literal(published_at)

    def arm(columns: set[str]) -> str:
        return ARM if ARM in columns else f"CAST(NULL AS VARCHAR) AS {ARM}"

    # One full join of the old and the new membership finds both who entered (no old
    # row) and who left (no new row): one hash table, where two EXCEPTs build two.
    moved = (
        f"SELECT COALESCE(n.segment_name, o.segment_name) AS segment_name, COALESCE(n.user_id, o.user_id) AS user_id, "
        f"CASE WHEN o.user_id IS NULL THEN {_literal(ENTERED)} ELSE {_literal(EXITED)} END AS change, {at}, {now}, "
        f"COALESCE(n.{ARM}, o.{ARM}) AS {ARM} "
        f"FROM (SELECT segment_name, user_id, {arm(built_columns)} FROM {built}) AS n "
        f"FULL OUTER JOIN (SELECT segment_name, user_id, {arm(before_columns)} FROM {before}) AS o "
        f"ON n.segment_name = o.segment_name AND n.user_id = o.user_id "
        f"WHERE n.user_id IS NULL OR o.user_id IS NULL"
    )
    sql = [
        f"CREATE TABLE IF NOT EXISTS {history} ({_HISTORY_COLUMNS})",
        f"CREATE TABLE IF NOT EXISTS {sizes} ({_SIZES_COLUMNS})",
    ]
    if history_columns and ARM not in history_columns:  # recorded before arms existed
        sql.append(f"ALTER TABLE {history} ADD COLUMN {ARM} VARCHAR")
    sql.append(f"INSERT INTO {history} {moved}")
    if segments:
        names = ", ".join(f"({_literal(name)})" for name in segments)
        sql.append(
            f"INSERT INTO {sizes} SELECT s.segment_name, {at}, {now}, "
            f"(SELECT COUNT(*) FROM {built} m WHERE m.segment_name = s.segment_name), "
            f"(SELECT COUNT(*) FROM {built} m WHERE m.segment_name = s.segment_name AND m.is_holdout), "
            f"(SELECT COUNT(*) FROM {history} h WHERE h.segment_name = s.segment_name "
            f"AND h.published_at = {now} AND h.change = {_literal(ENTERED)}), "
            f"(SELECT COUNT(*) FROM {history} h WHERE h.segment_name = s.segment_name "
            f"AND h.published_at = {now} AND h.change = {_literal(EXITED)}) "
            f"FROM (VALUES {names}) AS s(segment_name)"
        )
    return sql


@dataclass(frozen=True)
class BuildSize:
    """A segment's size at its latest publish, and at the publish before it.

    >>> BuildSize("vip", dt.datetime(2026, 1, 15), 120, 0, 30, 10, previous=100).change_pct
    20.0
    >>> BuildSize("vip", dt.datetime(2026, 1, 15), 5, 0, 5, 0, previous=0).change_pct
    inf
    >>> BuildSize("vip", dt.datetime(2026, 1, 15), 5, 0, 5, 0, previous=None).change_pct is None
    True
    """

    segment: str
    as_of: dt.datetime
    members: int
    holdout: int
    entered: int
    exited: int
    previous: int | None  # members at the publish before; None: first publish

    @property
    def change_pct(self) -> float | None:
        """Size change against the previous publish, in percent of it (None on the first)."""
        if self.previous is None:
            return None
        if self.previous == 0:
            return 0.0 if self.members == 0 else float("inf")
        return abs(self.members - self.previous) * 100.0 / self.previous


def latest(con: duckdb.DuckDBPyConnection, target_schema: str, segments: Sequence[str] | None = None) -> dict[str, BuildSize]:
    """Each segment's :class:`BuildSize` at its latest publish (only ``segments`` if given)."""
    if not _exists(con, target_schema, SIZES):
        return {}
    rows = con.execute(
        "SELECT segment_name, as_of, members, holdout, entered, exited, previous FROM ("
        "SELECT *, LAG(members) OVER (PARTITION BY segment_name ORDER BY published_at) AS previous, "
        "ROW_NUMBER() OVER (PARTITION BY segment_name ORDER BY published_at DESC) AS recency "
        f"FROM {target_schema}.{SIZES}) WHERE recency = 1"
    ).fetchall()
    found = {row[0]: BuildSize(*row) for row in rows}
    if segments is None:
        return found
    return {name: found[name] for name in segments if name in found}


def forget(target_schema: str, published_at: dt.datetime) -> list[str]:
    """Undo what :func:`statements` recorded for a publish that then failed."""
    at = _literal(published_at)
    return [f"DELETE FROM {target_schema}.{table} WHERE published_at = {at}" for table in (HISTORY, SIZES)]
