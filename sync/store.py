"""A sync's plan and its bookkeeping, on every engine.

The record is three tables users query (``sync_state``, ``sync_runs``,
``sync_errors``: :mod:`sync.ledger`), kept where :mod:`sync.places` says for the
engine. Only the members in ``sync_state`` are ever removed: members someone else
added are not ours to touch.

A plan is the difference between the wanted audience and ``sync_state``, computed in
one short hold of the warehouse and written, in a fixed order, to the sync's own
scratch database (:mod:`sync.scratch`), from which it is read back page by page while
the warehouse is free for other commands: memory stays flat however large the
audience. On DuckDB the plan reads the attached warehouse in place; from PostgreSQL and
Spark the audience (and, from PostgreSQL, the state) is streamed into the scratch
database first, :data:`COPY_ROWS` rows at a time. A pair known to be in sync at an
earlier publish (:class:`Since`) is planned from the users who moved since alone
(:meth:`Store.read_moved`), all such pairs of a destination in one table
(:meth:`Store.plan_since`). :meth:`Store.checkpoint` holds the warehouse again just
long enough to apply one acknowledged batch to the state in one transaction: a crash
loses at most the batches in flight. (The removes of a plan since a publish carry the
rowids of their state rows, which spare the checkpoint a scan of the state.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from segments import history, warehouse
from segments.compiler import models as md
from segments.engines.base import count_if, create_table, drop, duckdb_setting, rowid_in, value, values_query
from segments.errors import SegmentsError
from segments.spec import model as m
from sync.destinations.batches import Batch, BatchResult, EncodedChanges, LazyRecords, Record
from sync.ledger import Changes
from sync.places import Place
from sync.scratch import WAREHOUSE

PLAN = "sync_plan"  # in the scratch database: a pair's plan (several pairs: sync_plan_<n>, see make_plan)
# Copies of a remote warehouse's rows a plan reads (PostgreSQL, Spark), in the scratch database
WANTED_COPY, STATE_COPY = "sync_wanted", "sync_state_copy"
# What plans since a publish read (Store.read_moved): the users who moved, their membership
# rows, their wanted rows, their state
MOVED, MOVED_MEMBERS, MOVED_WANTED, MOVED_STATE = "sync_moved", "sync_moved_members", "sync_moved_wanted", "sync_moved_state"
ARM = "arm"
# A since plan's removes carry the rowid their state row had when read_moved read it,
# for the checkpoint to find it without scanning the state (Ledger._delete)
STATE_ROW = "state_row"
COPY_ROWS = 10_000  # rows of a remote warehouse moved to the scratch database at a time
_TEXT = exp.DataType.Type.VARCHAR

# DuckDB's memory for a sync (its default is 80% of the machine's RAM): beyond it the
# plan and the state spill to the scratch database's temporary folder, so a sync's
# footprint does not grow with the audience. SEGMENTS_SYNC_MEMORY_LIMIT overrides it.
MEMORY_LIMIT = "64MB"
MEMORY_LIMIT_ENV = "SEGMENTS_SYNC_MEMORY_LIMIT"
# One DuckDB thread: the per-batch queries (a page of the plan, a checkpoint) are
# small and ran 3x faster on one thread than on two, and under MEMORY_LIMIT the plan's
# joins and sort over 3M members fit on one thread where two ran out of memory.
THREADS = 1
# Threads of the reads of a plan since a publish (Store.read_moved): each scans whole
# tables (membership, users, state) for a few hundred users, and two threads halve its
# time; what they keep is those users' rows, far inside the memory limit.
SCAN_THREADS = min(2, os.cpu_count() or 1)
ENCODE_ROWS = 10_000  # plan rows one query encodes (Store._encode)

def _sql(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


def _temporary(create: exp.Create) -> exp.Create:
    """A scratch table as a temporary one: it spills to the scratch folder under the
    memory limit all the same, and creating or dropping it writes no log to sync to
    disk (a table of the scratch file cost 25ms a plan, most of a small plan's time)."""
    create.set("properties", exp.Properties(expressions=[exp.TemporaryProperty()]))
    return create


def _op_is(op: str) -> exp.Expression:
    return exp.column("op").eq(exp.convert(op))


def _rows(first: int, last: int) -> exp.Expression:
    """Plan rows first..last (their rowids: their places in the plan)."""
    return exp.Between(this=exp.column("rowid"), low=exp.convert(first), high=exp.convert(last))


# Column types whose DuckDB JSON is what json.dumps makes of their Python values
# (strings, booleans, integers; dates as ISO text, as sync.destinations.webhook does).
_JSON_AS_PYTHON = frozenset({
    "VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "DATE",
})


def _of_pair(members: exp.Select, wanted: Wanted, table: str) -> exp.Select:
    """``members`` (with the ``segment_name`` and ``arm`` columns of ``table``) narrowed
    to the pair's segment and arm."""
    query = members.where(exp.column("segment_name", table=table).eq(exp.Literal.string(wanted.segment)))
    if wanted.arm is not None:
        query = query.where(exp.column(ARM, table=table).eq(exp.Literal.string(wanted.arm)))
    return query


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
class Since:
    """A pair whose destination held exactly its wanted audience as published at
    ``as_of``: ``audience`` members, its last sync complete and without a failure.

    Only a user whose membership of the segment changed in a publish since then (a row
    of :data:`segments.history.HISTORY` at ``as_of`` or later) can be missing or extra,
    as long as no users attribute changed (it decides ``requires``, and it changes only
    with a full build: the caller's business). A plan from here reads those users
    alone, not the whole audience.
    """

    as_of: dt.datetime
    audience: int


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


class Store:
    """Sync bookkeeping in a scratch database that holds the warehouse only briefly:
    every method that reads or writes the warehouse holds it for its own duration
    (or shares the caller's :meth:`hold`)."""

    def __init__(self, place: Place, catalog: m.Catalog):
        self.place = place
        self.scratch = place.scratch
        self.con = place.scratch.con
        self.ledger = place.ledger
        self.catalog = catalog
        self.memory_limit: str | None = None
        self._moved_read: tuple[str, frozenset[str]] = ("", frozenset())  # (destination, pair keys) of read_moved
        self._state_rows: set[str] = set()  # the plan tables with a STATE_ROW column
        #: (destination, pair key) -> its batches acknowledged so far, from start_runs on
        self._done: dict[tuple[str, str], int] = {}

    def hold(self) -> AbstractContextManager[None]:
        """Hold the warehouse across several calls (see :meth:`Scratch.hold`)."""
        return self.place.hold()

    def release(self) -> None:
        """Let go of a warehouse a lingering hold kept (see :meth:`Scratch.lingering`)."""
        self.place.scratch.release()

    def limit_resources(self, memory_limit: str) -> None:
        """DuckDB's memory and threads for a sync (:data:`MEMORY_LIMIT`, :data:`THREADS`).

        Raises:
            SegmentsError: a memory limit DuckDB does not understand.
        """
        try:
            duckdb_setting(self.con, "memory_limit", memory_limit)
        except duckdb.Error as error:
            raise SegmentsError(f"{MEMORY_LIMIT_ENV}={memory_limit!r}: {error}") from None
        duckdb_setting(self.con, "threads", THREADS)
        # Rows go into a plan in plan order, so a row's rowid is its place in the plan (one
        # sort, which spills under the memory limit; a row_number() window ran out of it).
        duckdb_setting(self.con, "preserve_insertion_order", True)
        self.memory_limit = memory_limit

    @contextmanager
    def _threads(self, threads: int) -> Iterator[None]:
        """DuckDB's threads for the block, then :data:`THREADS` again."""
        duckdb_setting(self.con, "threads", threads)
        try:
            yield
        finally:
            duckdb_setting(self.con, "threads", THREADS)

    # ---- set-up ------------------------------------------------------------------------

    def ensure_tables(self) -> None:
        with self.hold():
            self.ledger.ensure_tables()

    def flush_wal(self) -> None:
        """Write what the write-ahead log of the attached DuckDB file holds to the
        file. After a crash it holds the state the dead sync recorded, replayed into
        memory on opening: written out, it no longer takes the plan's room under the
        memory limit."""
        if self.place.ledger_local:
            with self.hold():
                self.con.execute(exp.Command(this="CHECKPOINT", expression=exp.to_identifier(WAREHOUSE)).sql("duckdb"))

    def built_segments(self) -> set[str]:
        place = self.place
        with self.hold():
            if not place.membership.exists(place.engine.target_schema, warehouse.SEGMENT_CATALOG, place.catalog):
                raise SegmentsError("the warehouse has no build yet: run `segments build` before `segments sync`")
            rows = place.membership.rows(exp.select("segment_name").from_(place.table(warehouse.SEGMENT_CATALOG)))
        return {str(r[0]) for r in rows}

    # ---- the plan ----------------------------------------------------------------------

    def _attribute(self, name: str) -> exp.Column:
        try:
            column = self.catalog.users.attributes[name].column
        except KeyError:
            known = ", ".join(sorted(self.catalog.users.attributes))
            raise SegmentsError(f"no users attribute {name!r} in _catalog.yml (known: {known})") from None
        return exp.column(column, table="u", quoted=True)

    def _field_types(self, fields: Sequence[str]) -> dict[str, exp.DataType]:
        """The columns of a wanted query copied from a remote warehouse: the
        catalog's types, as DuckDB holds them."""
        types = {"user_id": exp.DataType.build(_TEXT)}
        for i, name in enumerate(fields):
            kind = self.catalog.users.attributes[name].type
            types[f"f_{i}"] = exp.DataType.build(warehouse.CAST_TYPES[kind], dialect="duckdb")
        return types

    def _copy(self, name: str, query: exp.Query, columns: Mapping[str, exp.DataType | exp.DataType.Type]) -> exp.Select:
        """The rows of ``query`` on the membership's engine, moved to a table of the
        scratch database :data:`COPY_ROWS` at a time (never all in memory)."""
        self.con.execute(drop("TABLE", exp.to_table(name)).sql("duckdb"))
        self.con.execute(_sql(_temporary(create_table(exp.to_table(name), {c: (k, False, None) for c, k in columns.items()}))))
        insert = exp.insert(exp.select("*").from_("sync_rows"), name).sql("duckdb")
        chunk: list[tuple] = []
        for row in self.place.membership.stream(query):
            chunk.append(row)
            if len(chunk) >= COPY_ROWS:
                self._append(insert, chunk, list(columns))
                chunk = []
        if chunk:
            self._append(insert, chunk, list(columns))
        return exp.select(*columns).from_(name)

    def _append(self, insert: str, rows: list[tuple], columns: list[str]) -> None:
        import pandas  # only for a remote warehouse's rows: tens of MB a DuckDB sync need not carry

        self.con.register("sync_rows", pandas.DataFrame(rows, columns=columns, dtype=object))
        try:
            self.con.execute(insert)
        finally:
            self.con.unregister("sync_rows")

    def _wanted_query(self, wanted: Wanted) -> exp.Select:
        return _of_pair(self._members(wanted), wanted, "m")

    def _members(self, wanted: Wanted, membership: exp.Table | None = None) -> exp.Select:
        """``(user_id, f_0, ...)`` of the members of every segment (holdout excepted)
        who may be in an audience of ``wanted``'s destination (its fields, ``requires``
        and required fields); the membership (the published one, unless given) is ``m``."""
        users = self.catalog.users
        user_id = exp.cast(exp.column(users.key, table="u", quoted=True), exp.DataType.Type.VARCHAR)
        query = (
            exp.select(exp.alias_(user_id, "user_id"))
            .from_(exp.alias_(membership or self.place.table(md.MEMBERSHIP), "m"))
            .join(
                exp.alias_(self.place.table(users.relation.name, users.relation.schema, quoted=True), "u"),
                on=exp.EQ(this=user_id, expression=exp.column("user_id", table="m")),
            )
            .where(exp.not_(exp.column("is_holdout", table="m")))
        )
        for i, name in enumerate(wanted.fields):
            query = query.select(exp.alias_(self._attribute(name), f"f_{i}"))
        if wanted.requires:
            query = query.where(exp.Is(this=self._attribute(wanted.requires), expression=exp.true()))
        for name in wanted.required_fields:
            query = query.where(exp.not_(exp.Is(this=self._attribute(name), expression=exp.null())))
        return query

    def can_plan_since(self) -> bool:
        """Whether :meth:`make_plan` takes a ``since``: the membership, its history and
        the state are all read in the scratch connection (DuckDB)."""
        return self.place.attached and self.place.ledger_local

    def read_moved(self, destination: str, pairs: Sequence[tuple[Wanted, Since]]) -> None:
        """Copy to the scratch database, in one short hold of the warehouse, what the
        plans of ``pairs`` (all of ``destination``, each with its :class:`Since`) read:
        the users who moved in any of their segments since the earliest ``since``, and
        these users' wanted rows and state in every one of the segments. Both sides of
        every plan see the same users, more than moved in its segment: a user who did
        not move there has nothing to send. Only where :meth:`can_plan_since`."""
        if not self.can_plan_since():
            raise ValueError("a plan since a publish reads the membership and the state in one connection")
        earliest = min(since.as_of for _, since in pairs)
        segments = [exp.Literal.string(name) for name in sorted({wanted.segment for wanted, _ in pairs})]
        moved = (
            exp.select("user_id").distinct().from_(self.place.table(history.HISTORY))
            .where(exp.column("segment_name").isin(*segments))
            .where(exp.GTE(this=exp.column("as_of"), expression=value(earliest, exp.DataType.Type.TIMESTAMP)))
        )
        among_moved = lambda column: column.isin(query=exp.select("user_id").from_(MOVED))  # noqa: E731
        # their membership rows first, then the users table joined to those alone: joined
        # to the whole membership, it cost ten times as much. Neither these rows nor their
        # state are narrowed to the pairs' segments: each plan picks its own, and DuckDB
        # tests a list of segments on every row of the table (a join), a sixth of the read.
        # (found by their rowids first: the scan for them reads the user ids alone, the
        # other columns are fetched for their rows only, a sixth less)
        membership = self.place.table(md.MEMBERSHIP)
        rows = (
            exp.select("segment_name", "user_id", "is_holdout", ARM).from_(membership)
            .where(rowid_in(exp.select("rowid").from_(membership.copy()).where(among_moved(exp.column("user_id")))))
        )
        members = (
            self._members(pairs[0][0], exp.to_table(MOVED_MEMBERS))  # one destination: the same fields and conditions
            .select(exp.column("segment_name", "m"), exp.column(ARM, "m"))
        )
        keys = [wanted.key for wanted, _ in pairs]
        with self.hold(), self._threads(SCAN_THREADS):
            state = self.ledger.states(destination, rowid=STATE_ROW).where(among_moved(exp.column("user_id")))
            for table, query in ((MOVED, moved), (MOVED_MEMBERS, rows), (MOVED_WANTED, members), (MOVED_STATE, state)):
                self.con.execute(_sql(_temporary(exp.Create(kind="TABLE", replace=True, this=exp.to_table(table), expression=query))))
        self._moved_read = (destination, frozenset(keys))

    @staticmethod
    def _changes(fields: Sequence[str], keys: Sequence[str] = (), rows: Sequence[str] = ()) -> exp.Union:
        """The adds (rows of ``w`` without a row of ``s``) and the removes (rows of ``s``
        without a row of ``w``) as ``(*keys, op, user_id, remote_id, *fields, *rows)``:
        ``w`` has ``(*keys, user_id, *fields)``, ``s`` has ``(*keys, user_id, remote_id, *rows)``,
        and a row matches another of the same ``keys`` and ``user_id``."""
        def not_in(a: str, b: str) -> exp.Expression:
            same = [exp.EQ(this=exp.column(c, table=b), expression=exp.column(c, table=a)) for c in (*keys, "user_id")]
            return exp.not_(exp.Exists(this=exp.select("1").from_(b).where(exp.and_(*same))))

        adds = exp.select(
            *[exp.column(k, table="w") for k in keys],
            exp.alias_(exp.Literal.string("add"), "op"), exp.column("user_id", table="w"),
            exp.alias_(exp.cast(exp.null(), "VARCHAR"), "remote_id"), *[exp.column(f, table="w") for f in fields],
            *[exp.alias_(exp.cast(exp.null(), exp.DataType.Type.BIGINT), r) for r in rows],
        ).from_("w").where(not_in("w", "s"))
        removes = exp.select(
            *[exp.column(k, table="s") for k in keys],
            exp.alias_(exp.Literal.string("remove"), "op"), exp.column("user_id", table="s"),
            exp.column("remote_id", table="s"), *[exp.alias_(exp.null(), f) for f in fields],
            *[exp.column(r, table="s") for r in rows],
        ).from_("s").where(not_in("s", "w"))
        return exp.union(adds, removes, distinct=False)

    def _create_plan(self, plan: str, query: exp.Query, what: str) -> None:
        try:
            self.con.execute(_sql(_temporary(exp.Create(kind="TABLE", this=exp.to_table(plan), expression=query))))
        except duckdb.OutOfMemoryException:
            raise SegmentsError(
                f"planning {what} needs more memory than DuckDB's limit "
                f"{self.memory_limit}: set {MEMORY_LIMIT_ENV} higher (e.g. 256MB)") from None

    def make_plan(self, destination: str, wanted: Wanted, since: Since | None = None, plan: str = PLAN) -> PlanSummary:
        """Write the changes for one pair to the scratch database's plan table, in
        user order (the row at ``rowid`` n is the plan's n-th change, from 0), holding
        the warehouse only while reading it.

        With ``since`` (after :meth:`read_moved` for the pair), the plan compares the
        wanted audience and the state of the users who moved since (:class:`Since`) alone
        (:meth:`plan_since`). ``plan`` names the table, so that several pairs can be planned at once.
        """
        if since is not None:
            [(_, summary)] = self.plan_since(destination, [(wanted, since)], plan)
            return summary
        fields = [f"f_{i}" for i in range(len(wanted.fields))]
        self.drop_plan(plan)
        with self.hold():
            wanted_rows = self._wanted_query(wanted)
            if not self.place.attached:
                wanted_rows = self._copy(WANTED_COPY, wanted_rows, self._field_types(wanted.fields))
            state = self.ledger.state(destination, wanted.key)
            if not self.place.ledger_local:
                state = self._copy(STATE_COPY, state, {"user_id": _TEXT, "remote_id": _TEXT})
            ordered = (
                exp.select("op", "user_id", "remote_id", *fields)
                .from_(exp.alias_(exp.Subquery(this=self._changes(fields)), "c"))
                .with_("w", as_=wanted_rows)
                .with_("s", as_=state)
                .order_by("user_id", "op")
            )
            self._create_plan(plan, ordered, f"{wanted.key} -> {destination}")
            audience = self.con.execute(_sql(exp.select(exp.Count(this=exp.Star())).from_(exp.Subquery(this=state)))).fetchone()[0]
        for name in (WANTED_COPY, STATE_COPY):  # the plan holds what they gave
            self.con.execute(_sql(drop("TABLE", exp.to_table(name))))
        adds_n, removes_n = self.con.execute(_sql(exp.select(count_if(_op_is("add")), count_if(_op_is("remove"))).from_(plan))).fetchone()
        first = lambda op: exp.select("rowid", "op", "user_id").from_(plan).where(_op_is(op)).order_by("rowid").limit(5)  # noqa: E731
        samples = sorted(self.con.execute(_sql(exp.union(first("add"), first("remove"), distinct=False))).fetchall())
        sample = lambda op: tuple(user for _, kind, user in samples if kind == op)  # noqa: E731
        return PlanSummary(adds_n, removes_n, audience, sample("add"), sample("remove"))

    def plan_since(self, destination: str, pairs: Sequence[tuple[Wanted, Since]], plan: str = PLAN) -> list[tuple[int, PlanSummary]]:
        """The plans of ``pairs`` (after :meth:`read_moved` for them), from what it
        copied alone, one after another in one table: (the rowid of its first row,
        its summary) for each pair. Its rows are those :meth:`make_plan` would write
        for the pair alone, in the same order (``pair``: its place in ``pairs``).

        Small plans, made together: one statement makes them all and one more sums
        them up, where a table each took four statements (and as many trees to build).
        """
        for wanted, _ in pairs:
            if self._moved_read[0] != destination or wanted.key not in self._moved_read[1]:
                raise ValueError(f"read_moved first: {wanted.key} -> {destination}")
        fields = [f"f_{i}" for i in range(len(pairs[0][0].fields))]  # one destination: the same fields
        number = exp.column("pair", "p")
        known = values_query({"pair": exp.DataType.Type.INT, "segment_name": _TEXT, ARM: _TEXT, "pair_key": _TEXT},
                             [[n, wanted.segment, wanted.arm, wanted.key] for n, (wanted, _) in enumerate(pairs)])
        known_as_p = lambda: exp.alias_(exp.Subquery(this=known.copy()), "p", table=True)  # noqa: E731
        # a pair's wanted rows are its segment's (its arm's, if it has one: _of_pair)
        arm = exp.column(ARM, "p")
        wanted_rows = exp.select(number, *[exp.column(c, "w") for c in ("user_id", *fields)]).from_(
            exp.alias_(exp.to_table(MOVED_WANTED), "w", table=True)).join(known_as_p(), on=exp.and_(
                exp.column("segment_name", "w").eq(exp.column("segment_name", "p")),
                exp.or_(arm.is_(exp.null()), exp.column(ARM, "w").eq(arm.copy()))))
        state = exp.select(number.copy(), *[exp.column(c, "s") for c in ("user_id", "remote_id", STATE_ROW)]).from_(
            exp.alias_(exp.to_table(MOVED_STATE), "s", table=True)).join(
                known_as_p(), on=exp.column("segment_name", "s").eq(exp.column("pair_key", "p")))
        ordered = (
            exp.select("pair", "op", "user_id", "remote_id", *fields, STATE_ROW)
            .from_(exp.alias_(exp.Subquery(this=self._changes(fields, ["pair"], [STATE_ROW])), "c"))
            .with_("w", as_=wanted_rows)
            .with_("s", as_=state)
            .order_by("pair", "user_id", "op")
        )
        self.drop_plan(plan)
        self._create_plan(plan, ordered, f"{len(pairs)} segments -> {destination}")
        self._state_rows.add(plan)
        # per pair and op: how many, and the first five (the plan's order)
        of_pair_op = lambda: [exp.column("pair"), exp.column("op")]  # noqa: E731
        place = exp.Window(this=exp.RowNumber(), partition_by=of_pair_op(), order=exp.Order(expressions=[exp.Ordered(this=exp.column("rowid"))]))
        summary = (
            exp.select("pair", "op", "user_id", exp.alias_(exp.Window(this=exp.Count(this=exp.Star()), partition_by=of_pair_op()), "n"))
            .from_(plan).qualify(exp.LTE(this=place, expression=exp.Literal.number(5))).order_by("rowid")
        )
        counts: dict[tuple[int, str], int] = {}
        samples: dict[tuple[int, str], list[str]] = {}
        for n, op, user, count in self.con.execute(_sql(summary)).fetchall():
            counts[(n, op)] = count
            samples.setdefault((n, op), []).append(user)
        plans, first = [], 0
        for n, (_, since) in enumerate(pairs):
            adds, removes = counts.get((n, "add"), 0), counts.get((n, "remove"), 0)
            plans.append((first, PlanSummary(adds, removes, since.audience, tuple(samples.get((n, "add"), ())),
                                             tuple(samples.get((n, "remove"), ())))))
            first += adds + removes
        return plans

    def drop_plan(self, plan: str = PLAN) -> None:
        self._state_rows.discard(plan)
        self.con.execute(_sql(drop("TABLE", exp.to_table(plan))))

    @staticmethod
    def _records(rows: Sequence[tuple[object, ...]], fields: Sequence[str], op: str) -> tuple[Record, ...]:
        if op == "add":
            return tuple(Record(r[1], dict(zip(fields, r[3:]))) for r in rows if r[0] == "add")  # type: ignore[arg-type]
        return tuple(Record(r[1], remote_id=r[2]) for r in rows if r[0] == "remove")  # type: ignore[arg-type]

    def _page(self, plan: str, fields: Sequence[str], first: int, last: int, op: str | None = None) -> list[tuple[object, ...]]:
        columns = ["op", "user_id", "remote_id", *[f"f_{i}" for i in range(len(fields))]]
        query = exp.select(*columns).from_(plan).where(_rows(first, last)).order_by("rowid")
        if op is not None:
            query = query.where(_op_is(op))
        return self.con.execute(_sql(query)).fetchall()

    def _lazy(self, plan: str, count: int, fields: Sequence[str], first: int, last: int, op: str) -> LazyRecords:
        return LazyRecords(count, lambda: self._records(self._page(plan, fields, first, last, op), fields, op))

    def _json_encodable(self, plan: str, fields: Sequence[str]) -> bool:
        """Whether DuckDB's JSON of the plan's fields is byte for byte what
        ``json.dumps`` makes of the Python values (see :class:`EncodedChanges`)."""
        if not fields:  # user ids alone: text
            return True
        query = exp.select(*[f"f_{i}" for i in range(len(fields))]).from_(plan).limit(0)
        types = [str(d[1]) for d in self.con.execute(_sql(query)).description]
        return "user_id" not in fields and all(t in _JSON_AS_PYTHON for t in types)

    @staticmethod
    def _json_page(plan: str, fields: Sequence[str]) -> Callable[[int, int], exp.Select]:
        """Plan rows first..last as (adds, removes, batch id keys, adds' JSON objects,
        removes' JSON objects), every string made in the warehouse."""

        def joined(text: exp.Expression, separator: str) -> exp.GroupConcat:
            ordered = exp.Order(this=text, expressions=[exp.Ordered(this=exp.column("rowid"))])
            return exp.GroupConcat(this=ordered, separator=exp.Literal.string(separator))

        def objects(*pairs: tuple[str, str]) -> exp.Expression:
            json = exp.JSONObject(expressions=[
                exp.JSONKeyValue(this=exp.Literal.string(key), expression=exp.column(column)) for key, column in pairs])
            return joined(exp.cast(json, _TEXT), ",")

        key = exp.DPipe(this=exp.DPipe(this=exp.DPipe(
            this=exp.Chr(expressions=[exp.Literal.number(0)]), expression=exp.column("op")),
            expression=exp.Literal.string(":")), expression=exp.column("user_id"))
        added = objects(("user_id", "user_id"), *((name, f"f_{i}") for i, name in enumerate(fields)))
        page = exp.select(
            count_if(_op_is("add")), count_if(_op_is("remove")), joined(key, ""),
            exp.Filter(this=added, expression=exp.Where(this=_op_is("add"))),
            exp.Filter(this=objects(("user_id", "user_id")), expression=exp.Where(this=_op_is("remove"))),
        ).from_(plan)
        return lambda first, last: page.where(_rows(first, last))

    def _encode(self, json_page: Callable[[int, int], exp.Select], first: int, last: int) -> tuple[int, int, str, EncodedChanges]:
        """Plan rows first..last as (adds, removes, batch id keys, their JSON), at most
        :data:`ENCODE_ROWS` rows per query: a query's strings are built in DuckDB's
        memory, which is capped, and batches may be far larger."""
        adds = removes = 0
        keys: list[str] = []
        added: list[str] = []
        removed: list[str] = []
        for start in range(first, last + 1, ENCODE_ROWS):
            end = min(start + ENCODE_ROWS, last + 1) - 1
            n_adds, n_removes, some_keys, some_added, some_removed = self.con.execute(_sql(json_page(start, end))).fetchone()
            adds, removes = adds + n_adds, removes + n_removes
            keys.append(some_keys)
            added += [some_added] if some_added else []
            removed += [some_removed] if some_removed else []
        return adds, removes, "".join(keys), EncodedChanges(f"[{','.join(added)}]", f"[{','.join(removed)}]")

    def batches(
        self, destination: str, segment: str, sync_id: str, fields: Sequence[str], size: int, total: int,
        encode: bool = False, plan: str = PLAN, start: int = 0,
    ) -> Iterator[tuple[Batch, int, int]]:
        """(batch, first, last) over the pair's ``total`` rows of the plan from rowid
        ``start`` on (see :meth:`plan_since`), ``size`` changes at a time; first and
        last are the batch's first and last rowid in the plan.

        Batch ids continue the pair's count of acknowledged batches, so a rerun after
        a crash gives the unacknowledged batch the id it had before. With ``encode``
        (a destination that sends SPEC 4.1's JSON), the warehouse encodes each batch
        and its records are read only if asked for: no Python object per record.
        """
        done = self._done.get((destination, segment))
        if done is None:
            with self.hold():
                done = self.ledger.done_batches(destination, segment)
        encode = encode and self._json_encodable(plan, fields)
        json_page = self._json_page(plan, fields)
        for number, first in enumerate(range(start, start + total, size)):
            last = min(first + size, start + total) - 1
            added: Sequence[Record]
            removed: Sequence[Record]
            encoded = None
            if encode:
                adds, removes, keys, encoded = self._encode(json_page, first, last)
                added, removed = (self._lazy(plan, adds, fields, first, last, "add"),
                                  self._lazy(plan, removes, fields, first, last, "remove"))
            else:
                rows = self._page(plan, fields, first, last)
                added, removed = self._records(rows, fields, "add"), self._records(rows, fields, "remove")
                keys = "".join(f"\0{r[0]}:{r[1]}" for r in rows)
            yield Batch(destination, segment, sync_id, batch_id(destination, segment, done + number, keys),
                        added, removed, encoded), first, last

    # ---- the run log and the state ----------------------------------------------------

    def start_runs(self, destination: str, runs: Sequence[tuple[str, str, PlanSummary]]) -> None:
        """Rows of runs starting together: ``(sync_id, pair key, plan)`` each (see
        :meth:`Ledger.start_runs`)."""
        with self.hold():
            self.ledger.start_runs(destination, [(sync_id, key, plan.adds, plan.removes) for sync_id, key, plan in runs])
            # their batches' numbering (batches), read once: from here only checkpoint counts them
            self._done |= {(destination, key): n for key, n in self.ledger.done_batches_of(destination, [key for _, key, _ in runs]).items()}

    def finish_runs(self, runs: Sequence[tuple[str, str, str | None]]) -> None:
        """Runs that ended, ``(sync_id, status, message)`` each, in one hold and transaction."""
        if runs:
            with self.hold():
                self.ledger.finish_runs(runs)

    def checkpoint(self, batch: Batch, first: int, last: int, result: BatchResult, plan: str = PLAN) -> tuple[int, int]:
        """Apply an acknowledged batch to the state, log its failures: one transaction,
        in one short hold of the warehouse.

        Returns (added, removed) as applied.
        """
        failed = {op: [f.user_id for f in result.failures if f.operation == op] for op in ("add", "remove")}
        added, removed = len(batch.added) - len(failed["add"]), len(batch.removed) - len(failed["remove"])
        adds, removes = (self._applied(plan, "add", first, last, failed["add"]),
                         self._applied(plan, "remove", first, last, failed["remove"]))
        removed_rows = self._applied(plan, "remove", first, last, failed["remove"], STATE_ROW) if plan in self._state_rows else None
        ids = values_query({"user_id": _TEXT, "remote_id": _TEXT}, list(result.remote_ids.items()))
        adds = adds.join(exp.alias_(exp.Subquery(this=ids), "r", table=True),
                         on=exp.column("user_id", "r").eq(exp.column("user_id", "p")), join_type="left")
        adds = adds.select(exp.column("remote_id", "r"))
        if not self.place.ledger_local:  # the rows travel to the warehouse as literals
            adds = values_query({"user_id": _TEXT, "remote_id": _TEXT}, self.con.execute(_sql(adds)).fetchall())
            removes = values_query({"user_id": _TEXT}, self.con.execute(_sql(removes)).fetchall())
        with self.hold():
            self.ledger.checkpoint(batch.sync_id, batch.destination, batch.segment,
                                   Changes(adds, removes, added, removed, removed_rows), result.failures)
        if (batch.destination, batch.segment) in self._done:
            self._done[(batch.destination, batch.segment)] += 1
        return added, removed

    @staticmethod
    def _applied(plan: str, op: str, first: int, last: int, failed: Sequence[str], column: str = "user_id") -> exp.Select:
        """The plan's user ids (or another ``column``) of ``op`` in rows first..last, but
        for those that failed."""
        user_id = exp.column("user_id", "p")
        query = (
            exp.select(exp.column(column, "p")).from_(exp.alias_(exp.to_table(plan), "p", table=True))
            .where(exp.Between(this=exp.column("rowid", "p"), low=exp.convert(first), high=exp.convert(last)))
            .where(exp.column("op", "p").eq(exp.convert(op)))
        )
        if failed:
            query = query.where(exp.not_(user_id.copy().isin(*map(exp.convert, failed))))
        return query
