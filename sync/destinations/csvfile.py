"""The ``csv`` destination: change files for platforms without an API.

Each run of a segment writes ``<path>/<segment>/<sync_id>_added.csv`` and
``..._removed.csv`` (created only when there are changes of that kind). A batch is
acknowledged once its rows are flushed to disk, so after a crash the rerun's files
hold the rest, with at most the in-flight batch repeated.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from segments import spreadsheet
from sync.errors import TransientError
from sync.destinations.base import Audience, Destination
from sync.destinations.batches import Batch, BatchResult, Record
from sync.destinations.options import Option


class CsvAudience(Audience):
    def __init__(self, directory: Path, fields: tuple[str, ...]):
        self.directory = directory
        self.fields = fields
        self._files: dict[str, tuple[IO[str], csv.writer]] = {}  # type: ignore[valid-type]

    def _writer(self, sync_id: str, kind: str) -> csv.writer:  # type: ignore[valid-type]
        if kind not in self._files:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / f"{sync_id}_{kind}.csv", "w", newline="", encoding="utf-8")
            writer = csv.writer(handle)
            writer.writerow(["user_id", *self.fields] if kind == "added" else ["user_id"])
            self._files[kind] = (handle, writer)
        return self._files[kind][1]

    def _write(self, sync_id: str, kind: str, records: Sequence[Record]) -> None:
        if not records:
            return
        writer = self._writer(sync_id, kind)
        if kind == "added":
            writer.writerows(spreadsheet.row([r.user_id, *(r.fields.get(f) for f in self.fields)]) for r in records)
        else:
            writer.writerows(spreadsheet.row([r.user_id]) for r in records)
        handle = self._files[kind][0]
        handle.flush()
        os.fsync(handle.fileno())

    def send(self, batch: Batch) -> BatchResult:
        try:
            self._write(batch.sync_id, "added", batch.added)
            self._write(batch.sync_id, "removed", batch.removed)
        except OSError as error:
            raise TransientError(f"destination {batch.destination}: cannot write {self.directory}: {error.strerror}") from None
        return BatchResult()

    def close(self) -> None:
        for handle, _ in self._files.values():
            handle.close()
        self._files.clear()


class CsvDestination(Destination):
    type = "csv"
    OPTIONS = (Option("path", required=True), Option("fields", list, default=[]))
    DEFAULT_BATCH_SIZE = 10_000
    MAX_BATCH_SIZE = 100_000

    def fields(self) -> tuple[str, ...]:
        return tuple(self.options["fields"])  # type: ignore[arg-type]

    def audience(self, segment: str, options: Mapping[str, object]) -> Audience:
        return CsvAudience(Path(str(self.options["path"])).expanduser() / segment, self.fields())
