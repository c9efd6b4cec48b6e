"""A sync's private scratch database: where its plan lives while it is sent.

A sync spends most of its time waiting on destinations, and a DuckDB file has one
writer at a time. So a sync works in a DuckDB database of its own, in memory with a
temporary folder deleted after the run, on every engine; its tables are temporary ones,
which spill to that folder under the memory limit (memory stays flat however large a
plan is) and write no log. The DuckDB file of its record (the DuckDB
warehouse, or Spark's sync state file; see :mod:`sync.places`) is attached to it, as
:data:`WAREHOUSE`, only for its short reads and checkpoints (:meth:`Scratch.hold`).
Between them builds, loads and member exports open the warehouse freely; a hold
that finds the file busy retries for :data:`BUSY_WAIT` seconds.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import warehouse
from segments.engines.base import duckdb_setting

WAREHOUSE = "wh"  # the warehouse's name while attached
IN_MEMORY = ":memory:"  # DuckDB's name for a database of its own memory
BUSY_WAIT = 10.0  # seconds a hold waits for another process to release the warehouse
BUSY_PAUSE = 0.05  # seconds between attempts
#: Seconds a lingering hold keeps the warehouse at most: then it lets go at the end of a
#: hold, so a long sync to a quick destination leaves other commands their turns.
LINGER_FOR = 1.0


class Scratch:
    """A connection to the scratch database and the DuckDB file it attaches (none:
    holds are no-ops)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, warehouse_file: Path | None, read_only: bool = False):
        self.con = con
        self.warehouse_file = warehouse_file
        self.read_only = read_only
        self._holds = 0
        self._attached: ExitStack | None = None
        self._attached_at = 0.0  # when the warehouse was attached (time.monotonic)
        self._lingering = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The warehouse attached for the block, then released (unless :meth:`lingering`);
        nested holds share the outer one.

        Raises:
            SegmentsError: the warehouse stayed busy for :data:`BUSY_WAIT` seconds.
        """
        if self._holds or self.warehouse_file is None:
            yield
            return
        if self._attached is None:
            attached = ExitStack()
            attached.enter_context(
                warehouse.attached(self.con, self.warehouse_file, WAREHOUSE, self.read_only, BUSY_WAIT, BUSY_PAUSE))
            self._attached, self._attached_at = attached, time.monotonic()
        self._holds += 1
        try:
            yield
        except BaseException as error:
            self._holds -= 1
            self._release(error)  # rolls back a transaction the error left open
            raise
        self._holds -= 1
        if not self._lingering or time.monotonic() - self._attached_at > LINGER_FOR:
            self.release()

    @contextmanager
    def lingering(self) -> Iterator[None]:
        """Within the block, the warehouse stays attached from one hold to the next until
        :meth:`release`, or for :data:`LINGER_FOR` seconds: a sync whose destination
        answers at once holds it once for all its checkpoints, where attaching it for
        each would cost more than the batch. The caller releases it before waiting on a
        destination for long."""
        self._lingering = True
        try:
            yield
        finally:
            self._lingering = False
            self.release()

    def release(self) -> None:
        """Detach the warehouse if a lingering hold left it attached (not within a hold)."""
        if not self._holds:
            self._release(None)

    def _release(self, error: BaseException | None) -> None:
        attached, self._attached = self._attached, None
        if attached is not None:
            attached.__exit__(type(error) if error else None, error, error.__traceback__ if error else None)

    @property
    def holding(self) -> bool:
        return bool(self._holds)


class ScratchDatabase:
    """A scratch database kept for run after run (``segments watch``): each run works in
    a connection of its own (:func:`open_scratch`), whose temporary tables go with it.
    Opening a DuckDB database and reading an attached warehouse's catalog for the first
    time cost a watch cycle 25ms, more than its plans; here they are paid once.
    :meth:`close` deletes it, and so does the garbage collector."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="segments-sync-")
        self._connection = warehouse.connect(Path(IN_MEMORY), settings={"temp_directory": self._folder.name})
        self.con = self._connection.__enter__()
        self._closed = weakref.finalize(self, ScratchDatabase._close, self._connection, self._folder)

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of one run; the warehouse is detached when it ends (an attached
        database belongs to the whole database, and holds the warehouse file)."""
        con = self.con.cursor()
        try:
            duckdb_setting(con, "TimeZone", "UTC")
            yield con
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute(exp.Detach(this=exp.to_identifier(WAREHOUSE), exists=True).sql(dialect="duckdb"))
            con.close()

    def close(self) -> None:
        self._closed()

    @staticmethod
    def _close(connection: AbstractContextManager[duckdb.DuckDBPyConnection], folder: tempfile.TemporaryDirectory) -> None:
        connection.__exit__(None, None, None)
        folder.cleanup()


@contextmanager
def open_scratch(warehouse_file: Path | None, read_only: bool = False, kept: ScratchDatabase | None = None) -> Iterator[Scratch]:
    """A fresh scratch database for one run, deleted with its folder afterwards (or a
    connection of ``kept``), attaching ``warehouse_file`` while held; ``read_only``
    attaches it read-only (a dry run)."""
    if kept is not None:
        with kept.connection() as con:
            yield Scratch(con, warehouse_file, read_only)
        return
    with tempfile.TemporaryDirectory(prefix="segments-sync-") as folder:
        # An in-memory database whose temporary tables (all of the scratch's) spill to
        # the folder: a database file held nothing more and cost 10ms to create and close
        with warehouse.connect(Path(IN_MEMORY), settings={"temp_directory": folder}) as con:
            yield Scratch(con, warehouse_file, read_only)
