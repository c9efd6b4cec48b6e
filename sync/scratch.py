"""A sync's private scratch database: where its plan lives while it is sent.

A sync spends most of its time waiting on destinations, and a DuckDB file has one
writer at a time. So a sync works in a DuckDB database of its own, a file in a
temporary folder deleted after the run (the plan spills there, so memory stays flat
however large it is), on every engine. The DuckDB file of its record (the DuckDB
warehouse, or Spark's sync state file; see :mod:`sync.places`) is attached to it, as
:data:`WAREHOUSE`, only for its short reads and checkpoints (:meth:`Scratch.hold`).
Between them builds, loads and member exports open the warehouse freely; a hold
that finds the file busy retries for :data:`BUSY_WAIT` seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from segments import warehouse

WAREHOUSE = "wh"  # the warehouse's name while attached
BUSY_WAIT = 10.0  # seconds a hold waits for another process to release the warehouse
BUSY_PAUSE = 0.05  # seconds between attempts


class Scratch:
    """A connection to the scratch database and the DuckDB file it attaches (none:
    holds are no-ops)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, warehouse_file: Path | None, read_only: bool = False):
        self.con = con
        self.warehouse_file = warehouse_file
        self.read_only = read_only
        self._holds = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """The warehouse attached for the block, then released; nested holds share
        the outer one.

        Raises:
            SegmentsError: the warehouse stayed busy for :data:`BUSY_WAIT` seconds.
        """
        if self._holds or self.warehouse_file is None:
            yield
            return
        with warehouse.attached(self.con, self.warehouse_file, WAREHOUSE, self.read_only, BUSY_WAIT, BUSY_PAUSE):
            self._holds += 1
            try:
                yield
            finally:
                self._holds -= 1

    @property
    def holding(self) -> bool:
        return bool(self._holds)


@contextmanager
def open_scratch(warehouse_file: Path | None, read_only: bool = False) -> Iterator[Scratch]:
    """A fresh scratch database for one run, deleted with its folder afterwards,
    attaching ``warehouse_file`` while held; ``read_only`` attaches it read-only
    (a dry run)."""
    with tempfile.TemporaryDirectory(prefix="segments-sync-") as folder:
        with warehouse.connect(Path(folder) / "plan.duckdb") as con:
            yield Scratch(con, warehouse_file, read_only)
