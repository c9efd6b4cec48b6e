"""``segments init [DIR]``: a new project from the files in ``project_template/``.

The template is package data, so an installed ``segments`` scaffolds the same project
as a checkout. Nothing that exists is overwritten: a ``pyproject.toml`` without
``[tool.segments]`` gets the table appended (a Python repository adopting segments),
any other file already there stops the command before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from segments import paths
from segments.errors import SegmentsError

# template file -> where it goes (files stored without their leading dot)
_RENAMED = {"gitignore.txt": ".gitignore"}
_NAMED = {"pyproject.toml", "README.md"}  # "{name}" in them becomes the project's name


def _project_name(directory: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", directory.name).strip("-._")
    return name or "segments-project"


def planned(directory: Path) -> dict[Path, str]:
    """Path relative to ``directory`` -> content, for every file ``init`` writes."""
    name = _project_name(directory)
    files: dict[Path, str] = {}
    for source in sorted(paths.TEMPLATE_DIR.rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts:
            continue
        relative = source.relative_to(paths.TEMPLATE_DIR)
        relative = relative.with_name(_RENAMED.get(relative.name, relative.name))
        text = source.read_text(encoding="utf-8")
        if relative.name in _NAMED and relative.parent == Path("."):
            text = text.replace("{name}", name)
        files[relative] = text
    return files


def _tool_tables(pyproject_text: str) -> str:
    """The template's [tool.*] tables, to append to an existing pyproject.toml."""
    return pyproject_text[pyproject_text.index("[tool.segments]"):]


def init(directory: Path) -> list[Path]:
    """Scaffold a project in ``directory`` (created if missing); the files written.

    Raises:
        SegmentsError: it is a project already, or a file the template has exists.
    """
    directory = directory.expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise SegmentsError(f"{directory} is not a directory")
    if paths.has_marker(directory):
        raise SegmentsError(f"{directory} is a segments project already ([tool.segments] in its pyproject.toml)")
    files = planned(directory)
    pyproject = Path("pyproject.toml")
    append_to_pyproject = (directory / pyproject).is_file()
    clashes = [rel for rel in files if rel != pyproject and (directory / rel).exists()]
    if clashes:
        listed = "".join(f"\n  {rel}" for rel in clashes)
        raise SegmentsError(f"{directory} has files segments init would write; nothing was written:{listed}")
    written: list[Path] = []
    try:
        for rel, text in files.items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel == pyproject and append_to_pyproject:
                existing = target.read_text(encoding="utf-8")
                tables = _tool_tables(text)
                if "[tool.dagster]" in existing:  # keep the repository's own code location
                    tables = tables[: tables.index("# `dagster dev`")].rstrip() + "\n"
                target.write_text(existing.rstrip("\n") + "\n\n" + tables, encoding="utf-8")
            else:
                target.write_text(text, encoding="utf-8")
            written.append(rel)
    except OSError as error:
        raise SegmentsError(f"cannot write the project into {directory}: {error.strerror or error}") from None
    return written
