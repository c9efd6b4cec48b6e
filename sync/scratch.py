"""A sync's private scratch database: where its plan lives while it is sent.

The warehouse is one DuckDB file with one writer at a time, and a sync spends most of
its time waiting on destinations. So a sync works in a DuckDB database of its own, a
file in a temporary folder deleted after the run (the plan spills there, so memory
stays flat however large it is), and attaches the warehouse to it, as
:data:`WAREHOUSE`, only for its short reads and checkpoints (:meth:`Scratch.hold`).
Between them builds, loads and member exports open the warehouse freely; a hold
that finds the warehouse busy retries for :data:`BUSY_WAIT` seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import warehouse

WAREHOUSE = "wh"  # the warehouse's name while attached
BUSY_WAIT = 10.0  # seconds a hold waits for another process to release the warehouse
BUSY_PAUSE = 0.05  # seconds between attempts


class Scratch:
    """A connection to the scratch database and the warehouse it attaches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, warehouse_file: Path, read_only: bool = False):
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
        if self._holds:
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


def table(name: str, schema: str, quoted: bool = False) -> exp.Table:
    """A warehouse table as the scratch connection names it while the warehouse is held."""
    return exp.table_(name, db=schema, catalog=WAREHOUSE, quoted=quoted)


@contextmanager
def open_scratch(warehouse_file: Path, read_only: bool = False) -> Iterator[Scratch]:
    """A fresh scratch database for one run, deleted with its folder afterwards;
    ``read_only`` attaches the warehouse read-only (a dry run)."""
    with tempfile.TemporaryDirectory(prefix="segments-sync-") as folder:
        with warehouse.connect(Path(folder) / "plan.duckdb") as con:
            yield Scratch(con, warehouse_file, read_only)
