"""The dbt project Dagster loads, in a module of its own as dagster-dbt asks.

Under ``dagster dev`` the manifest is refreshed (``dbt parse``) each time the code
location loads; anywhere else it must exist already (``dbt parse`` in dbt_project/,
or ``dagster-dbt project prepare-and-package --file orchestration/project.py``).
The models themselves are generated and committed: ``segments compile`` after a spec
changes.
"""

from __future__ import annotations

from dagster_dbt import DbtProject

from segments import paths

dbt_project = DbtProject(project_dir=paths.DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
