"""``segments watch`` inside the code location: a sensor and the job it starts.

The sensor's cursor is the high-water mark ``segments watch`` keeps in the warehouse
(``segments_watch_state``: the last cycle's ``as_of`` and the events counted up to
it; :mod:`sync.watch`). The warehouse's mark, not the cursor, decides: the cursor
shows it in the UI, and a watch process or an earlier run that moved the mark is
taken into account. At each tick the sensor

- skips while a run of the real-time job is queued or in flight (one at a time);
- requests a run when events arrived since the mark (or before the first cycle);
- with nothing new, requests a run only once the mark is ``slide`` seconds old, so
  windows still slide with the clock (a cart_add leaving its 48-hour window takes its
  user out within ``slide`` seconds), and skips otherwise.

A run evaluates at the instant in its ``segments/as_of`` tag and runs one watch cycle
(:meth:`sync.watch.Watcher.cycle`: the incremental refresh after the first build,
publish, the sync of the real-time segments' changes to their destinations, the mark).
It materializes the asset ``segments_realtime`` with the cycle's counts as metadata
(events seen, users re-evaluated, entered, exited, sent, latency): counts, never
members. A failed or blocked sync fails the run with the engine's reason; a segment
held back by its size check is a warning in the run's log and metadata, as in
``segments watch``, and is synced at a later cycle.
"""

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetsDefinition,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    asset,
    define_asset_job,
    sensor,
)

from orchestration.assets import AS_OF_TAG, format_as_of, run_as_of
from orchestration.resources import Warehouse
from segments import paths
from segments.errors import SegmentsError
from segments.spec.timeparse import utc_now
from sync import watch

REALTIME_KEY = AssetKey("segments_realtime")
#: The asset group of the real-time asset (the full refresh job leaves it out).
REALTIME_GROUP = "realtime"
REALTIME_JOB = "realtime_refresh"
SENSOR_NAME = "realtime_sensor"
#: Run tag: events that had arrived since the mark when the sensor requested the run.
NEW_EVENTS_TAG = "segments/new_events"
#: Seconds between two evaluations of the sensor.
INTERVAL = 5
#: With no new event, a run slides the windows once the mark is this many seconds old.
SLIDE = 60
#: A run of the job in one of these states holds the next one back.
IN_FLIGHT = [
    DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
]


def cycle_metadata(cycle: watch.Cycle) -> dict[str, object]:
    """A cycle's counts as materialization metadata (never a member).

    >>> sorted(cycle_metadata(watch.Cycle(dt.datetime(2026, 3, 1), 3, 40, None, 2, 1, 3, 1.5)))
    ['as_of', 'entered', 'events_seen', 'exited', 'latency_s', 'sent', 'users_reevaluated']
    """
    metadata: dict[str, object] = {
        "as_of": MetadataValue.text(format_as_of(cycle.as_of)),
        "events_seen": cycle.events_seen,
        "entered": cycle.entered,
        "exited": cycle.exited,
        "sent": cycle.sent,
    }
    if cycle.reevaluated is not None:
        metadata["users_reevaluated"] = cycle.reevaluated
    else:
        metadata["full_build"] = MetadataValue.text(cycle.full_because or "first cycle")
    if cycle.latency is not None:
        metadata["latency_s"] = round(cycle.latency, 3)
    metadata.update({f"{part}_s": round(seconds, 3) for part, seconds in cycle.timings.items()})
    if cycle.waiting:
        metadata["waiting"] = MetadataValue.md("\n".join(f"- {line}" for line in cycle.waiting))
    return metadata


def cursor_of(mark: watch.Mark) -> str:
    """The sensor's cursor: the warehouse's high-water mark, as JSON.

    >>> cursor_of(watch.Mark(dt.datetime(2026, 3, 1, 12), 1200, dt.datetime(2026, 3, 1, 11, 59)))
    '{"as_of": "2026-03-01 12:00:00", "events_seen": 1200}'
    """
    as_of = None if mark.as_of is None else format_as_of(mark.as_of)
    return json.dumps({"as_of": as_of, "events_seen": mark.events_seen})


