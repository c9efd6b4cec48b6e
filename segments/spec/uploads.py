"""Parsing the spec keys of uploaded lists (SPEC 1.6): ``upload:`` of a segment spec
and ``default_country`` of the catalog.

A spec names its list (``upload: {match_on: email}``), which ``segments upload`` loads
into the warehouse; ``file:`` names a CSV inside the specs folder that every build
loads there instead (:mod:`segments.uploads`). Validation only checks that such a file
is there and has the ``match_on`` column: its rows are read when it is loaded, and
never reach the compiled SQL.
"""

from __future__ import annotations

import csv
from pathlib import Path

from yaml.nodes import Node

from segments import keys
from segments.spec import grammar
from segments.spec import model as m
from segments.spec import nodes as p
from segments.spec.conditions import _Env


def default_country(ctx: p._Ctx, node: Node | None) -> str | None:
    """The catalog's ``default_country``: a region phonenumbers knows, or None
    (absent, or wrong: reported)."""
    code = p._text(ctx, node, "default_country")
    if code is None:
        return None
    if keys.valid_country(code):
        return code
    upper = code.strip().upper()
    hint = f" (did you mean '{upper}'?)" if keys.valid_country(upper) else " (expected an ISO 3166 alpha-2 code such as IN or DE)"
    ctx.error(node, f"unknown default_country '{code}'{hint}")
    return None


def upload(ctx: p._Ctx, node: Node, specs_dir: Path, env: _Env) -> m.Upload | None:
    """``upload: {match_on, file?}``."""
    mark = ctx.mark()
    entries = p._entries(ctx, node, "upload")
    if entries is None:
        return None
    p._check_keys(ctx, entries, grammar.UPLOAD.names)
    match_node = p._require(ctx, node, entries, "match_on", "upload")
    match_on = p._text(ctx, match_node, "match_on")
    if match_on is not None and match_on not in grammar.MATCH_ON:
        p._unknown(ctx, match_node, "match_on", match_on, grammar.MATCH_ON)
        match_on = None
    elif match_on in ("email", "phone") and env.attributes is not None and match_on not in env.attributes:
        ctx.error(match_node, f"match_on: {match_on} needs a users attribute '{match_on}' in _catalog.yml")
    path = None
    file_node = p._value_of(entries, "file")
    if file_node is not None:
        file_text = p._text(ctx, file_node, "file")
        if file_text is None:
            return None
        path = _confined(ctx, file_node, specs_dir, file_text)
        if path is None:
            return None
        if not path.is_file():
            siblings = [f.name for f in path.parent.iterdir()] if path.parent.is_dir() else []
            ctx.error(file_node, f"upload file '{file_text}' not found in {specs_dir}{p._hint(path.name, siblings, list_up_to=0)}")
            return None
        if match_on is not None:
            _check_header(ctx, file_node, path, file_text, match_on)
    if match_on is None or ctx.failed_since(mark):
        return None
    return m.Upload(match_on, path)  # type: ignore[arg-type]


def _confined(ctx: p._Ctx, node: Node, specs_dir: Path, file_text: str) -> Path | None:
    """The upload's path when it stays inside the specs folder, else None (reported).

    A spec comes from whoever can open a pull request: an absolute path, ``..`` or a
    symlink leading out would let it read any file the build can (``/proc/self/environ``,
    keys) into the warehouse and error messages.
    """
    relative = Path(file_text)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        ctx.error(node, f"upload file '{file_text}' must be a path inside the specs folder, relative to it, without '..'")
        return None
    root = specs_dir.resolve()
    path = specs_dir / relative
    if not path.resolve().is_relative_to(root):
        ctx.error(node, f"upload file '{file_text}' leads outside the specs folder (a symlink): uploads must live inside it")
        return None
    return path


def _check_header(ctx: p._Ctx, node: Node, path: Path, shown: str, column: str) -> None:
    """The file is UTF-8 CSV whose header row names ``column`` (every row is read:
    a committed list is small, and a broken one fails validation, not the build)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = (row for row in csv.reader(handle) if row)  # [] is a blank line
            header = next(rows, None)
            for _ in rows:
                pass
    except UnicodeDecodeError:
        ctx.error(node, f"upload file '{shown}' is not UTF-8 text")
        return
    except OSError as exc:
        ctx.error(node, f"cannot read upload file '{shown}': {exc.strerror or type(exc).__name__}")
        return
    except csv.Error:
        # csv's messages may quote the offending text: say what, not the content.
        ctx.error(node, f"upload file '{shown}' is not valid CSV (a NUL byte or a field over the size limit)")
        return
    if header is None:
        ctx.error(node, f"upload file '{shown}' is empty: it needs a header row naming '{column}'")
        return
    if column not in [cell.strip() for cell in header]:
        # Header cells are file content: never echoed (SPEC 3.2), only their count.
        ctx.error(node, f"upload file '{shown}' has no column '{column}' in its header row ({len(header)} columns)")
