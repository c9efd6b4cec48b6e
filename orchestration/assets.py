"""The segments as Dagster assets: one ``dbt build`` of what a run selects, then the publish.

A run builds its selection with ``dbt build`` (models and their dbt tests, into the
build schema) at the run's ``as_of``. When the selection includes
``segment_membership``, the same step then publishes the build, as ``segments build``
does: one transaction replaces the published membership, traits, views and catalog
and records who entered and who left (:mod:`segments.history`). Only then are the
materializations reported, each segment's with its size, holdout, entered and exited
counts: a segment materialization means "built and published". A failed dbt build
publishes nothing and reports only its failed tests.
"""


import datetime as dt
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from dagster import AssetCheckResult, AssetExecutionContext, AssetKey, Failure, MetadataValue, Output
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.project import dbt_project
from orchestration.resources import Warehouse
from orchestration.translator import SegmentsTranslator, model_key, segment_nodes, source_key
from segments import dbtrun, history, paths, pipeline, refresh
from segments import warehouse as wh
from segments.compiler import models as md
from segments.compiler import writer
from segments.spec.parse import load_project
from segments.spec.timeparse import parse_instant, utc_now

#: Run tag holding the instant a run evaluates every segment at (a schedule's tick).
AS_OF_TAG = "segments/as_of"

TRANSLATOR = SegmentsTranslator()
MANIFEST: Mapping = json.loads(dbt_project.manifest_path.read_text(encoding="utf-8"))
SEGMENTS = segment_nodes(MANIFEST, TRANSLATOR)
MEMBERSHIP_KEY = model_key(MANIFEST, TRANSLATOR, md.MEMBERSHIP)


def format_as_of(instant: dt.datetime) -> str:
    """The ``segments/as_of`` tag value for an instant (naive UTC, or aware).

    >>> format_as_of(dt.datetime(2026, 1, 15, 7, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    '2026-01-15 06:00:00'
    """
    return dbtrun.format_as_of(parse_instant(instant))


def run_as_of(tags: Mapping[str, str]) -> dt.datetime:
    """A run's ``as_of``: its ``segments/as_of`` tag, else the current second (UTC).

    >>> run_as_of({AS_OF_TAG: "2026-01-15T06:00:00Z"})
    datetime.datetime(2026, 1, 15, 6, 0)
    """
    if AS_OF_TAG in tags:
        return parse_instant(tags[AS_OF_TAG])
    return utc_now().replace(microsecond=0)


def input_keys() -> tuple[AssetKey, AssetKey]:
    """The asset keys of the catalog's users and events tables (dbt sources)."""
    catalog = load_project(paths.SPECS_DIR).catalog
    return tuple(  # type: ignore[return-value]
        source_key(MANIFEST, TRANSLATOR, relation.schema or wh.TARGET_SCHEMA, relation.name)
        for relation in (catalog.users.relation, catalog.events.relation)
    )


def _fresh_compile() -> pipeline.Compiled:
    """The specs compiled; a failure when the committed models do not match them."""
    compiled = pipeline.compile_specs(paths.SPECS_DIR)
    stale = writer.changes(compiled.project_dir, compiled.files)
    if stale:
        raise Failure(
            description=f"{len(stale)} generated file(s) in {compiled.project_dir} do not match the specs: "
            "run `segments compile`, then reload the code location.",
            metadata={"stale": [str(change.path) for change in stale]},
        )
    return compiled


def _with_build_metadata(
    context: AssetExecutionContext,
    events: Iterable[object],
    sizes: Mapping[str, history.BuildSize],
    as_of: dt.datetime,
) -> Iterator[object]:
    """dbt's events, each published segment's output with its size and changes."""
    by_key = {node.key: node.name for node in SEGMENTS}
    for event in events:
        if isinstance(event, Output):
            segment = by_key.get(context.asset_key_for_output(event.output_name))
            metadata: dict[str, object] = {"as_of": MetadataValue.text(format_as_of(as_of))}
            if segment in sizes:
                size = sizes[segment]
                metadata.update(size=size.members, holdout=size.holdout, entered=size.entered, exited=size.exited)
            event = event.with_metadata({**event.metadata, **metadata})
        yield event


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=TRANSLATOR,
    name="segments_build",
    # The input tables are checked by pandera before the build (orchestration.checks),
    # which covers dbt's tests of the users key.
    exclude="source:*",
)
def segments_build(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse) -> Iterator[object]:
    """``dbt build`` of the selected models at the run's as_of, then the publish."""
    as_of = run_as_of(context.run.tags)
    compiled = _fresh_compile()
    context.log.info(f"building at as_of {format_as_of(as_of)}")
    # dbt's artifacts go to a directory of their own, removed after the run (dagster-dbt
    # would otherwise keep one per run under dbt_project/target).
    env = {**dbtrun.as_of_env(as_of), **warehouse.engine.dbt_env()}
    with warehouse.session() as session:
        refresh.forget(session)  # dbt rebuilds what a later `segments build` would refresh
    with tempfile.TemporaryDirectory(prefix="segments-dbt-") as target, dbtrun.environment(env):
        invocation = dbt.cli(
            ["build"],
            context=context.op_execution_context,
            raise_on_error=False,
            target_path=Path(target),
        )
        events = list(invocation.stream())
        error = None if invocation.is_successful() else invocation.get_error()
    if error is not None:
        yield from (event for event in events if isinstance(event, AssetCheckResult))
        raise Failure(description=f"dbt build failed; nothing was published.\n{error}")
    sizes: dict[str, history.BuildSize] = {}
    if MEMBERSHIP_KEY in context.selected_asset_keys:
        with warehouse.session() as session:
            wh.publish(session, compiled.project, compiled.compiled.segments, as_of)
            sizes = history.latest(session)
        context.log.info(f"published {len(compiled.compiled.segments)} segments at as_of {format_as_of(as_of)}")
    yield from _with_build_metadata(context, events, sizes, as_of)
