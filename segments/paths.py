"""Every path the project uses, in one place, derived from the project's root.

The root is the folder named by ``--project-dir`` (:func:`use`), else by
``$SEGMENTS_PROJECT_DIR``, else the nearest folder from the working directory up whose
``pyproject.toml`` has a ``[tool.segments]`` table: the way dbt finds
``dbt_project.yml`` and git finds ``.git``, so an installed ``segments`` works on the
repository it is run in, never on the one it was installed from.

Every other path is relative to the root and can be set in that table::

    [tool.segments]
    specs = "segment_specs"          # the specs, _catalog.yml, _traits.yml
    dbt_project = "dbt_project"      # the dbt project (dbt_project.yml, profiles.yml)
    models = "models"                # the generated models' folder, in the dbt project
    generate_sources = true          # false: the dbt project declares the catalog's sources
    work_dir = ".segments"           # scratch space (or $SEGMENTS_WORK_DIR)
    dagster_home = "."               # the folder holding dagster.yaml
    warehouse = "warehouse.duckdb"   # default DuckDB file (or $SEGMENTS_WAREHOUSE)
    schemas = "schemas"              # JSON Schemas of the spec files, for editors

The module attributes ``ROOT``, ``SPECS_DIR``, ``DBT_PROJECT_DIR``, ``MODELS_DIR_NAME``,
``DAGSTER_HOME``, ``DEFAULT_WAREHOUSE`` and ``SCHEMAS_DIR`` read the current project's
layout each time, so they follow ``--project-dir``.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segments.errors import SegmentsError

MARKER_FILE = "pyproject.toml"
MARKER_TABLE = "segments"  # [tool.segments]
PROJECT_DIR_ENV = "SEGMENTS_PROJECT_DIR"
WAREHOUSE_ENV = "SEGMENTS_WAREHOUSE"
WORK_DIR_ENV = "SEGMENTS_WORK_DIR"
# What a build's dbt project needs besides the models it compiles.
DBT_STATIC_FILES = ("dbt_project.yml", "profiles.yml", "macros")
# The files `segments init` writes (package data: installed with the package).
TEMPLATE_DIR = Path(__file__).resolve().parent / "project_template"
# The macros every generated model relies on, copied into a dbt project lacking them.
TEMPLATE_MACROS = TEMPLATE_DIR / "dbt_project" / "macros"

# key of [tool.segments] -> default, relative to the root (models: to the dbt project)
DEFAULTS: dict[str, str | bool] = {
    "specs": "segment_specs",
    "dbt_project": "dbt_project",
    "models": "models",
    "generate_sources": True,
    "work_dir": ".segments",
    "dagster_home": ".",
    "warehouse": "warehouse.duckdb",
    "schemas": "schemas",
}


@dataclass(frozen=True)
class Layout:
    """Where everything of one project lives."""

    root: Path
    specs_dir: Path
    dbt_project_dir: Path
    models_dir_name: str  # relative to dbt_project_dir, POSIX form
    generate_sources: bool
    work_dir: Path
    dagster_home: Path
    default_warehouse: Path
    schemas_dir: Path

    @property
    def models_dir(self) -> Path:
        return self.dbt_project_dir / self.models_dir_name


def has_marker(folder: Path) -> bool:
    """Whether ``folder/pyproject.toml`` has a ``[tool.segments]`` table."""
    return _settings(folder) is not None


def _settings(folder: Path) -> dict[str, object] | None:
    marker = folder / MARKER_FILE
    if not marker.is_file():
        return None
    # every path a command derives looks for its project again (the working directory
    # may have changed): the marker is parsed again only when it changed
    key = (str(marker), _marker_stamp(folder))
    if key not in _SETTINGS:
        _SETTINGS[key] = _read_settings(marker)
    return _SETTINGS[key]


_SETTINGS: dict[tuple[str, str], dict[str, object] | None] = {}


def _read_settings(marker: Path) -> dict[str, object] | None:
    try:
        document = tomllib.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SegmentsError(f"{marker}: cannot read it: {error}") from None
    table = document.get("tool", {}).get(MARKER_TABLE)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise SegmentsError(f"{marker}: [tool.{MARKER_TABLE}] must be a table")
    return table


def find_root(start: Path) -> Path | None:
    """The nearest folder from ``start`` up holding the marker, if any."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if has_marker(folder):
            return folder
    return None


