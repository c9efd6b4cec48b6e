"""The connections in ``dbt_project/profiles.yml``, read the way dbt reads them.

dbt and segments connect with the same settings: the engines read their target's
output from the profile (rendering ``env_var()`` as dbt does), so pointing the project
at another warehouse is one edit of ``profiles.yml`` or of the environment.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from segments import paths
from segments.errors import SegmentsError

if TYPE_CHECKING:
    import jinja2

DEFAULT_PROFILE = "segments"


def profiles_file() -> Path:
    """The project's ``profiles.yml``: dbt runs with the dbt project as its profiles dir."""
    return paths.current().dbt_project_dir / "profiles.yml"


def profile_name(project_dir: Path | None = None) -> str:
    """The profile the dbt project names (``profile:`` of dbt_project.yml)."""
    project_file = (project_dir or paths.current().dbt_project_dir) / "dbt_project.yml"
    try:
        document = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return DEFAULT_PROFILE
    name = document.get("profile") if isinstance(document, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_PROFILE


def _env_var(env: Mapping[str, str]) -> Callable[..., str]:
    def env_var(name: str, default: str | None = None) -> str:
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise SegmentsError(f"profiles.yml reads the environment variable {name}, which is not set")

    return env_var


def _renderer(env: Mapping[str, str]) -> jinja2.Environment:
    import jinja2  # a twentieth of a second; only for templates other than a plain env_var

    renderer = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    renderer.globals["env_var"] = _env_var(env)
    for name in ("as_number", "as_text", "as_native", "as_bool"):
        renderer.filters[name] = lambda value: value
    return renderer


#: ``{{ env_var('NAME') }}`` or ``{{ env_var('NAME', 'default') }}`` alone: what most
#: values of a profile are, read without jinja (whose import every command would pay)
_PLAIN_ENV_VAR = re.compile(
    r"""\{\{\s*env_var\(\s*'([^'\\]*)'\s*(?:,\s*'([^'\\]*)'\s*)?\)\s*\}\}"""
)


def _render(value: object, env: Mapping[str, str], renderer: list[jinja2.Environment]) -> object:
    """``value`` with its templates rendered; ``renderer`` holds the jinja environment
    once a template needed it."""
    if isinstance(value, dict):
        return {key: _render(item, env, renderer) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, env, renderer) for item in value]
    if isinstance(value, str) and "{" in value:
        plain = _PLAIN_ENV_VAR.fullmatch(value)
        if plain is not None:
            return _env_var(env)(*[part for part in plain.groups() if part is not None])
        if not renderer:
            renderer.append(_renderer(env))
        return renderer[0].from_string(value).render()
    return value


def output(target: str, env: Mapping[str, str] | None = None, profiles: Path | None = None) -> dict[str, object]:
    """The profile's output for ``target``, with ``env_var()`` rendered from the
    environment plus ``env``.

    Example:
        >>> output("duckdb", {"SEGMENTS_WAREHOUSE": "/tmp/w.duckdb"})["path"]
        '/tmp/w.duckdb'

    Raises:
        SegmentsError: no such output, or a variable it needs is not set.
    """
    profiles = profiles or profiles_file()
    environment = {**os.environ, **(env or {})}
    # a connection reads its output each time (segments watch: a dozen a cycle); the
    # files are parsed and rendered again only when they or the environment change
    key = (str(profiles), _content(profiles), _content(profiles.parent / "dbt_project.yml"), target,
           frozenset(environment.items()))
    if key not in _OUTPUTS:
        if len(_OUTPUTS) >= 32:
            _OUTPUTS.clear()
        _OUTPUTS[key] = _read_output(profiles, target, environment)
    return copy.deepcopy(_OUTPUTS[key])


_OUTPUTS: dict[tuple, dict[str, object]] = {}


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _read_output(profiles: Path, target: str, environment: Mapping[str, str]) -> dict[str, object]:
    profile = profile_name(profiles.parent)
    try:
        document = yaml.safe_load(profiles.read_text(encoding="utf-8"))
    except OSError as error:
        raise SegmentsError(f"cannot read {profiles}: {error.strerror or error}") from None
    outputs = (document or {}).get(profile, {}).get("outputs", {})
    if target not in outputs:
        raise SegmentsError(f"{profiles} has no output {target!r} for profile {profile!r}")
    rendered = _render(outputs[target], environment, [])
    assert isinstance(rendered, dict)
    return rendered
