"""What a review finds: each segment's change, sizes and moves, and the files that changed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal


Status = Literal["added", "changed", "removed", "edited"]
#: How many example ids of those who enter, and of those who leave.
SAMPLES = 5
#: Longest diff shown in full; longer ones are cut, with a note.
MAX_DIFF_LINES = 200
#: The overlap matrix keeps the most overlapping rows and the most changed columns.
MAX_OVERLAP_ROWS, MAX_OVERLAP_COLUMNS = 15, 8

BEFORE, AFTER, MOVES = "review_before", "review_after", "review_moves"


@dataclass(frozen=True)
class Size:
    members: int
    holdout: int
    arms: tuple[tuple[str, int], ...] = ()  # members per experiment arm


@dataclass(frozen=True)
class SegmentChange:
    """One segment whose compiled query or spec file differs between the sides.

    ``edited``: the spec file changed but not the query (a description, an owner),
    so the members are the same.
    """

    name: str
    spec: str  # the spec's name; the tiers of one spec share it
    status: Status
    sql: str  # changed: the diff of its compiled query; added: the query; else empty
    before: Size | None = None  # None where the segment does not exist
    after: Size | None = None
    entered: int = 0
    left: int = 0
    sample_entered: tuple[str, ...] = ()
    sample_left: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileChange:
    """A file of the specs directory that differs: a spec, configuration or upload."""

    path: str  # as the repository names it, e.g. segment_specs/_traits.yml
    diff: str  # unified diff; empty for uploads, whose rows may be personal data
    rows_before: int | None = None  # uploads: data rows on each side
    rows_after: int | None = None


@dataclass(frozen=True)
class Review:
    """Everything the report says, for :func:`markdown` or a test to read."""

    base: str
    head: str
    as_of: dt.datetime
    warehouse: str
    changes: list[SegmentChange]
    unchanged: int  # segments on both sides with the same query and spec file
    spec_files: dict[str, FileChange]  # spec name -> how its file changed
    other_files: list[FileChange]  # _catalog.yml, _traits.yml, uploads...
    sizes_after: dict[str, int] = field(default_factory=dict)  # every segment after
    overlap: dict[tuple[str, str], int] = field(default_factory=dict)  # (changed, other) -> shared
    note: str = ""
