"""The destination interface: what the sync engine hands a platform, and what it
gets back.

A :class:`Destination` is one entry of ``_destinations.yml``; its :meth:`audience` is
one segment synced there (a tag, a label, a manual segment, a file). The engine sends
an audience :class:`Batch` es of adds and removes; the audience applies them and says
which records failed for good. Transient trouble is retried below, in
:class:`~sync.http.HttpClient`; if it persists the error propagates and the engine
stops that destination, with the batch not acknowledged.

Beside it: :mod:`~sync.destinations.batches` (records, batches, results),
:mod:`~sync.destinations.options` (options and ``${VAR}`` secrets) and
:mod:`~sync.destinations.api` (helpers for destinations behind an HTTP API).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from sync.destinations.batches import Batch, BatchResult, Record, RecordFailure
from sync.destinations.options import Option
from sync.http import HttpClient, TerminalError


# Options every destination takes (SPEC 4); each type adds its own.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("requires"),
    Option("max_remove_pct", (int, float), default=50),
    Option("batch_size", int),
    Option("rate_limit", (int, float)),  # requests per second; default from the vendor's docs
    Option("concurrency", int),
)


class Audience(ABC):
    """One segment at one destination."""

    @abstractmethod
    def send(self, batch: Batch) -> BatchResult:
        """Apply a batch. Return per-record failures; raise ``TerminalError`` when the
        whole batch was refused, ``TransientError`` when the destination is unreachable."""

    def close(self) -> None:
        """Release what the audience holds (open files)."""


class PerRecordAudience(Audience):
    """For APIs that take one contact per call: a refused record fails alone."""

    def send(self, batch: Batch) -> BatchResult:
        result = BatchResult()
        for operation, records in (("add", batch.added), ("remove", batch.removed)):
            for record in records:
                try:
                    remote_id = self.add(record) if operation == "add" else self.remove(record)
                except TerminalError as error:
                    result.failures.append(RecordFailure(record.user_id, operation, error.status, str(error)))
                    continue
                if operation == "add" and remote_id is not None:
                    result.remote_ids[record.user_id] = remote_id
        return result

    @abstractmethod
    def add(self, record: Record) -> str | None:
        """Put one member in the audience; return the destination's id for it."""

    @abstractmethod
    def remove(self, record: Record) -> None:
        """Take one member out of the audience."""


class Destination(ABC):
    """One configured destination.

    Subclasses declare their ``type`` (the ``type:`` of ``_destinations.yml``), their
    options, and limits taken from the vendor's documentation.
    """

    type: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    TARGET_OPTIONS: ClassVar[tuple[Option, ...]] = ()  # keys of a segment's sync entry
    DEFAULT_BATCH_SIZE: ClassVar[int] = 100
    MAX_BATCH_SIZE: ClassVar[int] = 100
    DEFAULT_RATE: ClassVar[float | None] = None  # requests per second
    DEFAULT_CONCURRENCY: ClassVar[int] = 1
    # Sends SPEC 4.1's JSON objects ({"user_id", **fields} per add, {"user_id"} per
    # remove): the warehouse may encode each batch (Batch.encoded), so no Python
    # object is made per record on the way.
    JSON_CHANGES: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        self.name = name
        self.options = dict(options)
        self.http = http

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        return COMMON_OPTIONS + cls.OPTIONS

    @property
    def batch_size(self) -> int:
        size = self.options.get("batch_size") or self.DEFAULT_BATCH_SIZE
        return max(1, min(int(size), self.MAX_BATCH_SIZE))  # type: ignore[call-overload]

    @property
    def rate(self) -> float | None:
        rate = self.options.get("rate_limit")
        return float(rate) if rate is not None else self.DEFAULT_RATE  # type: ignore[arg-type]

    @property
    def concurrency(self) -> int:
        return max(1, int(self.options.get("concurrency") or self.DEFAULT_CONCURRENCY))  # type: ignore[call-overload]

    @property
    def max_remove_pct(self) -> float:
        return float(self.options["max_remove_pct"])  # type: ignore[arg-type]

    @property
    def requires(self) -> str | None:
        return self.options.get("requires")  # type: ignore[return-value]

    def fields(self) -> tuple[str, ...]:
        """User attributes sent with each add."""
        return ()

    def required_fields(self) -> tuple[str, ...]:
        """Attributes a member must have to be sent at all (a phone for WhatsApp)."""
        return ()

    @abstractmethod
    def audience(self, segment: str, options: Mapping[str, object]) -> Audience:
        """Prepare one segment's audience (find or create its tag, open its file...)."""
