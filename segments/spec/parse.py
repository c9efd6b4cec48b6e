"""Parse and validate a specs directory into :class:`~segments.spec.model.Project`.

The YAML is composed, not loaded, so that every node keeps its line and column and
every error can say ``file:line:col``. The parser never stops at the first problem:
each file collects its errors, files are checked one after another, then the
cross-file rules (segment references, duplicates, cycles) run, and every error of
every file is raised together as one :class:`~segments.errors.SpecErrors`.

Conventions used throughout:
  * a parsing function returns the model it built, or ``None`` when the input was
    absent or wrong (the wrong case has already been reported);
  * a builder takes ``mark = ctx.mark()`` first and returns ``None`` if
    ``ctx.failed_since(mark)``, so that no half-validated model is ever built.

The parser's modules, by what they read: :mod:`~segments.spec.nodes` (YAML nodes, the
error collection, scalars), :mod:`~segments.spec.conditions` (tests, conditions,
events), :mod:`~segments.spec.config_files` (``_catalog.yml``, ``_traits.yml``,
``_destinations.yml``), :mod:`~segments.spec.segment_files` (one spec file), and this
one: the cross-file rules and loading a project.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

from yaml.nodes import Node

from segments.errors import SpecError, SpecErrors
from segments.spec import model as m
from segments.spec.conditions import _Env
from segments.spec.config_files import _CatalogResult, _catalog, _destinations, _traits
from segments.spec.nodes import (
    CATALOG_FILE, CONFIG_FILES, DESTINATIONS_FILE, TESTS_SUFFIX, TRAITS_FILE, YAML_SUFFIXES, _Ctx, _compose,
    _cycles, _unknown,
)
from segments.spec.segment_files import _SpecInfo, _segment


# ---- cross-file rules -------------------------------------------------------------------------


def _check_segments(infos: list[_SpecInfo]) -> None:
    """Duplicate names, unknown segment references and cycles, across all specs."""
    defined: dict[str, tuple[_SpecInfo, Node | None]] = {}
    for info in infos:
        for name, node in info.defines:
            if name in defined:
                other, other_node = defined[name]
                info.ctx.error(
                    node,
                    f"duplicate segment name '{name}' "
                    f"(also defined at {other.ctx.loc(other_node)})",
                )
            else:
                defined[name] = (info, node)
    tiered = {info.name: [n for n, _ in info.defines] for info in infos if info.tiered}
    graph: dict[str, list[tuple[str, Node]]] = {}
    owner: dict[int, _Ctx] = {}
    for info in infos:
        for segment, refs in info.deps.items():
            graph.setdefault(segment, [])
            for ref, node in refs:
                owner[id(node)] = info.ctx
                if ref in defined:
                    graph[segment].append((ref, node))
        for ref, node in info.refs:
            if ref in defined:
                continue
            if ref in tiered:
                info.ctx.error(
                    node,
                    f"'{ref}' has tiers and is not a segment itself; refer to "
                    f"one of: {', '.join(tiered[ref])}",
                )
            else:
                _unknown(info.ctx, node, "segment", ref, list(defined))
    for cycle, node in _cycles(graph):
        owner[id(node)].error(node, f"segment cycle: {' -> '.join(cycle)}")


# ---- entry point -----------------------------------------------------------------------------


def _spec_files(specs_dir: Path) -> list[Path]:
    """Every YAML file of the specs folder and its subfolders (teams group specs by
    owner), in a stable order; names starting with ``.`` are hidden, and folders whose
    names start with ``_`` or ``.`` are skipped (``_drafts/``, ``.git/``).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("_catalog.yml", "a.yml", "a.tests.yml", "growth/b.yaml", "growth/notes.txt",
    ...              "_drafts/c.yml", ".hidden/d.yml", ".e.yml", "uploads/vip.csv"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (root / name).write_text("")
    >>> [p.relative_to(root).as_posix() for p in _spec_files(root)]
    ['_catalog.yml', 'a.yml', 'growth/b.yaml']
    """
    found: list[Path] = []
    for folder, dirs, names in os.walk(specs_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        found.extend(
            Path(folder) / name
            for name in names
            if Path(name).suffix in YAML_SUFFIXES
            and not name.startswith(".")
            and Path(Path(name).stem).suffix != TESTS_SUFFIX  # <spec>.tests.yml: segments test reads it
            and (Path(folder) / name).is_file()
        )
    return sorted(found, key=lambda p: (p.parent != specs_dir, p.relative_to(specs_dir).as_posix()))


def load_project(specs_dir: Path) -> m.Project:
    """Parse and validate every file of a specs directory.

    Args:
        specs_dir: The directory holding ``_catalog.yml``, optional ``_traits.yml``
            and ``_destinations.yml``, and one ``<name>.yml`` per segment, there or
            in any subfolder (names stay unique across folders).

    Returns:
        The validated project; segments sorted by name.

    Raises:
        SpecErrors: Every error of every file, each as ``file:line:col: message``.
    """
    specs_dir = Path(specs_dir)
    if not specs_dir.is_dir():
        where = m.Location(str(specs_dir), 1, 1)
        raise SpecErrors([SpecError(where, "specs directory not found")])
    files = _spec_files(specs_dir)
    contexts: list[_Ctx] = []
    zone: dt.tzinfo | None = None  # the catalog's, once read

    def open_file(path: Path) -> tuple[_Ctx, Node | None]:
        ctx = _Ctx(str(path), zone=zone)
        contexts.append(ctx)
        return ctx, _compose(ctx, path)

    config: dict[str, list[Path]] = {}
    for path in files:
        if not path.name.startswith("_"):
            continue
        if path.parent != specs_dir:
            ctx = _Ctx(str(path))
            contexts.append(ctx)
            ctx.error(
                None,
                f"configuration files (names starting with '_') belong at the top of "
                f"{specs_dir}, not in a subfolder: move it there or rename it",
            )
            continue
        config.setdefault(path.stem, []).append(path)
    for stem, paths in config.items():
        for path in paths[1:]:
            ctx = _Ctx(str(path))
            contexts.append(ctx)
            ctx.error(None, f"{paths[0].name} and {path.name} are the same file: keep one")
        if stem not in CONFIG_FILES:
            ctx = _Ctx(str(paths[0]))
            contexts.append(ctx)
            _unknown(
                ctx,
                None,
                "configuration file",
                paths[0].name,
                [f"{name}{paths[0].suffix}" for name in CONFIG_FILES],
            )

    def config_root(stem: str) -> tuple[_Ctx, Node | None] | None:
        return open_file(config[stem][0]) if stem in config else None

    catalog_file = config_root(CATALOG_FILE)
    if catalog_file is None:
        ctx = _Ctx(str(specs_dir / f"{CATALOG_FILE}.yml"))
        contexts.append(ctx)
        ctx.error(None, "missing _catalog.yml (required: it says where users and events live)")
        catalog = _CatalogResult(None, None, None)
    else:
        catalog = _catalog(*catalog_file)
    if catalog.catalog is not None and catalog.catalog.timezone is not None:
        zone = ZoneInfo(catalog.catalog.timezone)
    env = _Env(catalog.attributes, catalog.properties, traits={})
    traits: dict[str, m.Trait] = {}
    traits_file = config_root(TRAITS_FILE)
    if traits_file is not None:
        traits, env.traits = _traits(*traits_file, env)
    destinations: dict[str, m.Destination] | None = {}
    destinations_file = config_root(DESTINATIONS_FILE)
    if destinations_file is not None:
        destinations = _destinations(*destinations_file, env)

    specs: list[m.SegmentSpec] = []
    infos: list[_SpecInfo] = []
    for path in files:
        if path.name.startswith("_"):
            continue
        ctx, root = open_file(path)
        spec, info = _segment(ctx, path, root, specs_dir, env, destinations)
        infos.append(info)
        if spec is not None:
            specs.append(spec)
    _check_segments(infos)

    errors = [error for ctx in contexts for error in ctx.errors]
    if errors or catalog.catalog is None:
        raise SpecErrors(errors)
    return m.Project(
        specs_dir=specs_dir,
        catalog=catalog.catalog,
        traits=traits,
        segments=tuple(sorted(specs, key=lambda spec: spec.name)),
        destinations=destinations or {},
    )
