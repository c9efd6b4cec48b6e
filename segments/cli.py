"""The ``segments`` command line (SPEC section 3).

Every failure the user can cause ends with a clear message on stderr and exit 1:
commands raise :class:`SegmentsError`, and :func:`main` turns it (and anything
unexpected) into that message. Nothing prints a traceback.

The commands here need only the core. ``sync``, ``watch`` and ``demo`` push to
destinations: the ``sync`` package adds them through the ``segments.commands`` entry
point group (:mod:`segments.plugins`), so that ``segments`` never imports ``sync``.
Those commands are loaded when the command line runs one of them, or lists them
(``--help``): a command of the core starts without reading the installed packages'
metadata or importing theirs.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer._click.exceptions import UsageError as _TyperUsageError  # typer's vendored click

from segments import engines, keys, paths, pipeline, plugins, spreadsheet, uploads, warehouse
from segments.commandline import (
    AsOfOption, ProjectDirOption, SpecsOption, TargetOption, WarehouseOption, as_of_value, engine_for, err, out,
    print_build, run_build, specs_dir, use_project, warehouse_file,
)
from segments.compiler import dialects
from segments.errors import SegmentsError, SpecErrors
from segments.spec.parse import load_project

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Audience segments for chat and messaging platforms: specs -> dbt -> warehouse -> destinations.",
)
@app.command()
def validate(specs: SpecsOption = None, project_dir: ProjectDirOption = None) -> None:
    """Check every spec; print every error as file:line:col: message."""
    from segments.spec_tests import read_tests

    use_project(project_dir)
    result = pipeline.compile_specs(specs_dir(specs))
    read_tests(result.project)  # the specs' tests: file:line:col errors too
    validators, failed = plugins.load(plugins.VALIDATORS)
    if failed:
        raise SegmentsError("; ".join(f.message() for f in failed))
    problems = [problem for _, validator in validators for problem in validator(result.project)]
    if problems:
        raise SegmentsError("destination options:\n  " + "\n  ".join(problems))
    out.print(f"ok: {len(result.project.segments)} specs, {len(result.compiled.segments)} segments, "
              f"{len(result.project.traits)} traits")


@app.command("compile")
def compile_command(
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the models are stale.")] = False,
    dialect: Annotated[
        Optional[str],
        typer.Option("--dialect", help=f"SQL dialect of the models: {', '.join(dialects.DIALECTS)}.",
                     show_default="the committed models' (duckdb)"),
    ] = None,
) -> None:
    """Write the dbt models for the specs (or check they are up to date)."""
    use_project(project_dir)
    if dialect is not None and dialect not in dialects.DIALECTS:
        raise SegmentsError(f"--dialect {dialect!r} is not supported; choose one of: {', '.join(dialects.DIALECTS)}")
    result = pipeline.compile_specs(specs_dir(specs), dialect, switch=dialect is not None)
    if check:
        _check_fresh(result.project_dir, result.files, "segments compile")
        return
    changes = pipeline.write_models(result)
    for change in changes:
        out.print(f"{change.kind:>8} {change.path}")
    out.print(f"{len(result.compiled.segments)} segments compiled for {result.dialect} into {result.project_dir} "
              f"({len(changes)} file(s) changed)")


def _check_fresh(directory: Path, files: dict[Path, str], command: str) -> None:
    """Exit 1 with a unified diff per stale file when ``files`` differ from ``directory``."""
    from segments.compiler import writer

    stale = writer.changes(directory, files)
    if stale:
        for change in stale:
            sys.stdout.write(change.diff if change.diff else f"{change.kind}: {change.path}\n")
        listed = "".join(f"\n  {change.kind:>7}  {change.path}" for change in stale)
        raise SegmentsError(f"{len(stale)} generated file(s) in {directory} are stale: run `{command}`{listed}")
    out.print(f"ok: {len(files)} generated files are up to date")


@app.command()
def schema(
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the schemas are stale.")] = False,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Directory to write the schemas to.", show_default="the project's schemas/")
    ] = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Write the JSON Schemas of spec files, for editors (or check they are up to date)."""
    from segments.compiler import writer
    from segments.spec import schema as spec_schema

    out_dir = out_dir or use_project(project_dir).schemas_dir
    files = spec_schema.generated_files()
    if check:
        _check_fresh(out_dir, files, "segments schema")
        return
    try:
        changes = writer.write(out_dir, files)
    except OSError as error:
        raise SegmentsError(f"cannot write the schemas to {out_dir}: {error.strerror or error}") from None
    for change in changes:
        out.print(f"{change.kind:>8} {change.path}")
    out.print(f"{len(files)} schemas in {out_dir} ({len(changes)} file(s) changed)")


