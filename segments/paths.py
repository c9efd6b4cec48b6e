"""Every path the project uses, in one place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS_DIR = ROOT / "segment_specs"
DBT_PROJECT_DIR = ROOT / "dbt_project"
SCHEMAS_DIR = ROOT / "schemas"  # JSON Schemas of the spec files, for editors
MODELS_DIR_NAME = "models"
DEFAULT_WAREHOUSE = ROOT / "warehouse.duckdb"
WAREHOUSE_ENV = "SEGMENTS_WAREHOUSE"
WORK_DIR_ENV = "SEGMENTS_WORK_DIR"
# Dagster's home: dagster.yaml (committed) and the instance's storage (not committed).
DAGSTER_HOME = ROOT / "dagster_home"
# What a build's dbt project needs besides the models it compiles.
DBT_STATIC_FILES = ("dbt_project.yml", "profiles.yml", "macros")


def work_dir() -> Path:
    """Scratch space for builds of other specs directories (never committed)."""
    return Path(os.environ.get(WORK_DIR_ENV) or ROOT / ".segments")


def warehouse_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--warehouse``, else ``$SEGMENTS_WAREHOUSE``, else ``warehouse.duckdb`` at the root."""
    chosen = explicit or os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE
    return Path(chosen).expanduser().resolve()


def is_repository_specs(specs_dir: Path) -> bool:
    return specs_dir.resolve() == SPECS_DIR.resolve()


def dbt_project_dir(specs_dir: Path, dialect: str = "duckdb", committed: bool = True) -> Path:
    """Where a specs directory's models are written.

    The repository's own specs compile into the committed ``dbt_project/`` (unless
    ``committed`` is false: models in a dialect the committed ones are not in); any
    other directory into a work folder of its own, one per dialect, so a build from
    ``--specs DIR`` never rewrites the committed models.
    """
    if committed and is_repository_specs(specs_dir):
        return DBT_PROJECT_DIR
    resolved = specs_dir.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    suffix = "" if dialect == "duckdb" else f"-{dialect}"
    return work_dir() / "builds" / f"{resolved.name}-{digest}{suffix}" / "dbt_project"
