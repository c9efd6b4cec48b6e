"""Where a sync reads its audiences and keeps its record, on each engine.

=========  ==============================================  ==============================
target     membership and users read                       ``sync_*`` tables and the lock
=========  ==============================================  ==============================
duckdb     the warehouse file, attached to the scratch      the warehouse; a lock file
           database for each short read                     beside it
postgres   the server, streamed into the scratch database   the server's target schema; an
                                                            advisory lock of the session
spark      the Spark session, streamed page by page         a DuckDB file,
                                                            ``<SEGMENTS_SPARK_DIR>/sync_state.duckdb``
                                                            (or ``SEGMENTS_SYNC_STATE``);
                                                            a lock file beside it
=========  ==============================================  ==============================

Spark has no multi-statement transactions, and a checkpoint must apply a batch's adds,
removes, counters and failures together or not at all: its record lives in a DuckDB
file beside the Spark warehouse it describes, which needs no server. The plan itself
is always made in the sync's scratch database (:mod:`sync.scratch`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
from sqlglot import exp

from segments import engines
from segments.engines.base import Session
from segments.engines.duckdb_engine import DuckDBEngine, DuckDBSession
from segments.errors import SegmentsError
from sync.ledger import Ledger
from sync.scratch import WAREHOUSE, Scratch, ScratchDatabase, open_scratch

SYNC_STATE_ENV = "SEGMENTS_SYNC_STATE"  # Spark: the DuckDB file of the sync tables


def sync_state_file(engine: engines.Engine) -> Path | None:
    """The DuckDB file holding the ``sync_*`` tables, when they are not in the
    warehouse's own engine: the DuckDB warehouse itself, Spark's file, or None
    (PostgreSQL keeps them in the warehouse)."""
    if isinstance(engine, DuckDBEngine):
        return engine.path
    if engine.target == "spark":
        directory: Path = engine.directory  # type: ignore[attr-defined]
        return Path(os.environ.get(SYNC_STATE_ENV) or directory / "sync_state.duckdb").expanduser().resolve()
    return None


@dataclass
class Place:
    """An open sync place: the scratch database, a session reading the membership,
    and the ledger."""

    engine: engines.Engine
    scratch: Scratch
    membership: Session
    ledger: Ledger
    lock_file: Path | None  # else the engine session's advisory lock

    @property
    def attached(self) -> bool:
        """The membership is read in the scratch connection itself (DuckDB)."""
        return self.membership.engine is self.engine and isinstance(self.membership, DuckDBSession) \
            and self.membership.con is self.scratch.con

    @property
    def ledger_local(self) -> bool:
        """The ledger is a DuckDB file attached to the scratch connection."""
        return isinstance(self.ledger.session, DuckDBSession) and self.ledger.session.con is self.scratch.con

    @property
    def catalog(self) -> str | None:
        """The warehouse's name in the membership session (attached DuckDB)."""
        return WAREHOUSE if self.attached else None

    def table(self, name: str, schema: str | None = None, quoted: bool = False) -> exp.Table:
        """A table of the warehouse as the membership session names it."""
        return exp.table_(name, db=schema or self.engine.target_schema, catalog=self.catalog, quoted=quoted)

    def hold(self) -> AbstractContextManager[None]:
        return self.scratch.hold()

    def lock(self, destination: str) -> AbstractContextManager[None]:
        """Held while one destination syncs; released if the process dies.

        Raises:
            SegmentsError: another sync of the destination holds it.
        """
        if self.lock_file is not None:
            return _file_lock(self.lock_file.with_name(f"{self.lock_file.name}.sync-{destination}.lock"), destination)
        return _advisory_lock(self.membership, destination)


@contextmanager
def _file_lock(path: Path, destination: str) -> Iterator[None]:
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise SegmentsError(f"another sync of destination {destination} is running") from None
    try:
        yield
    finally:
        lock.release()


def lock_key(destination: str) -> int:
    """A destination's PostgreSQL advisory lock key (a signed 64-bit number).

    >>> lock_key("crm_hook") == lock_key("crm_hook") != lock_key("csv_drop")
    True
    """
    digest = hashlib.sha256(f"segments sync {destination}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _advisory_lock(session: Session, destination: str) -> Iterator[None]:
    key = exp.Literal.number(lock_key(destination))
    [(taken,)] = session.rows(exp.select(exp.func("pg_try_advisory_lock", key)))
    if not taken:
        raise SegmentsError(f"another sync of destination {destination} is running")
    try:
        yield
    finally:
        session.rows(exp.select(exp.func("pg_advisory_unlock", key.copy())))


@contextmanager
def open_place(engine: engines.Engine, read_only: bool = False, kept: ScratchDatabase | None = None) -> Iterator[Place]:
    """The place of a sync on ``engine``; ``read_only`` for a dry run; ``kept``, a
    scratch database kept from run to run (:class:`sync.scratch.ScratchDatabase`)."""
    ledger_file = sync_state_file(engine)
    if isinstance(engine, DuckDBEngine):
        with open_scratch(ledger_file, read_only, kept) as scratch:
            session = DuckDBSession(engine, scratch.con)
            yield Place(engine, scratch, session, Ledger(session, engine.target_schema, WAREHOUSE), ledger_file)
        return
    with engine.connect(read_only=read_only) as session:
        if ledger_file is None:
            with open_scratch(None, kept=kept) as scratch:
                yield Place(engine, scratch, session, Ledger(session, engine.target_schema), None)
            return
        ledger_file.parent.mkdir(parents=True, exist_ok=True)
        with open_scratch(ledger_file, read_only and ledger_file.exists(), kept) as scratch:
            ledger = Ledger(DuckDBSession(DuckDBEngine(ledger_file), scratch.con), "main", WAREHOUSE)
            yield Place(engine, scratch, session, ledger, ledger_file)


def forget(engine: engines.Engine, destination: str) -> None:
    """Drop what we know a destination holds: the next sync sends everything again."""
    with open_place(engine) as place, place.hold():
        place.ledger.forget(destination)
