"""What every command of ``segments`` shares, whichever package defines the command.

The commands of :mod:`segments.cli` and those other packages add through the
``segments.commands`` entry point group (:mod:`segments.plugins`; ``sync`` adds
``sync``, ``watch`` and ``demo``) take the same options, settle the project the same
way and print on the same consoles. They import this module, never
:mod:`segments.cli`: ``python -m segments.cli`` runs that module as ``__main__``, and a
second import of it would build a second command line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from segments import engines, paths, pipeline
from segments.errors import SegmentsError
from segments.spec.timeparse import parse_as_of, utc_now

if TYPE_CHECKING:
    from rich.progress import Progress

# rich's progress bars and tables are imported by the commands that show them: a
# command's start pays for what this module imports

# no emoji codes: rich would print a member id such as team:ok:42 as team🆗42
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)

SpecsOption = Annotated[
    Optional[Path], typer.Option("--specs", help="Specs directory.", show_default="the project's, segment_specs/")
]
ProjectDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--project-dir",
        help=f"The project's root (or ${paths.PROJECT_DIR_ENV}).",
        show_default="the nearest folder up whose pyproject.toml has [tool.segments]",
    ),
]
WarehouseOption = Annotated[
    Optional[str],
    typer.Option(
        "--warehouse", help="DuckDB file of the duckdb target (or $SEGMENTS_WAREHOUSE).", show_default="warehouse.duckdb"
    ),
]
AsOfOption = Annotated[
    Optional[str], typer.Option("--as-of", help="Evaluate at this UTC instant: an ISO date or date-time, now, or now - 7d (as in specs).", show_default="now")
]
TargetOption = Annotated[
    str,
    typer.Option("--target", help="Engine, a dbt target of dbt_project/profiles.yml: duckdb, postgres or spark."),
]


def as_of_value(value: str | None) -> dt.datetime:
    """``--as-of``: the times of specs (``now - 7d``, ``2026-01-31``), ``now`` the clock.

    >>> as_of_value("2026-01-31")
    datetime.datetime(2026, 1, 31, 0, 0)
    """
    now = utc_now().replace(microsecond=0)
    if value is None:
        return now
    try:
        return parse_as_of(value, now)
    except ValueError as error:
        raise SegmentsError(f"--as-of: {error}") from None


def warehouse_file(target: str, warehouse_path: str | None) -> Path | None:
    """The DuckDB file for the duckdb target; other targets take no --warehouse."""
    if target not in engines.TARGETS:
        raise SegmentsError(f"--target {target!r} is not supported; choose one of: {', '.join(engines.TARGETS)}")
    if target != "duckdb":
        if warehouse_path is not None:
            raise SegmentsError(f"--warehouse names a DuckDB file; --target {target} connects as dbt_project/profiles.yml says")
        return None
    return paths.warehouse_path(warehouse_path)


def engine_for(target: str, warehouse_path: str | None) -> engines.Engine:
    """The engine of ``--target`` (and ``--warehouse`` for duckdb)."""
    return engines.get(target, warehouse_file(target, warehouse_path))


def use_project(project_dir: Path | None) -> paths.Layout:
    """Settle the project every path of this command derives from."""
    paths.use(project_dir)
    return paths.current()


def specs_dir(value: Path | None) -> Path:
    """``--specs``, else the project's specs folder; it must exist."""
    specs = (value or paths.current().specs_dir).resolve()
    if not specs.is_dir():
        raise SegmentsError(f"{specs}: no such specs directory")
    return specs


def progress() -> Progress:
    """Progress bars on stderr, shown on terminals only."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
    )


def run_build(
    specs: Path, warehouse: Path | None, as_of: dt.datetime, target: str = "duckdb", full_refresh: bool = False,
    force: bool = False,
) -> pipeline.BuildResult:
    """Build with a progress bar over dbt's nodes."""
    with progress() as bars:
        task = bars.add_task("compiling", total=None)

        def compiled(result: pipeline.Compiled) -> None:
            bars.update(task, description="dbt build", total=pipeline.count_dbt_nodes(result.compiled))

        def node(name: str, status: str) -> None:
            bars.update(task, advance=1, description=f"dbt build: {name}")

        return pipeline.build(
            specs, warehouse, as_of, on_node=node, on_compiled=compiled, target=target, full_refresh=full_refresh,
            force=force,
        )


def print_build(result: pipeline.BuildResult) -> None:
    """The sizes table of a build, then how it was done (refreshed or built in full)."""
    from rich.table import Table

    table = Table(title=f"Segments at {result.as_of.isoformat(sep=' ')} UTC")
    table.add_column("segment")
    table.add_column("members", justify="right")
    table.add_column("holdout", justify="right")
    for name, size, holdout in result.sizes:
        table.add_row(name, f"{size:,}", f"{holdout:,}")
    out.print(table)
    done = result.refreshed
    if done is not None:
        out.print(
            f"refreshed {len(result.segments)} segments from as_of {done.previous_as_of.isoformat(sep=' ')} in "
            f"{result.seconds:.1f}s: measures of {done.measured:,} users and segments of {done.flagged:,} evaluated again"
        )
    else:
        why = f" ({result.full_because}; incremental refresh not possible)" if result.full_because else ""
        out.print(f"built {len(result.segments)} segments in {result.seconds:.1f}s{why}")
