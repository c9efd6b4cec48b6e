"""Assets downstream of one segment, gated by that segment's blocking checks.

An asset made here reads one segment (``seg_<name>``) and the published membership.
Dagster starts it, in a run, only once the blocking checks of both have passed: the
segment's ``size_change`` and ``membership_schema`` (:mod:`orchestration.checks`),
which run in a step of their own per segment, and dbt's tests, which run in the
build. A failing check of segment X therefore skips X's downstream assets, and only
those; the run's page says which check failed and why.

It carries the ``segments/segment`` tag, so a refresh schedule picks it up with its
segment (:mod:`orchestration.schedules`).
"""


from collections.abc import Callable, Set

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from orchestration.assets import MEMBERSHIP_KEY
from orchestration.translator import SEGMENT_TAG, SegmentNode


def gated_asset(
    segment: SegmentNode,
    key: AssetKey,
    compute: Callable[[AssetExecutionContext], MaterializeResult],
    *,
    description: str,
    pool: str | None = None,
    kinds: Set[str] | None = None,
    required_resource_keys: Set[str] = frozenset(),
) -> AssetsDefinition:
    """An asset that runs ``compute`` after ``segment`` passed its checks.

    Args:
        segment: the segment it reads.
        key: its asset key.
        compute: what it does; its result's metadata is the materialization's.
        description: shown in the UI.
        pool: a concurrency pool: ops of one pool never run at the same time
            (dagster.yaml limits every pool to one).
        kinds: shown as the asset's kinds in the UI.
        required_resource_keys: the resources ``compute`` reads from the context.
    """

    @asset(
        key=key,
        deps=[segment.key, MEMBERSHIP_KEY],
        group_name=segment.group,
        tags={SEGMENT_TAG: segment.name},
        description=description,
        pool=pool,
        kinds=set(kinds) if kinds else None,
        required_resource_keys=set(required_resource_keys),
    )
    def _gated(context: AssetExecutionContext) -> MaterializeResult:
        return compute(context)

    return _gated
