"""The packages' layers: ``segments`` is the core, ``sync`` is built on it,
``orchestration`` on both; no module imports a package above its own (issue 13).

The commands and checks ``sync`` adds reach the command line through entry points
(:mod:`segments.plugins`), which these tests check too.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

from segments import plugins

REPO = Path(__file__).resolve().parents[1]

#: the packages a package's modules must never import (directly, lazily or by name)
ABOVE = {
    "segments": ("sync", "orchestration"),
    "sync": ("orchestration",),
}


def imported(source: str) -> set[str]:
    """Every module a source imports: ``import``, ``from ... import``, and
    ``import_module("...")`` / ``__import__("...")`` with a literal name, at any depth
    (inside functions too). Relative imports stay inside their package and are skipped.

    >>> sorted(imported("import sync.engine\\ndef f():\\n    from sync import watch\\n    importlib.import_module('orchestration.x')"))
    ['orchestration.x', 'sync', 'sync.engine']
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def forbidden(package: str, source: str) -> list[str]:
    """The imports of ``source`` (a module of ``package``) from a package above it."""
    return sorted(name for name in imported(source) if name.split(".")[0] in ABOVE.get(package, ()))


@pytest.mark.parametrize(
    "package, source, expected",
    [
        ("segments", "from sync.engine import configuration_problems", ["sync.engine"]),
        ("segments", "def f():\n    import sync\n", ["sync"]),
        ("segments", "import importlib\nimportlib.import_module('sync.watch')", ["sync.watch"]),
        ("segments", "from orchestration import definitions", ["orchestration"]),
        ("segments", "from segments import engines\nfrom . import paths\nimport synchronize", []),
        ("sync", "from segments import engines\nfrom sync import engine", []),
        ("sync", "from orchestration.checks import x", ["orchestration.checks"]),
    ],
)
def test_the_scan_finds_imports_from_above(package, source, expected):
    assert forbidden(package, source) == expected


MODULES = sorted(
    (package, path.relative_to(REPO).as_posix())
    for package in ABOVE
    for path in (REPO / package).rglob("*.py")
    if "project_template" not in path.parts
)


def test_every_package_is_scanned():
    assert {package for package, _ in MODULES} == set(ABOVE) and len(MODULES) > 50


@pytest.mark.parametrize("package, module", MODULES, ids=[m for _, m in MODULES])
def test_no_module_imports_a_package_above_its_own(package, module):
    assert forbidden(package, (REPO / module).read_text(encoding="utf-8")) == []


# --- the entry points sync adds ------------------------------------------------------

def _declared() -> dict[str, dict[str, str]]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]["entry-points"]


@pytest.mark.parametrize("group", [plugins.COMMANDS, plugins.VALIDATORS])
def test_declared_entry_points_are_installed_and_load(group):
    declared = _declared()[group]
    loaded, failed = plugins.load(group)
    assert failed == []
    assert {name for name, _ in loaded} == set(declared), (
        "the installed metadata is not this pyproject.toml's: run `make setup`")
    for name, value in declared.items():
        module, attribute = value.split(":")
        assert dict(loaded)[name] is getattr(import_module(module), attribute)


def test_a_broken_plugin_is_reported_not_raised(tmp_path, monkeypatch):
    """An installed package whose command entry point cannot be imported: the failure is
    returned (the command line warns and runs the other commands), never a traceback."""
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{plugins.COMMANDS}]\nbroken = no_such_module_here:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded, failed = plugins.load(plugins.COMMANDS)
    assert [f.entry_point for f in failed] == [f"{plugins.COMMANDS}: broken = no_such_module_here:register"]
    assert "ModuleNotFoundError" in failed[0].message()
    assert "sync" in dict(loaded)


def test_python_m_segments_cli_has_the_plugin_commands():
    """``python -m segments.cli`` runs the module as ``__main__``: the plugin's commands
    must land on that module's app (sync.commands imports segments.commandline, not
    segments.cli, which would be a second copy with a second app)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "segments.cli", "sync", "--bogus"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "Usage: segments sync" in done.stderr and "--dry-run" in done.stderr
    assert "warning" not in done.stderr and "Traceback" not in done.stderr
