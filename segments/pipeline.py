"""The steps the CLI and the orchestration share: compile, build, preview."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlglot import exp

from segments import engines, paths, publish_guard, uploads, warehouse
from segments.compiler import dialects, render, writer
from segments.compiler import models as md
from segments.engines.base import EngineError, Session
from segments.errors import SegmentsError
from segments.spec.model import Project
from segments.spec.parse import load_project

if TYPE_CHECKING:
    from segments import refresh

# dbt's runner and the incremental refresh are imported by build(): a preview, the
# most frequent command, starts without them

@dataclass
class Compiled:
    project: Project
    compiled: md.CompiledProject
    project_dir: Path
    dialect: str = render.DEFAULT_DIALECT

    @functools.cached_property
    def files(self) -> dict[Path, str]:
        """The dbt project's generated files, rendered when first asked for: a build
        that refreshes without dbt never renders them."""
        return writer.generated_files(self.project, self.compiled, self.dialect)


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
    return Compiled(project, compiled, project_dir(specs_dir, dialect, switch), dialect)


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
    #: set when the build was an incremental refresh of the last one (no dbt run)
    refreshed: refresh.Outcome | None = None
    #: why a build that was not asked to be full could not refresh
    full_because: str | None = None


def build(
    specs_dir: Path,
    warehouse_file: Path | None,
    as_of: dt.datetime,
    on_node: Callable[[str, str], None] | None = None,
    on_compiled: Callable[[Compiled], None] | None = None,
    target: str = engines.DEFAULT_TARGET,
    full_refresh: bool = False,
    force: bool = False,
    on_published: Callable[[Session], None] | None = None,
    compiled: Compiled | None = None,
) -> BuildResult:
    """Compile for the target's dialect, check the inputs, ``dbt build`` once, then
    publish atomically.

    Args:
        specs_dir: the specs.
        warehouse_file: the DuckDB file (duckdb target; None: the default one).
        as_of: the instant every segment is evaluated at.
        on_node: called as each dbt node finishes.
        on_compiled: called once the models are written (before dbt runs; a
            refresh without dbt writes none).
        target: the engine (:data:`segments.engines.TARGETS`).
        full_refresh: passed on to dbt (``dbt build --full-refresh``).
        force: publish even when the specs folder is empty or the build would drop
            or empty most published segments (:mod:`segments.publish_guard`).
        on_published: called with the session that published, once it has: what a
            caller reads next (``segments watch``: the events it saw, the sizes) costs
            no second opening of the warehouse.
        compiled: :func:`compile_specs` of ``specs_dir`` for the target's dialect, kept
            by a caller that builds again and again while no spec changes (the watch).
    """
    from segments import dbtrun, refresh

    started = time.monotonic()
    engine = engines.get(target, warehouse_file)
    result = compiled if compiled is not None and compiled.dialect == engine.dialect else compile_specs(specs_dir, engine.dialect)
    if not result.compiled.segments and not force:
        raise SegmentsError(publish_guard.empty_specs(specs_dir))
    reasons: list[str] = []
    engine.check_exists()  # a build reads inputs: it never creates a warehouse
    # everything before dbt in one session (each connection costs a catalog load);
    # closed before dbt, which opens the warehouse itself
    with contextlib.ExitStack() as held:
        session = held.enter_context(engine.connect())
        warehouse.check_inputs(session, result.project.catalog)
        uploads.prepare(session, result.project)  # the specs' files: into the warehouse, never the SQL
        if uploads.reads_files(result.project):
            held.close()  # the files' keys leave with their session: the refresh has its memory
            session = held.enter_context(engine.connect())
        if not full_refresh:
            def publish(_: object) -> None:  # in the refresh's transaction
                warehouse.publish(
                    session, result.project, result.compiled.segments, as_of, force=force, changed_users=refresh.FLAGGED,
                    changed_members=refresh.MEMBERS,
                )

            outcome = refresh.attempt(session, result.compiled, as_of, log=reasons.append, then=publish)
            if outcome is not None:
                if writer.older_than(result.project_dir, specs_dir):
                    write_models(result)  # the models say what the build holds, even unused
                sizes = warehouse.segment_sizes(session)
                if on_published is not None:
                    on_published(session)
                return BuildResult(result.compiled.segments, sizes, time.monotonic() - started, as_of, outcome)
        refresh.forget(session)  # the tables change under it
    write_models(result)
    if on_compiled is not None:
        on_compiled(result)
    args = ["build", "--full-refresh"] if full_refresh else ["build"]
    dbtrun.run_dbt(result.project_dir, args, engine, as_of, on_node=on_node)
    with engine.connect() as session:
        warehouse.publish(session, result.project, result.compiled.segments, as_of, force=force)
        refresh.record(session, result.compiled, as_of)
        sizes = warehouse.segment_sizes(session)
        if on_published is not None:
            on_published(session)
    return BuildResult(
        result.compiled.segments, sizes, time.monotonic() - started, as_of, full_because=reasons[0] if reasons else None,
    )


@dataclass(frozen=True)
class SegmentSample:
    """One segment of a preview: its size, holdout count and first members."""

    segment: str
    size: int
    holdout: int
    #: the first members by user_id: the id, then the chosen columns as text
    rows: list[tuple[str, ...]]
    #: an upload segment's (users whose key is listed, listed keys no user has)
    matches: tuple[int | None, int | None] | None = None

    @property
    def sample(self) -> list[str]:
        return [row[0] for row in self.rows]


@dataclass(frozen=True)
class Preview:
    """What ``preview NAME`` shows: every segment NAME means (a tiered spec: its tiers)."""

    name: str
    segments: list[SegmentSample]
    columns: tuple[str, ...]
    #: each segment's own query (its rule over the base), or the whole query; "" when not asked for
    sql: str

    @property
    def size(self) -> int:
        return sum(part.size for part in self.segments)


def preview_segments(project: Project, name: str) -> list[str]:
    """The segments ``name`` means: a segment, or every tier of a tiered spec.

    Raises:
        SegmentsError: for an unknown name, with the closest one.
    """
    for spec in project.segments:
        if spec.name == name and spec.tiers:
            return list(spec.segment_names())
    if name in project.segment_names():
        return [name]
    from difflib import get_close_matches

    names = list(project.segment_names()) + [spec.name for spec in project.segments if spec.tiers]
    close = get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SegmentsError(f"unknown segment {name!r}{hint}")


def preview_columns(project: Project, columns: tuple[str, ...], show_pii: bool) -> tuple[str, ...]:
    """The users attributes ``--columns`` names, checked: PII only with ``show_pii``.

    Raises:
        SegmentsError: for an unknown column (naming the valid ones), or a PII column
            without ``show_pii``.
    """
    attributes = project.catalog.users.attributes
    valid = [a for a in attributes if a != "user_id"]
    for column in columns:
        if column not in valid:
            raise SegmentsError(
                f"--columns: unknown users attribute {column!r}; the attributes of _catalog.yml are: "
                f"{', '.join(valid) or '(none)'}"
            )
    pii = [c for c in columns if attributes[c].pii]
    if pii and not show_pii:
        raise SegmentsError(
            f"--columns: {', '.join(pii)} {'is' if len(pii) == 1 else 'are'} PII (pii: true in _catalog.yml); "
            "add --show-pii to print it"
        )
    return tuple(dict.fromkeys(columns))


def preview(
    specs_dir: Path,
    warehouse_file: Path | None,
    segment: str,
    as_of: dt.datetime,
    limit: int = 10,
    target: str = engines.DEFAULT_TARGET,
    columns: tuple[str, ...] = (),
    show_pii: bool = False,
    sql: Literal["rules", "full"] | None = None,
) -> Preview:
    """Size and sample of one segment (a tiered spec: each of its tiers), by running
    its compiled SQL directly on the target's engine: only the measures it needs, no
    dbt, nothing written.

    Args:
        columns: users attributes shown beside each member's id (PII ones only with
            ``show_pii``).
        sql: the SQL text to return too: each segment's rule over the base
            (``rules``) or the whole query run, every model as a CTE (``full``);
            None: none (rendering it costs a few tens of milliseconds).
    """
    project = load_project(specs_dir)
    wanted = preview_segments(project, segment)
    shown = preview_columns(project, columns, show_pii)
    engine = engines.get(target, warehouse_file)
    compiled = md.compile_project(project, only=wanted)


    def col(name: str, table: str) -> exp.Column:
        return exp.column(name, table=table)

    def by_segment(aggregate: exp.Expression) -> exp.Window:
        return exp.Window(this=aggregate, partition_by=[col("segment_name", "m")])

    held = exp.Case(ifs=[exp.If(this=col("is_holdout", "m"), true=exp.Literal.number(1))], default=exp.Literal.number(0))
    ranked = exp.select(
        col("segment_name", "m"),
        col("user_id", "m"),
        *[col(c, "u") for c in shown],
        exp.alias_(by_segment(exp.Count(this=exp.Star())), "segment_size"),
        exp.alias_(by_segment(exp.Sum(this=held)), "segment_holdout"),
        exp.alias_(
            exp.Window(
                this=exp.RowNumber(),
                partition_by=[col("segment_name", "m")],
                order=exp.Order(expressions=[exp.Ordered(this=engine.sort_key(col("user_id", "m")))]),
            ),
            "row_in_segment",
        ),
    ).from_(exp.Table(this=exp.to_identifier(md.MEMBERSHIP), alias=exp.TableAlias(this=exp.to_identifier("m"))))
    if shown:
        universe = exp.Table(this=exp.to_identifier(md.UNIVERSE), alias=exp.TableAlias(this=exp.to_identifier("u")))
        ranked = ranked.join(universe, on=exp.EQ(this=col("user_id", "u"), expression=col("user_id", "m")), join_type="left")
    ranked = ranked.where(exp.In(this=col("segment_name", "m"), expressions=[exp.Literal.string(w) for w in wanted]))
    final = (
        exp.select("*")
        .from_(exp.Subquery(this=ranked, alias=exp.TableAlias(this=exp.to_identifier("ranked"))))
        .where(exp.LTE(this=exp.column("row_in_segment"), expression=exp.Literal.number(max(limit, 1))))
        .order_by("segment_name", "row_in_segment")
    )
    read_lists = md.UPLOAD_KEYS in {model.name for model in compiled.models}
    # the uploaded lists as the specs' files make them: a temporary table
    with engine.connect(read_only=not (read_lists and engine.temporaries_need_writes)) as session:
        session.reads_in_any_order()  # the query's ORDER BY orders the sample
        warehouse.check_inputs(session, project.catalog)
        with uploads.overlay(session, project, compiled.segments if read_lists else []) as lists:
            query = render.standalone_query(
                compiled, md.MEMBERSHIP, as_of, source_table(engine, lists), select=final,
                also=(md.UNIVERSE,) if shown else (),
            )
            try:
                rows = session.rows(query)
            except EngineError as error:
                raise SegmentsError(f"preview of {segment} failed on {engine.describe()}: {error}") from None
            matches = {
                name: uploads.match_counts(session, project, name, lists)
                for name in wanted if name in project.segment_names() and _is_upload(project, name)
            }
    text = ""
    if sql == "full":
        text = dialects.render(query, engine.dialect, pretty=True)
    elif sql == "rules":
        parts_sql = []
        for name in wanted:
            rule = render.rule_query(compiled, name, as_of)
            reads = sorted({c.name for c in rule.find_all(exp.Column) if c.name.startswith(md.SEGMENT_PREFIX)})
            note = f"\n-- {', '.join(reads)}: the flags of the segments it reads ({md.FLAGS})" if reads else ""
            parts_sql.append(
                f"-- {name}: its rule over {md.BASE} (one row per user of the universe; "
                f"--sql-full prints the whole query){note}\n" + dialects.render(rule, engine.dialect, pretty=True)
            )
        text = "\n\n".join(parts_sql)
    parts = []
    for name in wanted:
        mine = [row for row in rows if row[0] == name]
        size, holdout = (int(mine[0][-3]), int(mine[0][-2] or 0)) if mine else (0, 0)
        sample = [tuple("" if v is None else str(v) for v in row[1 : 2 + len(shown)]) for row in mine[:limit]]
        parts.append(SegmentSample(name, size, holdout, sample, matches.get(name)))
    return Preview(segment, parts, shown, text)


def _is_upload(project: Project, segment: str) -> bool:
    spec = next((s for s in project.segments if segment in s.segment_names()), None)
    return spec is not None and spec.upload is not None


def source_table(engine: engines.Engine, lists: exp.Table | None = None) -> Callable[[str, str], exp.Table]:
    """How the compiled SQL run directly (no dbt) reads a catalog source on ``engine``:
    the sources of the target schema in the engine's own; the uploaded lists from
    ``lists`` when given (:func:`segments.uploads.overlay`)."""

    def source(schema: str, table: str) -> exp.Table:
        if lists is not None and (schema, table) == (md.TARGET_SCHEMA_SOURCE, md.UPLOADS_TABLE):
            return lists.copy()
        return engine.source_table(schema, table)

    return source


def materialize(
    session: Session, compiled: md.CompiledProject, model: str, as_of: dt.datetime, table: str,
    lists: exp.Table | None = None,
) -> exp.Select:
    """Run a compiled model's SQL directly (no dbt) into the session's temporary table
    ``table``, reading the uploaded lists from ``lists`` when given.

    Returns:
        The standalone query that was run.

    Raises:
        SegmentsError: when the warehouse cannot run it.
    """
    query = render.standalone_query(compiled, model, as_of, source_table(session.engine, lists))
    try:
        session.create_temporary(table, query)
    except EngineError as error:
        raise SegmentsError(f"running the compiled SQL of {model} failed: {error}") from None
    return query
