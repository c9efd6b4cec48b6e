"""Data checks: the input tables before a build, each segment after its publish.

Every check here is blocking. In a run, Dagster starts an asset only after the
blocking checks of the assets it reads have passed:

- ``input_schema`` on the users and events tables (pandera, from ``_catalog.yml``):
  a failure stops the build itself, so nothing is published and nothing synced;
- ``size_change`` and ``membership_schema`` on each segment, one step per segment:
  a failure stops what reads that segment (its syncs) and nothing else.

dbt's own tests are checks too (dagster-dbt); they run inside ``dbt build``, and a
failing one fails the build: nothing is published, as with ``segments build``.
"""


from collections.abc import Iterator, Sequence
from decimal import Decimal

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetChecksDefinition,
    AssetKey,
    MetadataValue,
    multi_asset_check,
)
from sqlglot import exp

from orchestration.resources import Warehouse
from orchestration.translator import SegmentNode
from segments import history, paths, schemas
from segments.engines.base import Session
from segments.compiler import models as md
from segments.spec import model as m
from segments.spec.parse import load_project
from segments.spec.timeparse import utc_now

INPUT_CHECK = "input_schema"
SIZE_CHECK = "size_change"
MEMBERSHIP_CHECK = "membership_schema"


def _result(key: AssetKey, name: str, found: list[str], passed_text: str, **metadata: object) -> AssetCheckResult:
    """A blocking check's result: its problems, if any, as the description and metadata."""
    return AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=not found,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(found) if found else passed_text,
        metadata={**metadata, "problems": MetadataValue.md("\n".join(f"- {p}" for p in found) or "none")},
    )


def _read(
    session: Session,
    relation: m.Relation,
    columns: Sequence[str],
    where: exp.Expression | None = None,
) -> pd.DataFrame | None:
    """The ``columns`` of ``relation`` that exist (a missing one is the schema's to
    report), rows filtered by ``where``; None when the table does not exist."""
    table = session.engine.table(relation.name, relation.schema)
    available = session.columns(table.db, table.name)
    if not available:
        return None
    present = [c for c in columns if c in available]
    query = exp.select(*(exp.column(c, quoted=True) for c in present)).from_(table)
    if where is not None:
        query = query.where(where)
    # decimals as floats, then a dtype per column (bool, datetime64, ...) where the
    # values allow one, as a data frame read from the engine would have them
    rows = [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in session.rows(query)]
    return pd.DataFrame.from_records(rows, columns=present).infer_objects()


def input_checks(users: AssetKey, events: AssetKey) -> AssetChecksDefinition:
    """``input_schema`` on the users and events tables, in one step before the build."""
    specs = [
        AssetCheckSpec(INPUT_CHECK, asset=key, blocking=True, description=f"The {what} table fits _catalog.yml.")
        for key, what in ((users, "users"), (events, "events"))
    ]

    @multi_asset_check(specs=specs, name="input_tables", description="pandera schemas of the input tables")
    def input_tables(context: AssetCheckExecutionContext, warehouse: Warehouse) -> Iterator[AssetCheckResult]:
        catalog = load_project(paths.SPECS_DIR).catalog
        now = utc_now()
        tables = (
            (users, catalog.users.relation, schemas.users_schema(catalog, now)),
            (events, catalog.events.relation, schemas.events_schema(catalog, now)),
        )
        with warehouse.session(read_only=True) as session:
            for key, relation, schema in tables:
                frame = _read(session, relation, list(schema.columns))
                if frame is None:
                    yield _result(key, INPUT_CHECK, [f"{relation} does not exist: load it with `segments load`"], "")
                    continue
                found = schemas.problems(schema, frame)
                yield _result(key, INPUT_CHECK, found, f"{len(frame):,} rows fit _catalog.yml", rows=len(frame))

    return input_tables


def _size_result(session: Session, node: SegmentNode) -> AssetCheckResult:
    size = history.latest(session, [node.name]).get(node.name)
    limit = node.max_size_change_pct
    if size is None:
        return _result(node.key, SIZE_CHECK, [], "no published build of this segment yet")
    metadata: dict[str, object] = {"size": size.members, "max_size_change_pct": float(limit)}
    change = size.change_pct
    if change is None:
        return _result(node.key, SIZE_CHECK, [], f"first build: {size.members:,} members", **metadata)
    metadata["previous_size"] = size.previous
    if change != float("inf"):
        metadata["size_change_pct"] = change
    if size.fails_size_check(limit):
        problem = f"size {size.move}, more than the {limit}% allowed: syncs of {node.name} wait"
        return _result(node.key, SIZE_CHECK, [problem], "", **metadata)
    text = f"{size.previous:,} -> {size.members:,} members"
    if change > limit:
        return _result(node.key, SIZE_CHECK, [], f"{text} (fewer than {history.MIN_SIZE_CHANGE} members moved)", **metadata)
    return _result(node.key, SIZE_CHECK, [], f"{text} ({change:.1f}%, at most {limit}% allowed)", **metadata)


def _membership_result(session: Session, node: SegmentNode) -> AssetCheckResult:
    published = m.Relation(md.MEMBERSHIP, session.engine.target_schema)
    schema = schemas.membership_schema(node.name, node.holdout_pct, node.arms)
    mine = exp.column("segment_name").eq(exp.Literal.string(node.name))
    frame = _read(session, published, list(schema.columns), mine)
    if frame is None:
        return _result(node.key, MEMBERSHIP_CHECK, [f"{published} does not exist: nothing was published"], "")
    found = schemas.problems(schema, frame)
    return _result(node.key, MEMBERSHIP_CHECK, found, f"{len(frame):,} published members fit the schema")


def segment_checks(node: SegmentNode) -> AssetChecksDefinition:
    """``size_change`` and ``membership_schema`` of one segment, in a step of its own,
    so that a failure holds back only what reads this segment."""
    specs = [
        AssetCheckSpec(
            SIZE_CHECK, asset=node.key, blocking=True,
            description=f"Size moves at most {node.max_size_change_pct}% from the previous build.",
        ),
        AssetCheckSpec(
            MEMBERSHIP_CHECK, asset=node.key, blocking=True,
            description="One row per member, evaluated at one instant; holdout only if the spec keeps one.",
        ),
    ]

    @multi_asset_check(specs=specs, name=f"check_{node.name}", description=f"data checks of segment {node.name}")
    def _checks(context: AssetCheckExecutionContext, warehouse: Warehouse) -> Iterator[AssetCheckResult]:
        with warehouse.session(read_only=True) as session:
            yield _size_result(session, node)
            yield _membership_result(session, node)

    return _checks
