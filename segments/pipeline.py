"""The steps the CLI and the orchestration share: compile, build, preview."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import dbtrun, engines, paths, publish_guard, warehouse
from segments.compiler import dialects, render, writer
from segments.compiler import models as md
from segments.engines.base import EngineError
from segments.errors import SegmentsError
from segments.spec.model import Project
from segments.spec.parse import load_project


@dataclass(frozen=True)
class Compiled:
    project: Project
    compiled: md.CompiledProject
    files: dict[Path, str]
    project_dir: Path
    dialect: str = render.DEFAULT_DIALECT


def committed_dialect() -> str:
    """The dialect of the committed models (DuckDB's when there are none)."""
    return writer.dialect_of(paths.DBT_PROJECT_DIR) or render.DEFAULT_DIALECT


def project_dir(specs_dir: Path, dialect: str, switch: bool = False) -> Path:
    """Where the models of ``specs_dir`` in ``dialect`` go.

    The repository's specs compile into the committed ``dbt_project/`` when its models
    are in ``dialect``, or when ``switch`` (``segments compile --dialect``) changes
    their dialect; a build for another engine compiles into a work folder, so the
    committed models never change dialect behind a reviewer's back.
    """
    committed = switch or committed_dialect() == dialect
    return paths.dbt_project_dir(specs_dir, dialect, committed=committed)


def compile_specs(specs_dir: Path, dialect: str | None = None, switch: bool = False) -> Compiled:
    """Validate and compile a specs directory (nothing is written).

    Args:
        specs_dir: the specs.
        dialect: SQL dialect of the models; by default the committed models' for the
            repository's specs, DuckDB's for any other directory.
        switch: write the repository's models in ``dialect`` even when the committed
            ones are in another (see :func:`project_dir`).

    Raises:
        SpecErrors: every problem of every spec file.
    """
    project = load_project(specs_dir)
    compiled = md.compile_project(project)
    if dialect is None:
        dialect = committed_dialect() if paths.is_repository_specs(specs_dir) else render.DEFAULT_DIALECT
    files = writer.generated_files(project, compiled, dialect)
    return Compiled(project, compiled, files, project_dir(specs_dir, dialect, switch), dialect)


def write_models(result: Compiled) -> list[writer.Change]:
    writer.prepare_project_dir(result.project_dir)
    return writer.write(result.project_dir, result.files)


def count_dbt_nodes(compiled: md.CompiledProject) -> int:
    """Models plus tests, for the progress bar's total."""
    tests = sum(len(c.tests) for model in compiled.models for c in model.columns)
    tests += sum(len(model.tests) for model in compiled.models)
    return len(compiled.models) + tests


@dataclass(frozen=True)
class BuildResult:
    segments: list[str]
    sizes: list[tuple[str, int, int]]
    seconds: float
    as_of: dt.datetime


def build(
    specs_dir: Path,
    warehouse_file: Path | None,
    as_of: dt.datetime,
    on_node: Callable[[str, str], None] | None = None,
    on_compiled: Callable[[Compiled], None] | None = None,
    target: str = engines.DEFAULT_TARGET,
    full_refresh: bool = False,
    force: bool = False,
) -> BuildResult:
    """Compile for the target's dialect, check the inputs, ``dbt build`` once, then
    publish atomically.

    Args:
        specs_dir: the specs.
        warehouse_file: the DuckDB file (duckdb target; None: the default one).
        as_of: the instant every segment is evaluated at.
        on_node: called as each dbt node finishes.
        on_compiled: called once the models are written.
        target: the engine (:data:`segments.engines.TARGETS`).
        full_refresh: passed on to dbt (``dbt build --full-refresh``).
        force: publish even when the specs folder is empty or the build would drop
            or empty most published segments (:mod:`segments.publish_guard`).
    """
    started = time.monotonic()
    engine = engines.get(target, warehouse_file)
    result = compile_specs(specs_dir, engine.dialect)
    if not result.compiled.segments and not force:
        raise SegmentsError(publish_guard.empty_specs(specs_dir))
    write_models(result)
    if on_compiled is not None:
        on_compiled(result)
    with engine.connect(read_only=True) as session:
        warehouse.check_inputs(session, result.project.catalog)
    args = ["build", "--full-refresh"] if full_refresh else ["build"]
    dbtrun.run_dbt(result.project_dir, args, engine, as_of, on_node=on_node)
    with engine.connect() as session:
        warehouse.publish(session, result.project, result.compiled.segments, as_of, force=force)
        sizes = warehouse.segment_sizes(session)
    return BuildResult(result.compiled.segments, sizes, time.monotonic() - started, as_of)


@dataclass(frozen=True)
class Preview:
    segment: str
    size: int
    holdout: int
    sample: list[str]
    sql: str


def preview(
    specs_dir: Path,
    warehouse_file: Path | None,
    segment: str,
    as_of: dt.datetime,
    limit: int = 10,
    target: str = engines.DEFAULT_TARGET,
) -> Preview:
    """Size and sample of one segment, by running its compiled SQL directly on the
    target's engine: only the measures this segment needs, no dbt, nothing written."""
    project = load_project(specs_dir)
    if segment not in project.segment_names():
        from difflib import get_close_matches

        close = get_close_matches(segment, project.segment_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SegmentsError(f"unknown segment {segment!r}{hint}")
    engine = engines.get(target, warehouse_file)
    compiled = md.compile_project(project, only=[segment])

    def source(schema: str, table: str) -> exp.Table:
        return engine.table(table, None if schema == md.TARGET_SCHEMA_SOURCE else schema)

    members = render.standalone_query(compiled, md.segment_model_name(segment), as_of, source)
    sql = dialects.render(members, engine.dialect, pretty=True)
    # one pass: the sample's rows carry the segment's size and holdout count
    user = engine.sort_key(exp.column("user_id"))
    held = exp.Sum(this=exp.Case(ifs=[exp.If(this=exp.column("is_holdout"), true=exp.Literal.number(1))], default=exp.Literal.number(0)))
    sample = (
        exp.select("user_id", exp.Window(this=exp.Count(this=exp.Star())), exp.Window(this=held))
        .from_(exp.Subquery(this=members, alias=exp.TableAlias(this=exp.to_identifier("members"))))
        .order_by(user)
        .limit(max(limit, 1))
    )
    with engine.connect(read_only=True) as session:
        warehouse.check_inputs(session, project.catalog)
        try:
            rows = session.rows(sample)
        except EngineError as error:
            raise SegmentsError(f"preview of {segment} failed on {engine.describe()}: {error}") from None
    size, holdout = (int(rows[0][1]), int(rows[0][2])) if rows else (0, 0)
    return Preview(segment, size, holdout, [str(r[0]) for r in rows[:limit]], sql)


def materialize(
    con: duckdb.DuckDBPyConnection, compiled: md.CompiledProject, model: str, as_of: dt.datetime, table: str
) -> exp.Select:
    """Run a compiled model's SQL directly (no dbt) into the temporary table ``table``.

    Returns:
        The standalone query that was run.

    Raises:
        SegmentsError: when the warehouse cannot run it.
    """
    query = render.standalone_query(compiled, model, as_of)
    create = exp.Create(
        kind="TABLE", this=exp.to_table(table), expression=query,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    try:
        con.execute(dialects.render(create, "duckdb"))
    except duckdb.Error as error:
        raise SegmentsError(f"running the compiled SQL of {model} failed: {error}") from None
    return query
