"""One sync asset per (segment, destination), from the specs' ``sync:`` entries.

The sync engine plugs in here with one callable (see :data:`SyncFn`), wired in
``orchestration.definitions``::

    *sync_assets(SEGMENTS, sync=engine_sync)

Each sync asset is gated by its segment's blocking checks
(:func:`orchestration.gating.gated_asset`), runs in the concurrency pool of its
destination, so that two syncs of one destination never overlap, and reports the
engine's ``added`` / ``removed`` / ``failed`` counts as metadata. Retries are the
engine's business; an exception fails the asset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, Failure, MaterializeResult

from orchestration.gating import gated_asset
from orchestration.translator import SegmentNode
from segments import paths
from segments.errors import SegmentsError
from segments.spec.parse import load_project
from sync import engine

#: ``sync(context, segment, destination) -> {"added": n, "removed": n, "failed": n}``.
#: ``context.resources.warehouse.engine`` is the warehouse the segment was published to.
SyncFn = Callable[[AssetExecutionContext, str, str], Mapping[str, int]]
COUNTS = ("added", "removed", "failed")
SYNC_PREFIX = "sync"


def engine_sync(context: AssetExecutionContext, segment: str, destination: str) -> Mapping[str, int]:
    """The sync engine on one (segment, destination) pair of the repository's specs.

    Secrets come from the process environment, as for ``segments sync``. A blocked
    plan (the mass-removal guard), a destination that stayed unreachable, or records
    that failed fail the asset, with the engine's one-line summary as the reason.
    """
    try:
        project = load_project(paths.SPECS_DIR)
        outcomes = engine.sync(project, context.resources.warehouse.engine, destination=destination, segment=segment)
    except SegmentsError as error:
        raise Failure(description=str(error)) from None
    counts = {name: sum(getattr(o, name) for o in outcomes) for name in COUNTS}
    for outcome in outcomes:
        context.log.info(engine.summary_line(outcome))
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise Failure(description="; ".join(engine.summary_line(o) for o in bad), metadata=counts)
    return counts


def sync_asset_key(segment: str, destination: str) -> AssetKey:
    """``sync/<destination>/<segment>``.

    >>> sync_asset_key("abandoned_cart", "intercom_main").to_user_string()
    'sync/intercom_main/abandoned_cart'
    """
    return AssetKey([SYNC_PREFIX, destination, segment])


def destination_pool(destination: str) -> str:
    """The concurrency pool of a destination's syncs.

    >>> destination_pool("intercom_main")
    'segments/destination/intercom_main'
    """
    return f"segments/destination/{destination}"


def sync_assets(segments: Iterable[SegmentNode], sync: SyncFn) -> list[AssetsDefinition]:
    """One gated asset per (segment, destination) the specs ask to sync."""

    def compute_for(segment: str, destination: str) -> Callable[[AssetExecutionContext], MaterializeResult]:
        def compute(context: AssetExecutionContext) -> MaterializeResult:
            counts = sync(context, segment, destination)
            return MaterializeResult(metadata={name: int(counts.get(name, 0)) for name in COUNTS})

        return compute

    return [
        gated_asset(
            node,
            sync_asset_key(node.name, destination),
            compute_for(node.name, destination),
            description=f"Pushes the membership changes of {node.name} to {destination}.",
            pool=destination_pool(destination),
            kinds={"sync"},
            required_resource_keys={"warehouse"},
        )
        for node in segments
        for destination in node.destinations
    ]