def why_run(mark: watch.Mark, new_events: int, now: dt.datetime, slide: float) -> str | None:
    """Why the sensor requests a run now, or None (it skips).

    >>> at = dt.datetime(2026, 3, 1, 12)
    >>> why_run(watch.Mark(None, 0, None), 0, at, 60)
    'first cycle'
    >>> why_run(watch.Mark(at, 10, at), 3, at + dt.timedelta(seconds=5), 60)
    '3 new events'
    >>> why_run(watch.Mark(at, 10, at), 0, at + dt.timedelta(seconds=5), 60) is None
    True
    >>> why_run(watch.Mark(at, 10, at), 0, at + dt.timedelta(seconds=60), 60)
    'windows slide: last cycle 60s ago'
    """
    if mark.as_of is None:
        return "first cycle"
    if new_events > 0:
        return f"{new_events} new events"
    age = (now - mark.as_of).total_seconds()
    if age >= slide:
        return f"windows slide: last cycle {age:.0f}s ago"
    return None


def realtime_asset(deps: Sequence[AssetKey] = (), specs_dir: Callable[[], Path] = lambda: paths.SPECS_DIR) -> AssetsDefinition:
    """One watch cycle at the run's ``segments/as_of``, its counts as metadata."""

    @asset(
        key=REALTIME_KEY,
        deps=list(deps),
        group_name=REALTIME_GROUP,
        kinds={"sync"},
        pool="segments/realtime",
        description="One `segments watch` cycle: refresh, publish, sync the real-time segments' changes.",
    )
    def segments_realtime(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        as_of = run_as_of(context.run.tags)
        file = warehouse.file if warehouse.target == "duckdb" else None
        watcher = watch.Watcher(specs_dir(), file, warehouse.target, clock=lambda: as_of)
        try:
            cycle = watcher.cycle()
        except SegmentsError as error:
            raise Failure(description=str(error)) from None
        context.log.info(cycle.line())
        for line in cycle.waiting:
            context.log.warning(line)
        metadata = cycle_metadata(cycle)
        if cycle.problems:
            raise Failure(description="; ".join(cycle.problems), metadata=metadata)
        return MaterializeResult(metadata=metadata)

    return segments_realtime


def realtime_job():
    """The job the sensor starts: the real-time asset alone."""
    return define_asset_job(
        REALTIME_JOB,
        selection=AssetSelection.assets(REALTIME_KEY),
        description="One watch cycle: the real-time segments refreshed, published and synced.",
    )


def realtime_sensor(
    job, interval: int = INTERVAL, slide: float = SLIDE, clock: Callable[[], dt.datetime] = utc_now,
) -> SensorDefinition:
    """The sensor starting ``job`` (see the module's docstring); ``clock``: naive UTC."""

    @sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.STOPPED,
        description=f"Runs a watch cycle when events arrived since the high-water mark, or every {slide:g}s to slide windows.",
    )
    def _sensor(context: SensorEvaluationContext, warehouse: Warehouse) -> SensorResult:
        busy = context.instance.get_run_records(RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1)
        if busy:
            return SensorResult(skip_reason=f"run {busy[0].dagster_run.run_id} is in flight", cursor=context.cursor)
        now = clock().replace(microsecond=0)
        with warehouse.session(read_only=True) as session:
            mark = watch.read_mark(session)
            new_events = watch.new_events(session, mark, now)
        cursor = cursor_of(mark)
        reason = why_run(mark, new_events, now, slide)
        if reason is None:
            return SensorResult(skip_reason=f"nothing new since as_of {format_as_of(mark.as_of)}", cursor=cursor)  # type: ignore[arg-type]
        as_of = format_as_of(max(now, mark.as_of or now))
        context.log.info(f"requesting a cycle at {as_of}: {reason}")
        request = RunRequest(run_key=as_of, tags={AS_OF_TAG: as_of, NEW_EVENTS_TAG: str(new_events)})
        return SensorResult(run_requests=[request], cursor=cursor)

    return _sensor
