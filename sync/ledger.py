"""The sync's record in a warehouse: ``sync_state``, ``sync_runs``, ``sync_errors``.

The three tables live where the state of a sync must be transactional: in the
DuckDB warehouse (attached to the sync's scratch database, see :mod:`sync.scratch`),
in the PostgreSQL warehouse, or, for Spark, which has no multi-statement
transactions, in a DuckDB file beside its warehouse (:func:`sync.sources.open_source`).
Every statement is a sqlglot tree run through an engine :class:`Session`, so the one
class serves each place; values are literals of the tree.

A checkpoint applies one acknowledged batch in one transaction: the adds that did not
fail go into ``sync_state`` with the ids the destination answered, the removes that
did not fail leave it, the run's counters move and the batch's failures are logged.
The rows of a batch come as queries (:class:`Changes`), so a DuckDB ledger reads them
from the scratch plan in place and a PostgreSQL one receives them as ``VALUES``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

from segments.engines.base import EngineError, Session, create_table, rowid_as, rowid_in, values_query
from segments.errors import SegmentsError
from segments.spec.timeparse import utc_now
from sync.destinations.batches import RecordFailure

STATE, RUNS, ERRORS = "sync_state", "sync_runs", "sync_errors"
RUNNING, INTERRUPTED = "running", "interrupted"

_TEXT, _TIME, _BIG, _INT = (exp.DataType.Type.VARCHAR, exp.DataType.Type.TIMESTAMP,
                            exp.DataType.Type.BIGINT, exp.DataType.Type.INT)
# (type, NOT NULL, default) per column: the tables users query (README, "Syncing").
COLUMNS: dict[str, dict[str, tuple[exp.DataType.Type, bool, int | None]]] = {
    STATE: {
        "destination": (_TEXT, True, None), "segment_name": (_TEXT, True, None), "user_id": (_TEXT, True, None),
        "remote_id": (_TEXT, False, None), "synced_at": (_TIME, True, None), "sync_id": (_TEXT, True, None),
    },
    RUNS: {
        "sync_id": (_TEXT, True, None), "destination": (_TEXT, True, None), "segment_name": (_TEXT, True, None),
        "started_at": (_TIME, True, None), "finished_at": (_TIME, False, None), "status": (_TEXT, True, None),
        "planned_adds": (_BIG, True, None), "planned_removes": (_BIG, True, None),
        "added": (_BIG, True, 0), "removed": (_BIG, True, 0), "failed": (_BIG, True, 0), "batches": (_BIG, True, 0),
        "message": (_TEXT, False, None),
    },
    ERRORS: {
        "sync_id": (_TEXT, True, None), "destination": (_TEXT, True, None), "segment_name": (_TEXT, True, None),
        "user_id": (_TEXT, True, None), "operation": (_TEXT, True, None), "status_code": (_INT, False, None),
        "message": (_TEXT, True, None), "failed_at": (_TIME, True, None),
    },
}


def _is(column: str, value: object) -> exp.Expression:
    return exp.column(column).eq(exp.convert(value))


def _pair(destination: str, segment: str) -> exp.Expression:
    return exp.and_(_is("destination", destination), _is("segment_name", segment))


@dataclass(frozen=True)
class Changes:
    """One acknowledged batch as the ledger applies it: ``adds`` a query of
    ``(user_id, remote_id)`` and ``removes`` one of ``(user_id)``, both already
    without the batch's failures, and how many rows each has."""

    adds: exp.Query
    removes: exp.Query
    added: int
    removed: int
    #: where the state is a DuckDB table read in place: a query of the ``rowid`` of the
    #: state row of each of ``removes``, as read when the plan was made (see :meth:`Ledger.checkpoint`)
    removed_rows: exp.Query | None = None


