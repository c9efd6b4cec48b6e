"""Resources, configured from the environment (``EnvVar``), never from code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_dbt import DbtCliResource

from orchestration.project import dbt_project
from segments import dbtrun, paths, warehouse


class Warehouse(ConfigurableResource):
    """The DuckDB file the segments are built in and published to.

    dbt reads the same variable, ``$SEGMENTS_WAREHOUSE`` (dbt_project/profiles.yml),
    from dbt_project/ as its working directory: the path must be absolute so that
    both mean the same file.
    """

    path: str

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if not Path(self.path).expanduser().is_absolute():
            raise ValueError(f"{paths.WAREHOUSE_ENV} must be an absolute path, got {self.path!r}")

    @property
    def file(self) -> Path:
        return Path(self.path).expanduser()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.file, read_only=read_only) as con:
            yield con


def resources() -> dict[str, object]:
    """The resources every asset and check of the code location may ask for."""
    return {
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbtrun.dbt_executable()),
        "warehouse": Warehouse(path=EnvVar(paths.WAREHOUSE_ENV)),
    }
