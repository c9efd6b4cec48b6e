"""The Dagster code location: assembles what the other modules define, nothing more.

``dagster dev`` (see the README) loads it from ``[tool.dagster]`` in pyproject.toml.
"""

from dagster import Definitions, in_process_executor

from orchestration import assets, checks, realtime, resources, schedules, sync_assets
from segments.spec.model import REALTIME

INPUTS = assets.input_keys()
# `refresh: realtime` specs: a sensor runs watch cycles (none without such a spec)
REALTIME_JOBS = [realtime.realtime_job()] if any(node.refresh == REALTIME for node in assets.SEGMENTS) else []

defs = Definitions(
    assets=[
        assets.segments_build,
        *sync_assets.sync_assets(assets.SEGMENTS, sync=sync_assets.engine_sync),
        *(realtime.realtime_asset(INPUTS) for _ in REALTIME_JOBS),
    ],
    asset_checks=[checks.input_checks(*INPUTS), *(checks.segment_checks(node) for node in assets.SEGMENTS)],
    jobs=[schedules.full_refresh_job(INPUTS), *REALTIME_JOBS],
    schedules=schedules.refresh_schedules(assets.SEGMENTS, INPUTS),
    sensors=[realtime.realtime_sensor(job) for job in REALTIME_JOBS],
    resources=resources.resources(),
    # One DuckDB file takes one writer at a time: a run's steps go one after another.
    executor=in_process_executor,
)
