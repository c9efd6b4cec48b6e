"""Fixtures shared by the Dagster tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from segments import dbtrun, paths


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory) -> Path:
    """dbt_project/target/manifest.json, parsed from the committed models.

    The code location reads it when it is imported (dagster-dbt makes the assets from
    it), so the Dagster tests import ``orchestration`` only after this fixture ran.
    Parsing renders the profile but opens no connection: the warehouse path is a
    placeholder.
    """
    placeholder = tmp_path_factory.mktemp("parse") / "warehouse.duckdb"
    dbtrun.run_dbt(paths.DBT_PROJECT_DIR, ["parse"], placeholder)
    return paths.DBT_PROJECT_DIR / "target" / "manifest.json"