@app.command()
def build(
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    as_of: AsOfOption = None,
    target: TargetOption = "duckdb",
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Passed on to dbt: every model rebuilt from scratch.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even an empty specs folder or a build that drops or empties most published segments.")
    ] = False,
) -> None:
    """Compile and build every segment on the warehouse through dbt."""
    use_project(project_dir)
    result = run_build(specs_dir(specs), warehouse_file(target, warehouse_path), as_of_value(as_of), target, full_refresh, force)
    print_build(result)


@app.command()
def preview(
    name: Annotated[str, typer.Argument(help="Segment name (tiers: <spec>__<tier>; a tiered spec's name: all its tiers).")],
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    as_of: AsOfOption = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Sample size (per tier).")] = 10,
    target: TargetOption = "duckdb",
    columns: Annotated[
        Optional[str], typer.Option("--columns", help="Users attributes to show beside the ids, comma-separated (e.g. city,plan).")
    ] = None,
    show_pii: Annotated[bool, typer.Option("--show-pii", help="Allow PII attributes (pii: true) named in --columns.")] = False,
    show_sql: Annotated[bool, typer.Option("--sql", help="Print the segment's own query too: its rule over the base.")] = False,
    sql_full: Annotated[bool, typer.Option("--sql-full", help="Print the whole query run, every model as a CTE.")] = False,
) -> None:
    """Size and sample members of one segment, without a full build."""
    use_project(project_dir)
    duckdb_file = warehouse_file(target, warehouse_path)
    chosen = tuple(c.strip() for c in columns.split(",") if c.strip()) if columns is not None else ()
    if columns is not None and not chosen:
        raise SegmentsError("--columns: name at least one users attribute, e.g. --columns city,plan")
    result = pipeline.preview(
        specs_dir(specs), duckdb_file, name, as_of_value(as_of), limit, target,
        columns=chosen, show_pii=show_pii, sql="full" if sql_full else "rules" if show_sql else None,
    )
    if show_sql or sql_full:
        out.print(result.sql, markup=False, highlight=False)
    for part in result.segments:
        out.print(f"{part.segment}: {part.size:,} members ({part.holdout:,} in holdout)", markup=False, highlight=False)
        if part.matches is not None:
            matched, unmatched = part.matches
            counts = "unknown (no users table)" if matched is None else f"{matched:,} users matched, {unmatched:,} listed keys unmatched"
            out.print(f"  uploaded list: {counts}", markup=False, highlight=False)
        if result.columns and part.rows:
            out.print("  " + "\t".join(("user_id", *result.columns)), markup=False, highlight=False)
        for row in part.rows:
            out.print("  " + "\t".join(row), markup=False, highlight=False)


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="Segment name (tiers: <spec>__<tier>; a tiered spec's name: all its tiers).")],
    user_id: Annotated[str, typer.Argument(help="The user's id (the catalog's users key).")],
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    as_of: Annotated[
        Optional[str],
        typer.Option("--as-of", help="Evaluate at this UTC instant: an ISO date or date-time, now, or now - 7d (as in specs).",
                     show_default="the last build's as_of, else now"),
    ] = None,
    target: TargetOption = "duckdb",
) -> None:
    """Why a user is in or out of a segment, rule by rule, with each measure's value."""
    from segments.explain import explain_users

    use_project(project_dir)
    duckdb_file = warehouse_file(target, warehouse_path)
    at = as_of_value(as_of) if as_of is not None else None
    for explanation in explain_users(specs_dir(specs), duckdb_file, name, [user_id], at, target):
        for line in explanation.lines():
            out.print(line, markup=False, highlight=False)


