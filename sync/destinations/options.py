"""A destination's options: declared, typed, defaulted, ``${VAR}`` taken from the
environment (never echoed)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from segments.errors import SegmentsError


@dataclass(frozen=True)
class Option:
    """One option a destination (or a segment's ``sync:`` entry) takes."""

    name: str
    kind: type | tuple[type, ...] = str
    required: bool = False
    default: object = None
    secret: bool = False  # read from ${VAR}; never printed


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: object, env: Mapping[str, str], where: str) -> object:
    """Replace every ``${VAR}`` in a string option with the environment's value.

    Examples:
        >>> expand_env("http://${HOST}/hook", {"HOST": "127.0.0.1:8080"}, "d")
        'http://127.0.0.1:8080/hook'
        >>> expand_env(["${A}", 3], {"A": "x"}, "d")
        ['x', 3]
        >>> expand_env("${NOPE}", {}, "destination crm_hook")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: destination crm_hook: environment variable NOPE is not set
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise SegmentsError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [expand_env(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env, where) for k, v in value.items()}
    return value


def resolve_options(
    declared: tuple[Option, ...], raw: Mapping[str, object], where: str, env: Mapping[str, str] | None = None,
    expand: bool = True,
) -> dict[str, object]:
    """Check options against their declaration, fill defaults, expand ``${VAR}``
    (unless ``expand`` is false: ``segments validate`` checks without secrets).

    Raises:
        SegmentsError: every unknown, missing or mistyped option of ``where`` at once.
    """
    env = os.environ if env is None else env
    by_name = {o.name: o for o in declared}
    problems = [f"unknown option {k!r} (known: {', '.join(sorted(by_name))})" for k in raw if k not in by_name]
    resolved: dict[str, object] = {}
    for option in declared:
        if option.name not in raw or raw[option.name] is None:
            if option.required:
                problems.append(f"option {option.name!r} is required")
            resolved[option.name] = option.default
            continue
        value = raw[option.name]
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            problems.append(f"option {option.name!r} must be {names}, got {type(value).__name__}")
            continue
        resolved[option.name] = expand_env(value, env, where) if expand else value
    if problems:
        raise SegmentsError(f"{where}: " + "; ".join(problems))
    return resolved
