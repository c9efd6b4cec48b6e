"""Sync state in the warehouse: what each destination holds, the plan, the run log.

Three tables in the target schema, for users to query:

- ``sync_state``: per (destination, segment), the members this project put there and
  the destination's id for each. Only these are ever removed: members someone else
  added are not ours to touch.
- ``sync_runs``: one row per (run, destination, segment): status, planned and
  applied counts, acknowledged batches, and why it stopped.
- ``sync_errors``: per-record failures (status and message; never PII).

A plan is the difference between the wanted audience and ``sync_state``, computed in
one short hold of the warehouse and written, in a fixed order, to the sync's own
scratch database (:mod:`sync.scratch`), from which it is read back page by page while
the warehouse is free for other commands: memory stays flat however large the
audience. :meth:`Store.checkpoint` holds the warehouse again just long enough to apply
one acknowledged batch to the state in one transaction: a crash loses at most the
batches in flight.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from segments import warehouse
from segments.compiler import models as md
from segments.errors import SegmentsError
from segments.spec import model as m
from sync.destinations.base import Batch, BatchResult, EncodedChanges, LazyRecords, Record, RecordFailure
from sync.scratch import WAREHOUSE, Scratch, table

SCHEMA = warehouse.TARGET_SCHEMA
STATE, RUNS, ERRORS = "sync_state", "sync_runs", "sync_errors"
PLAN = "sync_plan"  # in the scratch database, one pair at a time

# DuckDB's memory for a sync (its default is 80% of the machine's RAM): beyond it the
# plan and the state spill to a temporary folder beside the scratch database, so a sync's
# footprint does not grow with the audience. SEGMENTS_SYNC_MEMORY_LIMIT overrides it.
MEMORY_LIMIT = "64MB"
MEMORY_LIMIT_ENV = "SEGMENTS_SYNC_MEMORY_LIMIT"
# One DuckDB thread: the per-batch queries (a page of the plan, a checkpoint) are
# small and ran 3x faster on one thread than on two, and under MEMORY_LIMIT the plan's
# joins and sort over 3M members fit on one thread where two ran out of memory.
THREADS = 1
ENCODE_ROWS = 10_000  # plan rows one query encodes (Store._encode)

_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {WAREHOUSE}.{SCHEMA}.{STATE} (
        destination VARCHAR NOT NULL, segment_name VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
        remote_id VARCHAR, synced_at TIMESTAMP NOT NULL, sync_id VARCHAR NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {WAREHOUSE}.{SCHEMA}.{RUNS} (
        sync_id VARCHAR NOT NULL, destination VARCHAR NOT NULL, segment_name VARCHAR NOT NULL,
        started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, status VARCHAR NOT NULL,
        planned_adds BIGINT NOT NULL, planned_removes BIGINT NOT NULL,
        added BIGINT NOT NULL DEFAULT 0, removed BIGINT NOT NULL DEFAULT 0,
        failed BIGINT NOT NULL DEFAULT 0, batches BIGINT NOT NULL DEFAULT 0, message VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS {WAREHOUSE}.{SCHEMA}.{ERRORS} (
        sync_id VARCHAR NOT NULL, destination VARCHAR NOT NULL, segment_name VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL, operation VARCHAR NOT NULL, status_code INTEGER,
        message VARCHAR NOT NULL, failed_at TIMESTAMP NOT NULL)""",
)


def _wh(name: str) -> str:
    """A sync table of the warehouse, as SQL text for the scratch connection."""
    return f"{WAREHOUSE}.{SCHEMA}.{name}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _sql(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


def _literal(text: str) -> str:
    return _sql(exp.Literal.string(text))


# Column types whose DuckDB JSON is what json.dumps makes of their Python values
# (strings, booleans, integers; dates as ISO text, as sync.destinations.webhook does).
_JSON_AS_PYTHON = frozenset({
    "VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "DATE",
})