@app.command("test")
def test_command(
    name: Annotated[Optional[str], typer.Argument(help="Only this spec's tests (a segment or spec name).")] = None,
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """Run the specs' segment tests (tests: blocks, <spec>.tests.yml) on an in-memory DuckDB."""
    from segments import spec_tests

    use_project(project_dir)
    project = load_project(specs_dir(specs))
    if name is not None:
        pipeline.preview_segments(project, name)  # an unknown name fails with the closest one
    tests = spec_tests.read_tests(project, name)
    failed = 0
    for test in tests:
        outcome = spec_tests.run(project, test)
        failed += not outcome.ok
        for line in spec_tests.report(outcome):
            out.print(line, markup=False, highlight=False)
    if failed:
        raise SegmentsError(f"{failed} of {len(tests)} segment test(s) failed")
    out.print(f"{len(tests)} segment test(s) passed" if tests else "no segment tests (add tests: to a spec)")


@app.command()
def load(
    users: Annotated[Optional[Path], typer.Option("--users", help="CSV or Parquet file of users.")] = None,
    events: Annotated[Optional[Path], typer.Option("--events", help="CSV or Parquet file of events.")] = None,
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    target: TargetOption = "duckdb",
) -> None:
    """Load CSV or Parquet files into the catalog's input tables."""
    use_project(project_dir)
    engine = engine_for(target, warehouse_path)
    project = pipeline.compile_specs(specs_dir(specs)).project
    with engine.connect() as session:
        counts = warehouse.load_inputs(session, project.catalog, users, events)
    for table, rows in counts.items():
        out.print(f"loaded {rows:,} rows into {table}")


@app.command()
def upload(
    name: Annotated[str, typer.Argument(help="The upload segment (a spec with upload: {match_on: ...}).")],
    file: Annotated[Path, typer.Argument(help="CSV (with a header row) or Parquet file holding the match_on column.")],
    append: Annotated[bool, typer.Option("--append", help="Add the file's keys to the list.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Take the file's keys out of the list.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="The file becomes the list (the default).")] = False,
    default_country: Annotated[
        Optional[str], typer.Option("--default-country", help="Region of phones without a country code (ISO 3166 alpha-2).",
                                    show_default="the catalog's default_country")
    ] = None,
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    target: TargetOption = "duckdb",
) -> None:
    """Load an uploaded list into the warehouse, in one transaction."""
    if replace + append + remove > 1:
        raise typer.BadParameter("give one of --replace, --append, --remove")
    if default_country is not None and not keys.valid_country(default_country):
        raise SegmentsError(f"--default-country: unknown region {default_country!r} (expected an ISO 3166 alpha-2 code such as IN)")
    use_project(project_dir)
    engine = engine_for(target, warehouse_path)
    project = pipeline.compile_specs(specs_dir(specs)).project
    mode = "append" if append else "remove" if remove else "replace"
    with engine.connect() as session:
        report = uploads.upload(session, project, name, file, mode, default_country)
    for line in report.lines():
        out.print(line, highlight=False)


@app.command()
def members(
    segment: Annotated[
        Optional[str], typer.Option("--segment", help="Only this segment (a spec name selects its tiers).")
    ] = None,
    specs: SpecsOption = None,
    warehouse_path: WarehouseOption = None,
    target: TargetOption = "duckdb",
    project_dir: ProjectDirOption = None,
) -> None:
    """Print segment_name,user_id,is_holdout CSV of the current membership (and arm, for experiments)."""
    use_project(project_dir)
    engine = engine_for(target, warehouse_path)
    selected = None if segment is None else _segment_names(specs_dir(specs), segment)
    with engine.connect(read_only=True) as session:
        shown = warehouse.members(session, selected)  # checks first: a bad request prints no header
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(shown.columns)
        for name, user_id, is_holdout, *arm in shown.rows:
            writer.writerow(spreadsheet.row([name, user_id, "true" if is_holdout else "false", *("" if a is None else a for a in arm)]))


def _segment_names(specs: Path, name: str) -> list[str]:
    """The segments ``name`` means: every tier of the tiered spec it names, else itself
    (whether the last build published it is the warehouse's to say: it may have been
    built from other specs)."""
    for spec in load_project(specs).segments:
        if spec.name == name and spec.tiers:
            return list(spec.segment_names())
    return [name]


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder of the new project (created if missing).", show_default="the working directory")
    ] = Path("."),
) -> None:
    """Scaffold a project: catalog, an example spec, the dbt project, dagster.yaml."""
    from segments import scaffold

    written = scaffold.init(directory)
    for rel in written:
        out.print(f"   added {rel}", markup=False, highlight=False)
    out.print(f"a segments project in {directory.resolve()}: edit segment_specs/_catalog.yml, then "
              "`segments validate` and `segments build` there", markup=False, highlight=False)


@app.command("list")
def list_command(
    specs: SpecsOption = None,
    warehouse_path: WarehouseOption = None,
    target: TargetOption = "duckdb",
    project_dir: ProjectDirOption = None,
) -> None:
    """Every segment with its owner, tags, refresh, size and last build time."""
    use_project(project_dir)
    project = load_project(specs_dir(specs))
    duckdb_file = warehouse_file(target, warehouse_path)
    engine = engines.get(target, duckdb_file)
    builds: dict[str, tuple[int, dt.datetime | None]] = {}
    if duckdb_file is None or duckdb_file.exists():  # no warehouse yet: nothing built
        with engine.connect(read_only=True) as session:
            builds = warehouse.last_builds(session)
    rows = [("segment", "owner", "tags", "refresh", "members", "built")]
    for spec in project.segments:
        for name in spec.segment_names():
            size, built = builds.get(name, (None, None))
            rows.append((
                name, spec.owner or "-", ",".join(spec.tags) or "-", spec.refresh,
                "-" if size is None else f"{size:,}",
                "-" if built is None else f"{built:%Y-%m-%d %H:%M} UTC",
            ))
    # plain aligned columns, never wrapped or cut: greppable at any terminal width
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if i == 4 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


@app.command()
def review(
    base: Annotated[str, typer.Option("--base", help="Git revision to compare with: a branch, tag or commit.")],
    specs: SpecsOption = None,
    project_dir: ProjectDirOption = None,
    warehouse_path: WarehouseOption = None,
    as_of: AsOfOption = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the Markdown here, not to stdout.")] = None,
    target: TargetOption = "duckdb",
) -> None:
    """Markdown review of spec changes since REF: SQL diff, sizes, who enters and leaves."""
    from segments import review as rv

    use_project(project_dir)
    report = rv.markdown(rv.review(specs_dir(specs), base, engine_for(target, warehouse_path), as_of_value(as_of)))
    if out_file is None:
        sys.stdout.write(report)
        return
    try:
        out_file.write_text(report, encoding="utf-8")
    except OSError as error:
        raise SegmentsError(f"--out {out_file}: {error.strerror or error}") from None
    err.print(f"wrote the review to {out_file}", markup=False, highlight=False)


#: The commands defined here (before any plugin adds its own).
CORE_COMMANDS = frozenset(c.name or c.callback.__name__ for c in app.registered_commands if c.callback is not None)
_plugin_failures: list[plugins.Failure] | None = None


def with_plugins() -> list[plugins.Failure]:
    """Add the commands of the packages built on segments (sync adds sync, watch and
    demo), found in the installed packages' entry points, to :data:`app` (once);
    the entry points that could not be loaded. segments imports none of them
    (plugins.py)."""
    global _plugin_failures
    if _plugin_failures is None:
        loaded, _plugin_failures = plugins.load(plugins.COMMANDS)
        for _, register in loaded:
            register(app)
    return _plugin_failures


def _needs_plugins(argv: list[str]) -> bool:
    """Whether running ``argv`` may need a plugin's command: any but a core command
    (none, ``--help`` and unknown names list or suggest them all)."""
    return not argv or argv[0] not in CORE_COMMANDS


def _click_error(error: Exception, *names: str) -> bool:
    """Whether ``error`` is one of click's own exceptions ``names`` (typer runs a copy
    of click of its own; a plugin could still use click's). click is not imported for
    this: a program that raised one of them has imported it."""
    click = sys.modules.get("click")
    return click is not None and isinstance(error, tuple(getattr(click.exceptions, name) for name in names))


def _usage_error(error: Exception, argv: list[str]) -> int:
    """Print a usage error as click does (usage, a hint, the error), then the valid
    options of the command; exit 2."""
    if getattr(error, "ctx", None) is None:
        # errors raised while parsing options carry no context: rebuild the command's,
        # so that the usage printed is that command's
        from typer._click import Context

        group = typer.main.get_command(app)
        root = Context(group, info_name="segments")
        command = group.commands.get(argv[0]) if argv else None  # type: ignore[attr-defined]
        error.ctx = Context(command, info_name=argv[0], parent=root) if command else root  # type: ignore[attr-defined]
    error.show(file=sys.stderr)  # type: ignore[attr-defined]
    ctx = getattr(error, "ctx", None)
    if ctx is not None:
        options = sorted(
            opt for param in ctx.command.params if param.param_type_name == "option" for opt in param.opts
        )
        commands = sorted(getattr(ctx.command, "commands", {}) or {})
        if commands:
            sys.stderr.write(f"Commands: {', '.join(commands)}\n")
        else:
            sys.stderr.write(f"Options: {', '.join([*options, '--help'])}\n")
    return int(getattr(error, "exit_code", 2))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command, map every failure to a message and exit 1 (2 for a
    usage error)."""
    paths.use(None)  # each invocation finds its own project (tests call main repeatedly)
    args = list(sys.argv[1:] if argv is None else argv)
    if _needs_plugins(args):
        for broken in with_plugins():  # its commands are missing; the others work
            err.print(f"warning: {broken.message()}", markup=False, highlight=False)
    try:
        app(args=argv, prog_name="segments", standalone_mode=False)
    except SpecErrors as errors:
        for error in errors.errors:
            err.print(str(error), markup=False, highlight=False)
        err.print(f"{len(errors.errors)} error(s)", markup=False)
        return 1
    except SegmentsError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        return 1
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except _TyperUsageError as error:
        return _usage_error(error, args)
    except typer.TyperException as error:
        error.show(file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - never a traceback for the user
        if _click_error(error, "Exit"):
            return error.exit_code  # type: ignore[attr-defined]
        if _click_error(error, "Abort"):
            err.print("aborted")
            return 1
        if _click_error(error, "UsageError"):
            return _usage_error(error, args)
        if _click_error(error, "ClickException"):
            error.show(file=sys.stderr)  # type: ignore[attr-defined]
            return 1
        err.print(f"internal error: {type(error).__name__}: {error}", markup=False, highlight=False)
        return 1
    finally:
        paths.use(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
