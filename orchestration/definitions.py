"""The Dagster code location: assembles what the other modules define, nothing more.

``dagster dev`` (see the README) loads it from ``[tool.dagster]`` in pyproject.toml.
"""

from dagster import Definitions, in_process_executor

from orchestration import assets, checks, resources, schedules, sync_assets

INPUTS = assets.input_keys()

defs = Definitions(
    assets=[assets.segments_build, *sync_assets.sync_assets(assets.SEGMENTS, sync=sync_assets.engine_sync)],
    asset_checks=[checks.input_checks(*INPUTS), *(checks.segment_checks(node) for node in assets.SEGMENTS)],
    jobs=[schedules.full_refresh_job(INPUTS)],
    schedules=schedules.refresh_schedules(assets.SEGMENTS, INPUTS),
    resources=resources.resources(),
    # One DuckDB file takes one writer at a time: a run's steps go one after another.
    executor=in_process_executor,
)