def batch_id(destination: str, segment: str, number: int, keys: str) -> str:
    """A batch's id: its pair, its number and its changes (``keys``: ``"\\0op:user_id"``
    per change, in plan order), so the same changes from the same state get the same id.

    Examples:
        >>> batch_id("hook", "vip", 0, "\\0add:u1\\0remove:u9")
        'msg_e3737e3bf3e5e12a7e86d4baa77edee2'
    """
    return "msg_" + hashlib.sha256(f"{destination}\0{segment}\0{number}{keys}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Wanted:
    """Who should be in one segment's audience at one destination (SPEC 4)."""

    segment: str
    fields: tuple[str, ...] = ()  # user attributes sent with adds
    requires: str | None = None  # a boolean attribute that must be true
    required_fields: tuple[str, ...] = ()  # attributes a member must have
    arm: str | None = None  # only this experiment arm's members

    @property
    def key(self) -> str:
        """The pair's name in ``sync_state`` and ``sync_runs``: ``<segment>__<arm>`` for one arm."""
        return f"{self.segment}__{self.arm}" if self.arm else self.segment


@dataclass(frozen=True)
class PlanSummary:
    adds: int
    removes: int
    audience: int  # members the destination holds from us now
    sample_adds: tuple[str, ...]
    sample_removes: tuple[str, ...]

    @property
    def remove_pct(self) -> float:
        return 100.0 * self.removes / self.audience if self.audience else 0.0


def forget(con: duckdb.DuckDBPyConnection, destination: str) -> None:
    """Drop what we know a destination holds (``con``: the warehouse's own
    connection): the next sync sends everything again."""
    if con.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                   [SCHEMA, STATE]).fetchone()[0]:
        con.execute(f"DELETE FROM {SCHEMA}.{STATE} WHERE destination = ?", [destination])


