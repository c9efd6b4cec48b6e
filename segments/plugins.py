"""Commands and checks that other packages add to ``segments``, through entry points.

``segments`` is the core (specs, compiler, engines, build); ``sync`` (destinations)
and ``orchestration`` (Dagster) are built on it and it imports neither. What the
command line needs from them it finds in the installed packages' metadata, in two
entry point groups (declared in ``pyproject.toml``)::

    [project.entry-points."segments.commands"]
    sync = "sync.commands:register"            # register(app): adds typer commands

    [project.entry-points."segments.validators"]
    destinations = "sync.engine:configuration_problems"   # (Project) -> list[str]

A package of one's own adds commands or ``segments validate`` checks the same way,
without a change here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

COMMANDS = "segments.commands"
VALIDATORS = "segments.validators"


@dataclass(frozen=True)
class Failure:
    """An entry point that could not be loaded: its ``name = value`` and why."""

    entry_point: str
    error: str

    def message(self) -> str:
        return f"{self.entry_point} could not be loaded: {self.error}"


def load(group: str) -> tuple[list[tuple[str, Callable[..., object]]], list[Failure]]:
    """The objects the installed packages declare in ``group``, by entry point name,
    and the entry points that failed to load (a broken plugin does not stop the
    commands that do not need it).

    >>> loaded, failed = load("segments.no-such-group")
    >>> loaded, failed
    ([], [])
    """
    from importlib import metadata  # reading every installed package's metadata: when asked

    loaded, failed = [], []
    for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            loaded.append((entry.name, entry.load()))
        except Exception as error:  # noqa: BLE001 - reported by the command line, not a traceback
            failed.append(Failure(f"{group}: {entry.name} = {entry.value}", f"{type(error).__name__}: {error}"))
    return loaded, failed
