"""The real-time sensor of the code location (:mod:`orchestration.realtime`), in process
on DuckDB: round after round the sensor is evaluated (``build_sensor_context``), the run
it requests is executed in process, and a loopback webhook receiver then holds exactly
what a full build at the run's as_of makes of the real-time segments. With nothing new
the sensor skips, until the mark is old enough for windows to slide; while a run is in
flight it skips too.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    SensorResult,
    build_sensor_context,
    in_process_executor,
)

from segments import paths
from sync.receiver import AudienceReceiver
from watch_fixtures import SECRET, T0, arrive, audiences, demo_warehouse, full_build_members, realtime_specs


@pytest.fixture(scope="module")
def realtime(dbt_manifest):
    """The module, imported once the manifest exists (the code location reads it)."""
    from orchestration import realtime

    return realtime


@pytest.fixture(scope="module")
def receiver():
    with AudienceReceiver(SECRET, keep_deliveries=False) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def environment(tmp_path_factory, receiver):
    """The destinations' settings come from the process environment, as in `dagster dev`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
        mp.setenv("CRM_HOOK_URL", receiver.url)
        mp.setenv("CRM_HOOK_SECRET", SECRET)
        yield


class Clock:
    """The sensor's clock, moved by hand."""

    def __init__(self, at: dt.datetime):
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def definitions(realtime, specs: Path, warehouse: Path, clock: Clock) -> Definitions:
    from orchestration.resources import Warehouse

    job = realtime.realtime_job()
    return Definitions(
        assets=[realtime.realtime_asset(specs_dir=lambda: specs)],
        jobs=[job],
        sensors=[realtime.realtime_sensor(job, clock=clock)],
        resources={"warehouse": Warehouse(path=str(warehouse))},
        executor=in_process_executor,
    )


def tick(defs: Definitions, instance: DagsterInstance, cursor: str | None) -> SensorResult:
    sensor = defs.resolve_sensor_def("realtime_sensor")
    context = build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    result = sensor(context)
    assert isinstance(result, SensorResult)
    return result


def run_requested(defs: Definitions, instance: DagsterInstance, result: SensorResult) -> dict[str, object]:
    """Runs the one requested run in process; its materialization's metadata."""
    [request] = result.run_requests
    outcome = defs.resolve_job_def("realtime_refresh").execute_in_process(instance=instance, tags=request.tags)
    assert outcome.success
    [materialization] = outcome.asset_materializations_for_node("segments_realtime")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_sensor_rounds_match_a_full_build(realtime, receiver, tmp_path_factory, tmp_path):
    specs = realtime_specs(tmp_path_factory.mktemp("specs") / "segment_specs")
    warehouse = demo_warehouse(tmp_path_factory.mktemp("sensor") / "warehouse.duckdb")
    clock = Clock(T0)
    defs = definitions(realtime, specs, warehouse, clock)
    with DagsterInstance.ephemeral() as instance:
        # the first tick: no mark yet, a run (a full build) sends every member
        first = tick(defs, instance, None)
        assert json.loads(first.cursor) == {"as_of": None, "events_seen": 0}
        metadata = run_requested(defs, instance, first)
        assert metadata["full_build"] and metadata["sent"] > 0
        assert audiences(receiver) == full_build_members(specs, warehouse, T0, tmp_path)

        # nothing new a few seconds later: a skip, the cursor showing the mark
        clock.at = T0 + dt.timedelta(seconds=5)
        quiet = tick(defs, instance, first.cursor)
        assert not quiet.run_requests and "nothing new" in quiet.skip_reason.skip_message
        assert json.loads(quiet.cursor)["as_of"] == "2026-02-26 00:00:00"

        # half a day of events: a run that refreshes (no dbt) and sends the changes
        clock.at = T0 + dt.timedelta(hours=12)
        arrived = arrive(warehouse, clock.at)
        assert arrived > 0
        busy = tick(defs, instance, quiet.cursor)
        [request] = busy.run_requests
        assert request.tags["segments/new_events"] == str(arrived)
        assert request.tags["segments/as_of"] == "2026-02-26 12:00:00"
        metadata = run_requested(defs, instance, busy)
        assert metadata["events_seen"] == arrived and 0 < metadata["users_reevaluated"] < 500
        assert metadata["sent"] > 0 and metadata["entered"] + metadata["exited"] > 0
        assert audiences(receiver) == full_build_members(specs, warehouse, clock.at, tmp_path)
        assert not any("@" in str(value) for value in metadata.values())  # counts, never members

        # a quiet period: no event, the mark grows old, a run slides the windows
        clock.at = T0 + dt.timedelta(hours=60)
        slide = tick(defs, instance, busy.cursor)
        [request] = slide.run_requests
        assert request.tags["segments/new_events"] == "0"
        metadata = run_requested(defs, instance, slide)
        assert metadata["events_seen"] == 0 and metadata["exited"] > 0
        expected = full_build_members(specs, warehouse, clock.at, tmp_path)
        assert audiences(receiver) == expected and any(expected.values())

        # a run in flight holds the next one back, however much arrived
        clock.at = T0 + dt.timedelta(hours=72)
        assert arrive(warehouse, clock.at) > 0
        job = defs.resolve_job_def("realtime_refresh")
        in_flight = instance.create_run_for_job(job, status=DagsterRunStatus.STARTED)
        held = tick(defs, instance, slide.cursor)
        assert not held.run_requests and in_flight.run_id in held.skip_reason.skip_message
        instance.report_run_canceled(in_flight)
        resumed = tick(defs, instance, held.cursor)
        run_requested(defs, instance, resumed)
        assert audiences(receiver) == full_build_members(specs, warehouse, clock.at, tmp_path)
        assert receiver.repeats == 0


def test_code_location_has_the_sensor_only_with_a_realtime_spec(realtime):
    """The repository's example specs have no `refresh: realtime` spec: no sensor, no job,
    and the full refresh job never selects the real-time asset."""
    from orchestration import definitions

    assert not definitions.REALTIME_JOBS
    assert not list(definitions.defs.sensors or [])


def test_full_refresh_job_leaves_the_realtime_cycle_to_the_sensor(realtime):
    from dagster import asset

    from orchestration import schedules
    from orchestration.resources import Warehouse

    @asset
    def other() -> None: ...

    job = realtime.realtime_job()
    defs = Definitions(
        assets=[other, realtime.realtime_asset()], jobs=[schedules.full_refresh_job([]), job],
        sensors=[realtime.realtime_sensor(job)],
        resources={"warehouse": Warehouse(path="/nowhere/warehouse.duckdb")},
    )
    Definitions.validate_loadable(defs)
    selected = lambda job: {key.to_user_string() for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys}  # noqa: E731
    assert selected(schedules.FULL_REFRESH_JOB) == {"other"}
    assert selected(realtime.REALTIME_JOB) == {"segments_realtime"}