def _inside(root: Path, value: object, key: str, marker: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise SegmentsError(f"{marker}: [tool.{MARKER_TABLE}] {key} must be a non-empty path")
    return (root / Path(value).expanduser()).resolve()


def load(root: Path) -> Layout:
    """The layout of the project at ``root`` (its marker's settings over the defaults).

    Raises:
        SegmentsError: no marker at ``root``, an unknown key or a value of the wrong type.
    """
    root = root.resolve()
    settings = _settings(root)
    marker = root / MARKER_FILE
    if settings is None:
        raise SegmentsError(
            f"{root} is not a segments project: its {MARKER_FILE} has no [tool.{MARKER_TABLE}] table "
            "(`segments init` makes one)"
        )
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise SegmentsError(
            f"{marker}: unknown key(s) in [tool.{MARKER_TABLE}]: {', '.join(unknown)}; "
            f"known: {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **settings}
    if not isinstance(merged["generate_sources"], bool):
        raise SegmentsError(f"{marker}: [tool.{MARKER_TABLE}] generate_sources must be true or false")
    models = merged["models"]
    if not isinstance(models, str) or not models or Path(models).is_absolute() or ".." in PurePosixPath(models).parts:
        raise SegmentsError(f"{marker}: [tool.{MARKER_TABLE}] models must be a folder inside the dbt project")
    return Layout(
        root=root,
        specs_dir=_inside(root, merged["specs"], "specs", marker),
        dbt_project_dir=_inside(root, merged["dbt_project"], "dbt_project", marker),
        models_dir_name=PurePosixPath(models).as_posix(),
        generate_sources=bool(merged["generate_sources"]),
        work_dir=_inside(root, merged["work_dir"], "work_dir", marker),
        dagster_home=_inside(root, merged["dagster_home"], "dagster_home", marker),
        default_warehouse=_inside(root, merged["warehouse"], "warehouse", marker),
        schemas_dir=_inside(root, merged["schemas"], "schemas", marker),
    )


_chosen: Path | None = None  # --project-dir
_cache: dict[tuple[str, str], Layout] = {}


def use(project_dir: Path | None) -> None:
    """Make ``project_dir`` (``--project-dir``) the project; None: find it again."""
    global _chosen
    _chosen = None if project_dir is None else Path(project_dir).expanduser().resolve()


def root_from_environment() -> Path:
    """The root ``--project-dir``, ``$SEGMENTS_PROJECT_DIR`` or the working directory gives.

    Raises:
        SegmentsError: none of them leads to a project.
    """
    if _chosen is not None:
        return _chosen
    named = os.environ.get(PROJECT_DIR_ENV)
    if named:
        return Path(named).expanduser().resolve()
    found = find_root(Path.cwd())
    if found is None:
        raise SegmentsError(
            f"no segments project here: no {MARKER_FILE} with a [tool.{MARKER_TABLE}] table in "
            f"{Path.cwd()} or above it. Run `segments init`, or name the project with "
            f"--project-dir DIR or ${PROJECT_DIR_ENV}"
        )
    return found


def current() -> Layout:
    """The current project's layout."""
    root = root_from_environment()
    if not root.is_dir():
        raise SegmentsError(f"project directory {root} does not exist")
    key = (str(root), _marker_stamp(root))
    if key not in _cache:
        _cache[key] = load(root)
    return _cache[key]


def _marker_stamp(root: Path) -> str:
    """Changes when the marker file does, so an edited layout is read again."""
    try:
        stat = (root / MARKER_FILE).stat()
    except OSError:
        return ""
    return f"{stat.st_mtime_ns}:{stat.st_size}"


_ATTRIBUTES = {
    "ROOT": "root",
    "SPECS_DIR": "specs_dir",
    "DBT_PROJECT_DIR": "dbt_project_dir",
    "MODELS_DIR_NAME": "models_dir_name",
    "DAGSTER_HOME": "dagster_home",
    "DEFAULT_WAREHOUSE": "default_warehouse",
    "SCHEMAS_DIR": "schemas_dir",
}


def __getattr__(name: str) -> object:
    # The project is chosen at run time (--project-dir, the working directory), not
    # at import: these names read the current layout on every use.
    if name in _ATTRIBUTES:
        return getattr(current(), _ATTRIBUTES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def work_dir() -> Path:
    """Scratch space for builds of other specs directories (never committed)."""
    named = os.environ.get(WORK_DIR_ENV)
    return Path(named).expanduser().resolve() if named else current().work_dir


def warehouse_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--warehouse``, else ``$SEGMENTS_WAREHOUSE``, else the project's default."""
    chosen = explicit or os.environ.get(WAREHOUSE_ENV) or current().default_warehouse
    return Path(chosen).expanduser().resolve()


def is_repository_specs(specs_dir: Path) -> bool:
    return specs_dir.resolve() == current().specs_dir


def dbt_project_dir(specs_dir: Path, dialect: str = "duckdb", committed: bool = True) -> Path:
    """Where a specs directory's models are written.

    The project's own specs compile into its dbt project (unless ``committed`` is
    false: models in a dialect the committed ones are not in); any other directory
    into a work folder of its own, one per dialect, so a build from ``--specs DIR``
    never rewrites the committed models.
    """
    if committed and is_repository_specs(specs_dir):
        return current().dbt_project_dir
    resolved = specs_dir.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    suffix = "" if dialect == "duckdb" else f"-{dialect}"
    return work_dir() / "builds" / f"{resolved.name}-{digest}{suffix}" / "dbt_project"
