"""What the engine hands a destination and gets back: records, batches (with the
JSON the warehouse may have encoded), per-record failures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from sync.http import TerminalError


@dataclass(frozen=True)
class Record:
    """One member to add or remove.

    ``fields`` holds the user attributes the destination asked for (adds only);
    ``remote_id`` what the destination answered when the member was added (removes).
    """

    user_id: str
    fields: Mapping[str, object] = field(default_factory=dict)
    remote_id: str | None = None


class LazyRecords(Sequence[Record]):
    """Records counted up front and read only when someone looks at them.

    A batch the warehouse already encoded (:attr:`Batch.encoded`) needs its records
    only to report a refused batch, so they are not made for every batch. ``load``
    reads the warehouse connection, which belongs to the thread that made the batch:
    reading them from another thread is a bug, and raises.
    """

    def __init__(self, count: int, load: Callable[[], tuple[Record, ...]]):
        self._count = count
        self._load = load
        self._owner = threading.get_ident()
        self._records: tuple[Record, ...] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        if self._records is None:
            if threading.get_ident() != self._owner:
                raise RuntimeError("a batch's records are read on the thread that planned it")
            self._records = self._load()
        return self._records[index]


@dataclass(frozen=True)
class EncodedChanges:
    """A batch's changes as the JSON arrays of SPEC 4.1, encoded by the warehouse:
    ``added`` is ``[{"user_id": ..., <field>: ...}, ...]``, ``removed``
    ``[{"user_id": ...}, ...]``, in plan order, byte for byte what ``json.dumps``
    makes of the records (compact, UTF-8)."""

    added: str
    removed: str


@dataclass(frozen=True)
class Batch:
    """A unit of work acknowledged as a whole.

    ``batch_id`` is the same on every retry and on a rerun after a crash (the same
    changes from the same state), so receivers can drop repeats. ``encoded`` is set
    for destinations that send SPEC 4.1's JSON (:attr:`Destination.JSON_CHANGES`);
    then ``added`` and ``removed`` are :class:`LazyRecords`.
    """

    destination: str
    segment: str
    sync_id: str
    batch_id: str
    added: Sequence[Record]
    removed: Sequence[Record]
    encoded: EncodedChanges | None = None

    def __len__(self) -> int:
        return len(self.added) + len(self.removed)


@dataclass(frozen=True)
class RecordFailure:
    user_id: str
    operation: str  # "add" | "remove"
    status: int | None
    message: str


@dataclass
class BatchResult:
    """What a destination did with a batch: records that failed for good (left out of
    the state, logged to ``sync_errors``, tried again next run) and ids it assigned."""

    failures: list[RecordFailure] = field(default_factory=list)
    remote_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def all_failed(cls, batch: Batch, error: TerminalError) -> BatchResult:
        failures = [RecordFailure(r.user_id, "add", error.status, str(error)) for r in batch.added]
        failures += [RecordFailure(r.user_id, "remove", error.status, str(error)) for r in batch.removed]
        return cls(failures=failures)