class Store:
    """Sync bookkeeping in a scratch database that holds the warehouse only briefly:
    every method that reads or writes the warehouse holds it for its own duration
    (or shares the caller's :meth:`hold`)."""

    def __init__(self, scratch: Scratch, catalog: m.Catalog):
        self.scratch = scratch
        self.con = scratch.con
        self.catalog = catalog
        self.memory_limit: str | None = None

    def hold(self) -> AbstractContextManager[None]:
        """Hold the warehouse across several calls (see :meth:`Scratch.hold`)."""
        return self.scratch.hold()

    def limit_resources(self, memory_limit: str) -> None:
        """DuckDB's memory and threads for a sync (:data:`MEMORY_LIMIT`, :data:`THREADS`).

        Raises:
            SegmentsError: a memory limit DuckDB does not understand.
        """
        try:
            self.con.execute(f"SET memory_limit = {_literal(memory_limit)}")
        except duckdb.Error as error:
            raise SegmentsError(f"{MEMORY_LIMIT_ENV}={memory_limit!r}: {error}") from None
        self.con.execute(f"SET threads = {THREADS}")
        self.memory_limit = memory_limit

    # ---- set-up ------------------------------------------------------------------------

    def ensure_tables(self) -> None:
        with self.hold():
            for statement in _DDL:
                self.con.execute(statement)

    def flush_wal(self) -> None:
        """Write what the write-ahead log holds to the warehouse file. After a crash
        it holds the state the dead sync recorded, replayed into memory on opening:
        written out, it no longer takes the plan's room under the memory limit."""
        with self.hold():
            self.con.execute(f"CHECKPOINT {WAREHOUSE}")

    def _has(self, name: str) -> bool:
        assert self.scratch.holding, "read the warehouse while holding it"
        return bool(self.con.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? AND table_name = ?",
            [WAREHOUSE, SCHEMA, name],
        ).fetchone()[0])

    def built_segments(self) -> set[str]:
        with self.hold():
            if not self._has(warehouse.SEGMENT_CATALOG):
                raise SegmentsError("the warehouse has no build yet: run `segments build` before `segments sync`")
            rows = self.con.execute(f"SELECT segment_name FROM {_wh(warehouse.SEGMENT_CATALOG)}").fetchall()
        return {r[0] for r in rows}

    # ---- the plan ----------------------------------------------------------------------

    def _attribute(self, name: str) -> exp.Column:
        try:
            column = self.catalog.users.attributes[name].column
        except KeyError:
            known = ", ".join(sorted(self.catalog.users.attributes))
            raise SegmentsError(f"no users attribute {name!r} in _catalog.yml (known: {known})") from None
        return exp.column(column, table="u", quoted=True)

    def _wanted_query(self, wanted: Wanted) -> exp.Select:
        users = self.catalog.users
        user_id = exp.cast(exp.column(users.key, table="u", quoted=True), exp.DataType.Type.VARCHAR)
        query = (
            exp.select(exp.alias_(user_id, "user_id"))
            .from_(exp.alias_(table(md.MEMBERSHIP, SCHEMA), "m"))
            .join(
                exp.alias_(table(users.relation.name, users.relation.schema or SCHEMA, quoted=True), "u"),
                on=exp.EQ(this=user_id, expression=exp.column("user_id", table="m")),
            )
            .where(exp.EQ(this=exp.column("segment_name", table="m"), expression=exp.Literal.string(wanted.segment)))
            .where(exp.not_(exp.column("is_holdout", table="m")))
        )
        if wanted.arm is not None:
            query = query.where(exp.EQ(this=exp.column("arm", table="m"), expression=exp.Literal.string(wanted.arm)))
        for i, name in enumerate(wanted.fields):
            query = query.select(exp.alias_(self._attribute(name), f"f_{i}"))
        if wanted.requires:
            query = query.where(exp.Is(this=self._attribute(wanted.requires), expression=exp.true()))
        for name in wanted.required_fields:
            query = query.where(exp.not_(exp.Is(this=self._attribute(name), expression=exp.null())))
        return query

    def _state_query(self, destination: str, segment: str) -> exp.Select:
        if not self._has(STATE):
            return exp.select(
                exp.alias_(exp.cast(exp.null(), "VARCHAR"), "user_id"),
                exp.alias_(exp.cast(exp.null(), "VARCHAR"), "remote_id"),
            ).where(exp.false())
        return (
            exp.select("user_id", "remote_id")
            .from_(table(STATE, SCHEMA))
            .where(exp.EQ(this=exp.column("destination"), expression=exp.Literal.string(destination)))
            .where(exp.EQ(this=exp.column("segment_name"), expression=exp.Literal.string(segment)))
        )

    def make_plan(self, destination: str, wanted: Wanted) -> PlanSummary:
        """Write the changes for one pair to the scratch database's plan table, in
        user order (the row at ``rowid`` n is the plan's n-th change, from 0), holding
        the warehouse only while reading it."""
        fields = [f"f_{i}" for i in range(len(wanted.fields))]
        not_in = lambda a, b: exp.not_(exp.Exists(this=exp.select("1").from_(b).where(  # noqa: E731
            exp.EQ(this=exp.column("user_id", table=b), expression=exp.column("user_id", table=a)))))
        adds = exp.select(
            exp.alias_(exp.Literal.string("add"), "op"), exp.column("user_id", table="w"),
            exp.alias_(exp.cast(exp.null(), "VARCHAR"), "remote_id"), *[exp.column(f, table="w") for f in fields],
        ).from_("w").where(not_in("w", "s"))
        removes = exp.select(
            exp.alias_(exp.Literal.string("remove"), "op"), exp.column("user_id", table="s"),
            exp.column("remote_id", table="s"), *[exp.alias_(exp.null(), f) for f in fields],
        ).from_("s").where(not_in("s", "w"))
        changes = exp.union(adds, removes, distinct=False)
        self.drop_plan()
        # Rows go in in plan order, so a row's rowid is its place in the plan (one sort,
        # which spills under the memory limit; a row_number() window ran out of it).
        self.con.execute("SET preserve_insertion_order = true")
        with self.hold():
            state = self._state_query(destination, wanted.key)
            ordered = (
                exp.select("op", "user_id", "remote_id", *fields)
                .from_(exp.alias_(exp.Subquery(this=changes), "c"))
                .with_("w", as_=self._wanted_query(wanted))
                .with_("s", as_=state)
                .order_by("user_id", "op")
            )
            try:
                self.con.execute(f"CREATE TABLE {PLAN} AS {_sql(ordered)}")
            except duckdb.OutOfMemoryException:
                raise SegmentsError(
                    f"planning {wanted.key} -> {destination} needs more memory than DuckDB's limit "
                    f"{self.memory_limit}: set {MEMORY_LIMIT_ENV} higher (e.g. 256MB)") from None
            audience = self.con.execute(f"SELECT COUNT(*) FROM ({_sql(state)})").fetchone()[0]
        adds_n, removes_n = self.con.execute(
            f"SELECT COUNT(*) FILTER (WHERE op = 'add'), COUNT(*) FILTER (WHERE op = 'remove') FROM {PLAN}"
        ).fetchone()
        sample = lambda op: tuple(r[0] for r in self.con.execute(  # noqa: E731
            f"SELECT user_id FROM {PLAN} WHERE op = ? ORDER BY rowid LIMIT 5", [op]).fetchall())
        return PlanSummary(adds_n, removes_n, audience, sample("add"), sample("remove"))

    def drop_plan(self) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {PLAN}")

    @staticmethod
    def _records(rows: Sequence[tuple[object, ...]], fields: Sequence[str], op: str) -> tuple[Record, ...]:
        if op == "add":
            return tuple(Record(r[1], dict(zip(fields, r[3:]))) for r in rows if r[0] == "add")  # type: ignore[arg-type]
        return tuple(Record(r[1], remote_id=r[2]) for r in rows if r[0] == "remove")  # type: ignore[arg-type]

    def _page(self, fields: Sequence[str], first: int, last: int, op: str | None = None) -> list[tuple[object, ...]]:
        columns = ", ".join(["op", "user_id", "remote_id", *[f"f_{i}" for i in range(len(fields))]])
        only = "" if op is None else " AND op = ?"
        return self.con.execute(
            f"SELECT {columns} FROM {PLAN} WHERE rowid BETWEEN ? AND ?{only} ORDER BY rowid",
            [first, last] + ([] if op is None else [op]),
        ).fetchall()

    def _lazy(self, count: int, fields: Sequence[str], first: int, last: int, op: str) -> LazyRecords:
        return LazyRecords(count, lambda: self._records(self._page(fields, first, last, op), fields, op))

    def _json_encodable(self, fields: Sequence[str]) -> bool:
        """Whether DuckDB's JSON of the plan's fields is byte for byte what
        ``json.dumps`` makes of the Python values (see :class:`EncodedChanges`)."""
        types = [str(d[1]) for d in self.con.execute(f"SELECT * FROM {PLAN} LIMIT 0").description[3:]]
        return "user_id" not in fields and all(t in _JSON_AS_PYTHON for t in types)

    @staticmethod
    def _json_page_sql(fields: Sequence[str]) -> str:
        """One page of the plan as (adds, removes, batch id keys, adds' JSON objects,
        removes' JSON objects), every string made in the warehouse."""
        pairs = "".join(f", {_literal(name)}, f_{i}" for i, name in enumerate(fields))
        return (
            "SELECT COUNT(*) FILTER (WHERE op = 'add'), COUNT(*) FILTER (WHERE op = 'remove'), "
            "string_agg(chr(0) || op || ':' || user_id, '' ORDER BY rowid), "
            f"string_agg(json_object('user_id', user_id{pairs})::VARCHAR, ',' ORDER BY rowid) FILTER (WHERE op = 'add'), "
            "string_agg(json_object('user_id', user_id)::VARCHAR, ',' ORDER BY rowid) FILTER (WHERE op = 'remove') "
            f"FROM {PLAN} WHERE rowid BETWEEN ? AND ?"
        )

    def _encode(self, json_page: str, first: int, last: int) -> tuple[int, int, str, EncodedChanges]:
        """Plan rows first..last as (adds, removes, batch id keys, their JSON), at most
        :data:`ENCODE_ROWS` rows per query: a query's strings are built in DuckDB's
        memory, which is capped, and batches may be far larger."""
        adds = removes = 0
        keys: list[str] = []
        added: list[str] = []
        removed: list[str] = []
        for start in range(first, last + 1, ENCODE_ROWS):
            end = min(start + ENCODE_ROWS, last + 1) - 1
            n_adds, n_removes, some_keys, some_added, some_removed = self.con.execute(json_page, [start, end]).fetchone()
            adds, removes = adds + n_adds, removes + n_removes
            keys.append(some_keys)
            added += [some_added] if some_added else []
            removed += [some_removed] if some_removed else []
        return adds, removes, "".join(keys), EncodedChanges(f"[{','.join(added)}]", f"[{','.join(removed)}]")

    def batches(
        self, destination: str, segment: str, sync_id: str, fields: Sequence[str], size: int, total: int,
        encode: bool = False,
    ) -> Iterator[tuple[Batch, int, int]]:
        """(batch, first, last) over the plan, ``size`` changes at a time; first and
        last are the batch's first and last rowid in the plan.

        Batch ids continue the pair's count of acknowledged batches, so a rerun after
        a crash gives the unacknowledged batch the id it had before. With ``encode``
        (a destination that sends SPEC 4.1's JSON), the warehouse encodes each batch
        and its records are read only if asked for: no Python object per record.
        """
        with self.hold():
            done = self.con.execute(
                f"SELECT COALESCE(SUM(batches), 0) FROM {_wh(RUNS)} WHERE destination = ? AND segment_name = ?",
                [destination, segment],
            ).fetchone()[0]
        encode = encode and self._json_encodable(fields)
        json_page = self._json_page_sql(fields)
        for number, first in enumerate(range(0, total, size)):
            last = min(first + size, total) - 1
            added: Sequence[Record]
            removed: Sequence[Record]
            encoded = None
            if encode:
                adds, removes, keys, encoded = self._encode(json_page, first, last)
                added, removed = self._lazy(adds, fields, first, last, "add"), self._lazy(removes, fields, first, last, "remove")
            else:
                rows = self._page(fields, first, last)
                added, removed = self._records(rows, fields, "add"), self._records(rows, fields, "remove")
                keys = "".join(f"\0{r[0]}:{r[1]}" for r in rows)
            yield Batch(destination, segment, sync_id, batch_id(destination, segment, done + number, keys),
                        added, removed, encoded), first, last

    # ---- the run log and the state ----------------------------------------------------

    def start_run(self, sync_id: str, destination: str, segment: str, plan: PlanSummary) -> None:
        # We hold the destination's lock: a 'running' row of it is a run that died.
        with self.hold():
            self.con.execute(
                f"UPDATE {_wh(RUNS)} SET status = 'interrupted' WHERE destination = ? AND status = 'running'",
                [destination],
            )
            self.con.execute(
                f"INSERT INTO {_wh(RUNS)} (sync_id, destination, segment_name, started_at, status, planned_adds, planned_removes) "
                "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                [sync_id, destination, segment, _now(), plan.adds, plan.removes],
            )

    def finish_run(self, sync_id: str, status: str, message: str | None = None) -> None:
        with self.hold():
            self.con.execute(
                f"UPDATE {_wh(RUNS)} SET status = ?, finished_at = ?, message = ? WHERE sync_id = ?",
                [status, _now(), message, sync_id],
            )

    def checkpoint(self, batch: Batch, first: int, last: int, result: BatchResult) -> tuple[int, int]:
        """Apply an acknowledged batch to the state, log its failures: one transaction,
        in one short hold of the warehouse.

        Returns (added, removed) as applied.
        """
        failed_adds = [f.user_id for f in result.failures if f.operation == "add"]
        failed_removes = [f.user_id for f in result.failures if f.operation == "remove"]
        with self.hold():
            return self._apply(batch, first, last, result, failed_adds, failed_removes)

    def _apply(
        self, batch: Batch, first: int, last: int, result: BatchResult, failed_adds: list[str], failed_removes: list[str]
    ) -> tuple[int, int]:
        ids = list(result.remote_ids.items())
        now = _now()
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"INSERT INTO {_wh(STATE)} "
                f"SELECT ?, ?, p.user_id, r.remote_id, ?, ? FROM {PLAN} p "
                "LEFT JOIN (SELECT UNNEST(?::VARCHAR[]) AS user_id, UNNEST(?::VARCHAR[]) AS remote_id) r ON r.user_id = p.user_id "
                "WHERE p.rowid BETWEEN ? AND ? AND p.op = 'add' AND NOT list_contains(?::VARCHAR[], p.user_id)",
                [batch.destination, batch.segment, now, batch.sync_id,
                 [k for k, _ in ids], [v for _, v in ids], first, last, failed_adds],
            )
            if batch.removed:
                con.execute(
                    f"DELETE FROM {_wh(STATE)} WHERE destination = ? AND segment_name = ? AND user_id IN ("
                    f"SELECT user_id FROM {PLAN} WHERE rowid BETWEEN ? AND ? AND op = 'remove' "
                    "AND NOT list_contains(?::VARCHAR[], user_id))",
                    [batch.destination, batch.segment, first, last, failed_removes],
                )
            added, removed = len(batch.added) - len(failed_adds), len(batch.removed) - len(failed_removes)
            con.execute(
                f"UPDATE {_wh(RUNS)} SET added = added + ?, removed = removed + ?, failed = failed + ?, "
                "batches = batches + 1 WHERE sync_id = ?",
                [added, removed, len(result.failures), batch.sync_id],
            )
            if result.failures:
                self._log_failures(batch, result.failures, now)
            con.execute("COMMIT")
        except duckdb.Error as error:
            con.execute("ROLLBACK")
            raise SegmentsError(f"recording sync state failed: {error}") from None
        return added, removed

    def _log_failures(self, batch: Batch, failures: list[RecordFailure], at: dt.datetime) -> None:
        self.con.executemany(
            f"INSERT INTO {_wh(ERRORS)} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [[batch.sync_id, batch.destination, batch.segment, f.user_id, f.operation, f.status, f.message, at]
             for f in failures],
        )
