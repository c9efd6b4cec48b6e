"""The commands of ``segments`` that push to destinations: ``sync``, ``watch``, ``demo``.

They live with the sync engine because they need it, and reach the command line
through the ``segments.commands`` entry point group of ``pyproject.toml``
(:func:`register`; :mod:`segments.plugins` says why): ``sync`` depends on
``segments``, never the other way round. Their options and messages are those of the
other commands (:mod:`segments.commandline`).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.progress import Progress

from segments import engines, paths, warehouse
from segments.commandline import (
    AsOfOption, ProjectDirOption, SpecsOption, TargetOption, WarehouseOption, as_of_value, engine_for, err, out,
    print_build, progress, run_build, specs_dir, use_project, warehouse_file,
)
from segments.errors import SegmentsError
from segments.spec.parse import load_project
from segments.spec.timeparse import parse_duration, utc_now

if TYPE_CHECKING:
    from sync import engine

# The sync engine, watch and the receiver are imported by the commands that run them:
# every other command of `segments` loads this module at start (the entry point).


def register(app: typer.Typer) -> None:
    """Add the commands to ``app`` (the ``segments.commands`` entry point)."""
    app.command("sync")(sync_command)
    app.command()(watch)
    app.command()(demo)


class _SyncProgress:
    """Rich progress bars for the sync engine's hooks (on stderr, terminals only)."""

    def __init__(self, bars: Progress):
        self.bars = bars
        self.tasks: dict[object, object] = {}

    def start(self, pair: object, total: int) -> None:
        label = f"{pair.segment} -> {pair.destination}"  # type: ignore[attr-defined]
        self.tasks[pair] = self.bars.add_task(label, total=total)

    def advance(self, pair: object, changes: int) -> None:
        self.bars.update(self.tasks[pair], advance=changes)  # type: ignore[arg-type]

    def retrying(self, destination: str, error: Exception, wait: float) -> None:
        err.print(f"{destination}: {error}; retrying in {wait:.1f}s", markup=False, highlight=False)


def run_sync(
    specs: Path, warehouse_or_engine: Path | engines.Engine, destination: str | None = None, segment: str | None = None,
    dry_run: bool = False, force: bool = False, env: dict[str, str] | None = None,
) -> list[engine.Outcome]:
    """Sync with progress bars; print one line per (segment, destination)."""
    from sync import engine
    from sync.dry_run import totals

    project = load_project(specs)  # sync needs the specs, not their SQL
    with progress() as bars:
        settings = engine.Settings(progress=_SyncProgress(bars))  # type: ignore[arg-type]
        if env is not None:
            settings.env = env
        outcomes = engine.sync(project, warehouse_or_engine, destination, segment, dry_run, force, settings)
    for outcome in outcomes:
        out.print(engine.summary_line(outcome), markup=False, highlight=False)
    if dry_run:
        for line in totals(o.cost for o in outcomes if o.cost is not None):
            out.print(line, markup=False, highlight=False)
    return outcomes


def sync_command(
    destination: Annotated[Optional[str], typer.Option("--destination", help="Only this destination.")] = None,
    segment: Annotated[Optional[str], typer.Option("--segment", help="Only this segment (a spec name selects its tiers).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; send and record nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Send even past max_remove_pct.")] = False,
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    target: TargetOption = "duckdb",
) -> None:
    """Push membership changes (adds and removes) to the destinations."""
    use_project(project_dir)
    outcomes = run_sync(specs_dir(specs), engine_for(target, warehouse_path), destination, segment, dry_run, force)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        failed = sum(o.failed for o in bad)
        raise SegmentsError(
            f"{len(bad)} of {len(outcomes)} sync(s) did not complete"
            + (f"; {failed} record(s) failed, see the sync_errors table" if failed else "")
        )


def _duration(text: str, option: str, allow_zero: bool = False) -> float:
    """Seconds of a duration option (5s, 1m ...); a bad one is a usage error."""
    try:
        seconds = parse_duration(text).seconds
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise typer.BadParameter(f"the {option.lstrip('-')} must be {'at least' if allow_zero else 'longer than'} 0s",
                                 param_hint=option)
    return float(seconds)


def watch(
    interval: Annotated[
        str, typer.Option("--interval", help="Time between the starts of two cycles: 5s, 1m ...")
    ] = "5s",
    cycles: Annotated[
        Optional[int], typer.Option("--cycles", min=1, help="Stop after this many cycles.", show_default="run until SIGTERM")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Sync past max_remove_pct and the size check.")] = False,
    lag: Annotated[
        str, typer.Option("--lag", help="Evaluate this far behind the clock, for events a loader delivers late: 0s, 30s ...")
    ] = "0s",
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
) -> None:
    """Keep the refresh: realtime segments current: build at now, sync their changes, repeat
    (at once when new events arrive, else every --interval, so windows slide)."""
    from sync import watch as realtime

    use_project(project_dir)
    folder = specs_dir(specs)
    seconds = _duration(interval, "--interval")
    behind = _duration(lag, "--lag", allow_zero=True)
    if not realtime.realtime_segments(load_project(folder)):
        raise SegmentsError(f"no spec in {folder} has refresh: realtime; nothing to watch")
    watcher = realtime.Watcher(folder, warehouse_file("duckdb", warehouse_path), force=force, lag=behind)
    with realtime.stop_on_signals() as stop:
        watcher.run(seconds, stop, lambda line: err.print(line, markup=False, highlight=False), cycles)


def demo(
    users: Annotated[int, typer.Option("--users", min=1, help="How many demo users to generate.")] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the demo data.")] = 7,
    warehouse_path: WarehouseOption = None,
    as_of: AsOfOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Generate sample data, build every example segment, print a summary."""
    from segments import demo_data  # here: it imports pandas, which every other command would pay for

    specs = use_project(project_dir).specs_dir
    at = as_of_value(as_of) if as_of else utc_now().replace(hour=0, minute=0, second=0, microsecond=0)
    duckdb_file = paths.warehouse_path(warehouse_path)
    data = demo_data.generate(users=users, seed=seed, anchor=at)
    with warehouse.connect(duckdb_file) as con:
        demo_data.write_duckdb(data, con)
    out.print(f"generated {len(data.users):,} users and {len(data.events):,} events into {duckdb_file}")
    print_build(run_build(specs, duckdb_file, at))
    demo_sync(specs, duckdb_file)


def demo_sync(specs: Path, duckdb_file: Path) -> None:
    """Sync the example specs' webhook and csv destinations to a local receiver and
    folder (the others need real accounts), and print what arrived."""
    from sync.places import forget
    from sync.receiver import AudienceReceiver

    project = load_project(specs)
    local = sorted(name for name, d in project.destinations.items() if d.type in ("webhook", "csv"))
    if not local:
        return
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    exports = paths.work_dir() / "exports"
    with AudienceReceiver(secret, keep_deliveries=False) as receiver:
        env = {"CRM_HOOK_URL": receiver.url, "CRM_HOOK_SECRET": secret, "SEGMENTS_EXPORT_DIR": str(exports)}
        for name in local:  # a fresh receiver holds nothing yet
            forget(engines.get("duckdb", duckdb_file), name)
        outcomes = []
        for name in local:
            outcomes += run_sync(specs, duckdb_file, destination=name, env=env)
    sizes = ", ".join(f"{segment} {len(members):,}" for segment, members in sorted(receiver.audiences.items()))
    out.print(f"the local webhook receiver got {receiver.requests} signed requests; audiences: {sizes}")
    out.print(f"csv change files in {exports}")
    if not all(o.ok for o in outcomes):
        raise SegmentsError("the demo sync did not complete")
