"""The code location's full refresh, in process, for a test that needs a project of its
own (its models in another dialect): run as ``python dagster_refresh.py AS_OF OUT``
with ``SEGMENTS_PROJECT_DIR`` naming the project, after ``segments compile`` and
``dbt parse`` there. Writes what happened to OUT as JSON."""

from __future__ import annotations

import json
import sys


def main(as_of: str, out: str) -> None:
    # imported here, not when pytest collects this file: the code location reads the
    # project's manifest when it is imported
    from dagster import DagsterInstance

    from orchestration import definitions, schedules
    from orchestration.assets import AS_OF_TAG

    with DagsterInstance.ephemeral() as instance:
        result = definitions.defs.resolve_job_def(schedules.FULL_REFRESH_JOB).execute_in_process(
            instance=instance, tags={AS_OF_TAG: as_of}, raise_on_error=False,
        )
    report = {
        "materialized": sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events()),
        "metadata": {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()
                                                     if isinstance(v.value, (int, float, str))}
                     for e in result.get_asset_materialization_events()},
        "checks": {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()},
        "failed": {e.step_key: e.event_specific_data.error.message for e in result.get_step_failure_events()},
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
