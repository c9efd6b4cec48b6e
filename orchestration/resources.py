"""Resources, configured from the environment (``EnvVar``), never from code."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_dbt import DbtCliResource

from orchestration.project import dbt_project
from segments import dbtrun, engines, paths
from segments.engines.base import Session

#: The engine of the code location, a dbt target: duckdb, postgres or spark.
TARGET_ENV = "SEGMENTS_TARGET"


class Warehouse(ConfigurableResource):
    """The warehouse the segments are built in and published to: the engine of
    ``$SEGMENTS_TARGET`` and, for DuckDB, the file of ``$SEGMENTS_WAREHOUSE``.

    dbt reads the same variables (``--target``, dbt_project/profiles.yml), from
    dbt_project/ as its working directory: the path must be absolute so that both mean
    the same file. Other engines connect as their output of profiles.yml says.
    """

    path: str
    target: str = engines.DEFAULT_TARGET

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if self.target not in engines.TARGETS:
            raise ValueError(f"{TARGET_ENV} must be one of {', '.join(engines.TARGETS)}, got {self.target!r}")
        if self.target == "duckdb" and not Path(self.path).expanduser().is_absolute():
            raise ValueError(f"{paths.WAREHOUSE_ENV} must be an absolute path, got {self.path!r}")

    @property
    def file(self) -> Path:
        return Path(self.path).expanduser()

    @property
    def engine(self) -> engines.Engine:
        return engines.get(self.target, self.file if self.target == "duckdb" else None)

    def session(self, read_only: bool = False) -> AbstractContextManager[Session]:
        """An open session of the engine (see :mod:`segments.engines`)."""
        return self.engine.connect(read_only=read_only)


def resources() -> dict[str, object]:
    """The resources every asset and check of the code location may ask for."""
    target = EnvVar(TARGET_ENV)
    return {
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbtrun.dbt_executable(), target=target),
        "warehouse": Warehouse(path=EnvVar(paths.WAREHOUSE_ENV), target=target),
    }