class Ledger:
    """The sync tables of one warehouse (``schema``, and ``catalog`` when the
    session reaches them attached under that name)."""

    def __init__(self, session: Session, schema: str, catalog: str | None = None):
        self.session = session
        self.schema = schema
        self.catalog = catalog

    def table(self, name: str) -> exp.Table:
        return exp.table_(name, db=self.schema, catalog=self.catalog)

    def has(self, name: str) -> bool:
        return self.session.exists(self.schema, name, self.catalog)

    def ensure_tables(self) -> None:
        for name, columns in COLUMNS.items():
            self.session.execute(create_table(self.table(name), columns))

    def state(self, destination: str, segment: str) -> exp.Select:
        """``(user_id, remote_id)`` the destination holds from us for ``segment``."""
        if not self.has(STATE):
            return values_query({"user_id": _TEXT, "remote_id": _TEXT}, [])
        return exp.select("user_id", "remote_id").from_(self.table(STATE)).where(_pair(destination, segment))

    def states(self, destination: str, segments: Sequence[str] | None = None, rowid: str | None = None) -> exp.Select:
        """``(segment_name, user_id, remote_id)`` the destination holds from us for
        ``segments`` (None: every one), and each row's ``rowid`` as a column so named (DuckDB)."""
        rowids = [rowid_as(rowid)] if rowid else []
        if not self.has(STATE):
            return values_query({"segment_name": _TEXT, "user_id": _TEXT, "remote_id": _TEXT, **({rowid: _BIG} if rowid else {})}, [])
        query = exp.select("segment_name", "user_id", "remote_id", *rowids).from_(self.table(STATE)).where(_is("destination", destination))
        return query if segments is None else query.where(exp.column("segment_name").isin(*map(exp.convert, segments)))

    def done_batches(self, destination: str, segment: str) -> int:
        """Batches of the pair acknowledged so far: the next batch's number."""
        total = exp.func("COALESCE", exp.Sum(this=exp.column("batches")), exp.Literal.number(0))
        [(done,)] = self.session.rows(exp.select(total).from_(self.table(RUNS)).where(_pair(destination, segment)))
        return int(done)

    def done_batches_of(self, destination: str, segments: Sequence[str]) -> dict[str, int]:
        """:meth:`done_batches` of several pairs, in one query."""
        query = (
            exp.select("segment_name", exp.Sum(this=exp.column("batches"))).from_(self.table(RUNS))
            .where(_is("destination", destination)).where(exp.column("segment_name").isin(*map(exp.convert, segments)))
            .group_by("segment_name")
        )
        done = {str(segment): int(n or 0) for segment, n in self.session.rows(query)}
        return {segment: done.get(segment, 0) for segment in segments}

    def start_runs(self, destination: str, runs: Sequence[tuple[str, str, int, int]]) -> None:
        """The rows of runs of ``destination`` starting together, ``running``: one
        ``(sync_id, segment, planned adds, planned removes)`` each, in one transaction.
        A ``running`` row of the destination left by a run that died (the caller holds
        the destination's lock) becomes ``interrupted``."""
        now = utc_now()
        with self.session.transaction():
            self.session.execute(exp.update(
                self.table(RUNS), {"status": exp.convert(INTERRUPTED)},
                where=exp.and_(_is("destination", destination), _is("status", RUNNING)),
            ))
            self._insert(RUNS, [
                {"sync_id": sync_id, "destination": destination, "segment_name": segment, "started_at": now,
                 "status": RUNNING, "planned_adds": adds, "planned_removes": removes}
                for sync_id, segment, adds, removes in runs
            ])

    def finish_runs(self, runs: Sequence[tuple[str, str, str | None]]) -> None:
        """Runs that ended, ``(sync_id, status, message)`` each, in one transaction."""
        now = _timestamp(utc_now())
        with self.session.transaction():
            for sync_id, status, message in runs:
                self.session.execute(exp.update(
                    self.table(RUNS), {"status": exp.convert(status), "finished_at": now.copy(), "message": exp.convert(message)},
                    where=_is("sync_id", sync_id),
                ))

    def checkpoint(
        self, sync_id: str, destination: str, segment: str, changes: Changes, failures: Sequence[RecordFailure],
    ) -> None:
        """Apply one acknowledged batch: one transaction.

        Raises:
            SegmentsError: the warehouse refused it; nothing of the batch was recorded.
        """
        now = utc_now()
        state = self.table(STATE)
        adds = exp.select(
            exp.convert(destination), exp.convert(segment), "a.user_id", "a.remote_id", _timestamp(now), exp.convert(sync_id),
        ).from_(exp.alias_(exp.Subquery(this=changes.adds), "a", table=True))
        counters = {
            name: exp.Add(this=exp.column(name), expression=exp.Literal.number(n))
            for name, n in (("added", changes.added), ("removed", changes.removed), ("failed", len(failures)), ("batches", 1))
        }
        try:
            with self.session.transaction():
                if changes.added:
                    self.session.execute(exp.insert(adds, state, columns=list(COLUMNS[STATE])))
                if changes.removed:
                    self._delete(state, exp.and_(_pair(destination, segment), exp.column("user_id").isin(query=changes.removes)),
                                 changes)
                self.session.execute(exp.update(self.table(RUNS), counters, where=_is("sync_id", sync_id)))
                self._insert(ERRORS, [
                    {"sync_id": sync_id, "destination": destination, "segment_name": segment, "user_id": f.user_id,
                     "operation": f.operation, "status_code": f.status, "message": f.message, "failed_at": now}
                    for f in failures
                ])
        except EngineError as error:
            raise SegmentsError(f"recording sync state failed: {error}") from None

    def _delete(self, state: exp.Table, where: exp.Expression, changes: Changes) -> None:
        """Delete the batch's removes from the state (``where``).

        With ``removed_rows``, the rows are first found by their rowids, which DuckDB
        reads without decoding a single user id: 2ms where the pair's whole state is
        scanned in 20ms. A rowid may since have moved (a checkpoint of the file
        compacts deleted rows): ``where`` still holds, so no other row can go, and
        when fewer rows than removes went, the plain delete runs too. Under the
        destination's lock nothing but this sync adds state rows for the pair, and
        never one of a user it removes: the rows the plain delete would take are
        exactly those the rowids name.
        """
        if changes.removed_rows is not None:
            by_rowid = exp.and_(rowid_in(changes.removed_rows), where.copy())
            [(deleted,)] = self.session.rows(exp.delete(state, where=by_rowid))  # type: ignore[arg-type]
            if deleted == changes.removed:
                return
        self.session.execute(exp.delete(state, where=where))

    def forget(self, destination: str) -> None:
        """Drop what we know a destination holds: the next sync sends everything again."""
        if self.has(STATE):
            self.session.execute(exp.delete(self.table(STATE), where=_is("destination", destination)))

    def _insert(self, name: str, rows: Sequence[Mapping[str, object]]) -> None:
        if not rows:
            return
        columns = {c: COLUMNS[name][c][0] for c in rows[0]}
        self.session.execute(exp.insert(values_query(columns, [list(r.values()) for r in rows]),
                                        self.table(name), columns=list(columns)))


def _timestamp(value: dt.datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), _TIME)
