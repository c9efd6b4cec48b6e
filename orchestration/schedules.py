"""Refresh jobs and schedules: one schedule per distinct ``refresh`` cron of the specs.

A refresh job builds and publishes ``segment_membership``, which evaluates every
segment's rule in one pass over the events (one segment costs what all of them cost),
so every segment is published at the tick; it then checks the segments whose spec has
that cron and runs what is downstream of them (their syncs). Other segments' syncs run
at their own crons.

Each run evaluates the segments at the schedule's tick, passed as the run's
``segments/as_of`` tag: a run that starts late, or is launched again for a past tick,
gives the membership the tick would have given.
"""


from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from dagster import (
    AssetKey,
    AssetSelection,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from orchestration.assets import AS_OF_TAG, MEMBERSHIP_KEY, format_as_of
from orchestration.realtime import REALTIME_GROUP
from orchestration.translator import SEGMENT_TAG, SegmentNode
from segments.spec.model import REALTIME

if TYPE_CHECKING:  # what define_asset_job returns; dagster does not export its name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

FULL_REFRESH_JOB = "refresh_all"


def cron_slug(cron: str) -> str:
    """A name part for a cron expression: its fields that are not ``*``.

    >>> cron_slug("0 * * * *")
    'minute_0'
    >>> cron_slug("0 6,18 * * *")
    'minute_0_hour_6and18'
    >>> cron_slug("30 */4 * * mon-fri")
    'minute_30_hour_every4_weekday_mon_to_fri'
    >>> cron_slug("* * * * *")
    'every_minute'
    """
    labels = ("minute", "hour", "day", "month", "weekday")
    replacements = (("*/", "every"), ("/", "every"), (",", "and"), ("-", "_to_"))
    parts = []
    for label, field in zip(labels, cron.split(), strict=True):
        if field == "*":
            continue
        for old, new in replacements:
            field = field.replace(old, new)
        parts.append(f"{label}_{field}")
    return "_".join(parts) or "every_minute"


def _with_input_checks(selection: AssetSelection, inputs: Sequence[AssetKey]) -> AssetSelection:
    # The input tables are not built here, so their checks are selected on their own.
    return selection | AssetSelection.checks_for_assets(*inputs)


def full_refresh_job(inputs: Sequence[AssetKey]) -> "UnresolvedAssetJobDefinition":
    """Everything: every segment built, checked, published and synced (not the
    real-time cycle: the sensor runs it, at its own as_of)."""
    return define_asset_job(
        FULL_REFRESH_JOB,
        selection=_with_input_checks(AssetSelection.all() - AssetSelection.groups(REALTIME_GROUP), inputs),
        description="Builds, checks and publishes every segment, then runs what is downstream of them.",
    )


def refresh_job(cron: str, segments: Sequence[SegmentNode], inputs: Sequence[AssetKey]) -> "UnresolvedAssetJobDefinition":
    """The job refreshing ``segments`` (those whose spec has ``cron``)."""
    due = AssetSelection.assets(*(node.key for node in segments))
    downstream = [AssetSelection.tag(SEGMENT_TAG, node.name) for node in segments]
    selection = due.upstream().materializable() | AssetSelection.assets(MEMBERSHIP_KEY)
    for consumers in downstream:
        selection = selection | consumers
    names = ", ".join(node.name for node in segments)
    return define_asset_job(
        f"refresh_{cron_slug(cron)}",
        selection=_with_input_checks(selection, inputs),
        description=f"Refreshes the segments with refresh '{cron}' (UTC): {names}.",
    )


def refresh_schedules(segments: Iterable[SegmentNode], inputs: Sequence[AssetKey]) -> list[ScheduleDefinition]:
    """One schedule per distinct cron, each running the refresh job of its segments.
    ``refresh: realtime`` segments have none: the realtime sensor keeps them current."""
    by_cron: dict[str, list[SegmentNode]] = {}
    for node in segments:
        if node.refresh == REALTIME:
            continue
        by_cron.setdefault(node.refresh, []).append(node)
    return [_schedule(cron, refresh_job(cron, nodes, inputs)) for cron, nodes in sorted(by_cron.items())]


def _schedule(cron: str, job: "UnresolvedAssetJobDefinition") -> ScheduleDefinition:
    @schedule(
        name=f"{job.name}_schedule",
        cron_schedule=cron,
        job=job,
        execution_timezone="UTC",
        description=job.description,
    )
    def _tick(context: ScheduleEvaluationContext) -> RunRequest:
        if context.scheduled_execution_time is None:  # evaluated outside a tick
            return RunRequest()
        as_of = format_as_of(context.scheduled_execution_time)
        return RunRequest(run_key=as_of, tags={AS_OF_TAG: as_of})

    return _tick
