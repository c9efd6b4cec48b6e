"""Generated dbt files: what they should be, writing them, checking they are fresh.

Every file under ``models/`` that starts with the generated header is owned by the
compiler: written when it changes, deleted when its spec goes away. Hand-written
models beside them (no header) are never touched.
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

from segments import paths
from segments.compiler import render
from segments.compiler.models import CompiledProject
from segments.spec.model import Project


@dataclass(frozen=True)
class Change:
    path: Path  # relative to the dbt project directory
    kind: str  # "added" | "changed" | "removed"
    diff: str


def _origin(project: Project, *names: str) -> str:
    base = project.specs_dir.name
    return ", ".join(f"{base}/{n}" for n in names) if names else f"{base}/"


def generated_files(project: Project, compiled: CompiledProject, dialect: str = "duckdb") -> dict[Path, str]:
    """Path (relative to the dbt project) -> content, for every generated file."""
    files: dict[Path, str] = {}
    catalog_origin = _origin(project, "_catalog.yml")
    specs_origin = f"{_origin(project)} (every spec, _catalog.yml and _traits.yml)"
    for model in compiled.models:
        if model.spec_path:
            origin = model.spec_path
        elif model.folder == "staging":
            origin = catalog_origin
        elif model.name == "user_traits":
            origin = f"{_origin(project, '_traits.yml', '_catalog.yml')}"
        else:
            origin = specs_origin
        folder = Path(paths.MODELS_DIR_NAME) / model.folder
        files[folder / f"{model.name}.sql"] = render.dbt_sql(model, origin, dialect)
        files[folder / f"{model.name}.yml"] = render.dbt_yaml(model, origin, dialect)
    # A dbt project adopting the segments may declare the catalog's sources itself.
    if paths.current().generate_sources:
        files[Path(paths.MODELS_DIR_NAME) / "staging" / "_sources.yml"] = render.sources_yaml(compiled, catalog_origin)
    return files


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _is_generated(path: Path) -> bool:
    return render.GENERATED_MARK in _first_line(path)


def _existing_generated(project_dir: Path) -> set[Path]:
    models = project_dir / paths.MODELS_DIR_NAME
    if not models.is_dir():
        return set()
    return {
        p.relative_to(project_dir)
        for p in models.rglob("*")
        if p.is_file() and p.suffix in (".sql", ".yml") and _is_generated(p)
    }


def dialect_of(project_dir: Path) -> str | None:
    """The dialect the generated SQL under ``project_dir`` is in, as its headers say;
    None when there is none (or the files disagree)."""
    found = {
        render.header_dialect(_first_line(project_dir / rel))
        for rel in _existing_generated(project_dir)
        if rel.suffix == ".sql"
    }
    return found.pop() if len(found) == 1 else None


def changes(project_dir: Path, files: dict[Path, str]) -> list[Change]:
    """What writing ``files`` would change, with a unified diff per file."""
    out: list[Change] = []
    for rel in sorted(set(files) | _existing_generated(project_dir)):
        target = project_dir / rel
        old = target.read_text(encoding="utf-8") if target.exists() else None
        new = files.get(rel)
        if old == new:
            continue
        kind = "added" if old is None else "removed" if new is None else "changed"
        diff = "".join(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"a/{rel}",
                tofile=f"b/{rel}",
            )
        )
        out.append(Change(rel, kind, diff))
    return out


def write(project_dir: Path, files: dict[Path, str]) -> list[Change]:
    """Bring the generated files under ``project_dir`` to ``files``."""
    pending = changes(project_dir, files)
    for change in pending:
        target = project_dir / change.path
        if change.kind == "removed":
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(files[change.path], encoding="utf-8")
        tmp.replace(target)
    return pending


def older_than(project_dir: Path, specs_dir: Path) -> bool:
    """Whether a spec file changed after the last generated model was written (as make
    decides), or there are no models: cheaper than rendering them to compare."""
    def newest(folder: Path) -> float:
        return max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()), default=0.0)

    models = project_dir / "models"
    return not models.is_dir() or newest(specs_dir) >= newest(models)


def prepare_project_dir(project_dir: Path) -> None:
    """Give a dbt project what the generated models need besides themselves.

    A work folder gets the static parts of the project's dbt project (profiles,
    macros); any dbt project, the project's own included, gets the segments' macros it
    lacks (a team's existing dbt project adopting the segments has none of them).
    Existing files are never overwritten.
    """
    home = paths.current().dbt_project_dir
    if project_dir != home:
        project_dir.mkdir(parents=True, exist_ok=True)
        for name in paths.DBT_STATIC_FILES:
            source, target = home / name, project_dir / name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, target)
    macros = project_dir / "macros"
    for source in sorted(paths.TEMPLATE_MACROS.rglob("*.sql")):
        target = macros / source.relative_to(paths.TEMPLATE_MACROS)
        # a macro defined twice stops dbt: one of that name anywhere in macros/ will do
        if not (macros.is_dir() and any(macros.rglob(source.name))):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
