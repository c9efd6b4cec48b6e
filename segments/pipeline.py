"""The steps the CLI and the orchestration share: compile, build, preview."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from segments import dbtrun, warehouse
from segments.compiler import models as md
from segments.compiler import render, writer
from segments.errors import SegmentsError
from segments import paths
from segments.spec.model import Project
from segments.spec.parse import load_project


@dataclass(frozen=True)
class Compiled:
    project: Project
    compiled: md.CompiledProject
    files: dict[Path, str]
    project_dir: Path


def compile_specs(specs_dir: Path, dialect: str = "duckdb") -> Compiled:
    """Validate and compile a specs directory (nothing is written).

    Raises:
        SpecErrors: every problem of every spec file.
    """
    project = load_project(specs_dir)
    compiled = md.compile_project(project)
    files = writer.generated_files(project, compiled, dialect)
    return Compiled(project, compiled, files, paths.dbt_project_dir(specs_dir))


def write_models(result: Compiled) -> list[writer.Change]:
    writer.prepare_project_dir(result.project_dir)
    return writer.write(result.project_dir, result.files)


def count_dbt_nodes(compiled: md.CompiledProject) -> int:
    """Models plus tests, for the progress bar's total."""
    tests = sum(len(c.tests) for model in compiled.models for c in model.columns)
    tests += sum(len(model.tests) for model in compiled.models)
    return len(compiled.models) + tests + len(render.SOURCE_KEY_TESTS)


@dataclass(frozen=True)
class BuildResult:
    segments: list[str]
    sizes: list[tuple[str, int, int]]
    seconds: float
    as_of: dt.datetime


def build(
    specs_dir: Path,
    warehouse_file: Path,
    as_of: dt.datetime,
    on_node: Callable[[str, str], None] | None = None,
    on_compiled: Callable[[Compiled], None] | None = None,
) -> BuildResult:
    """Compile, check the inputs, ``dbt build`` once, then publish atomically."""
    started = time.monotonic()
    result = compile_specs(specs_dir)
    write_models(result)
    if on_compiled is not None:
        on_compiled(result)
    if not warehouse_file.exists():
        raise SegmentsError(f"no warehouse at {warehouse_file}: load input tables first (`segments load`)")
    with warehouse.connect(warehouse_file) as con:
        warehouse.check_inputs(con, result.project.catalog)
    dbtrun.run_dbt(result.project_dir, ["build"], warehouse_file, as_of, on_node=on_node)
    with warehouse.connect(warehouse_file) as con:
        warehouse.publish(con, result.project, result.compiled.segments, as_of)
        sizes = warehouse.segment_sizes(con)
    return BuildResult(result.compiled.segments, sizes, time.monotonic() - started, as_of)


@dataclass(frozen=True)
class Preview:
    segment: str
    size: int
    holdout: int
    sample: list[str]
    sql: str


def preview(specs_dir: Path, warehouse_file: Path, segment: str, as_of: dt.datetime, limit: int = 10) -> Preview:
    """Size and sample of one segment, by running its compiled SQL directly on
    DuckDB: only the measures this segment needs, no dbt, nothing written."""
    project = load_project(specs_dir)
    if segment not in project.segment_names():
        from difflib import get_close_matches

        close = get_close_matches(segment, project.segment_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SegmentsError(f"unknown segment {segment!r}{hint}")
    compiled = md.compile_project(project, only=[segment])
    with warehouse.connect(warehouse_file, read_only=True) as con:
        warehouse.check_inputs(con, project.catalog)
        query = materialize(con, compiled, md.segment_model_name(segment), as_of, "preview_members")
        size, holdout = con.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE is_holdout) FROM preview_members"
        ).fetchone()
        sample = [r[0] for r in con.execute(
            "SELECT user_id FROM preview_members ORDER BY user_id LIMIT ?", [limit]
        ).fetchall()]
    return Preview(segment, size, holdout, sample, query.sql(dialect="duckdb", pretty=True))


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
        con.execute(create.sql(dialect="duckdb"))
    except duckdb.Error as error:
        raise SegmentsError(f"running the compiled SQL of {model} failed: {error}") from None
    return query
