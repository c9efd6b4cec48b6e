"""Errors that end a command with a clear message and exit 1 (never a traceback)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from segments.spec.model import Location


class SegmentsError(Exception):
    """A user-facing failure: bad input, a missing table, a failed build.

    The CLI prints ``str(error)`` and exits 1.
    """


@dataclass(frozen=True)
class SpecError:
    """One problem in one spec file, printed as ``file:line:col: message``."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class SpecErrors(SegmentsError):
    """Every problem found in every spec file of one run, in file order."""

    def __init__(self, errors: Iterable[SpecError]):
        self.errors = sorted(
            errors, key=lambda e: (e.location.file, e.location.line, e.location.col, e.message)
        )
        super().__init__("\n".join(str(e) for e in self.errors))
