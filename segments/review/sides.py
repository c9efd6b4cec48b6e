"""The two sides of a review: the specs at a git revision and in the working tree,
compiled one spec at a time, and which segments changed between them."""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from sqlglot import exp

from segments import gitref
from segments.compiler import dialects, render
from segments.compiler import models as md
from segments.errors import SegmentsError, SpecErrors
from segments.review.model import FileChange, SegmentChange, Status
from segments.spec.model import Project
from segments.spec.parse import load_project


@dataclass(frozen=True)
class _Side:
    project: Project | None  # None: there is no specs directory on this side
    files: dict[str, bytes]  # spec, configuration and upload files, by relative path
    spec_of: dict[str, tuple[str, str]]  # segment -> (spec name, spec file), in spec order
    inputs: dict[str, tuple[object, ...]]  # segment -> the contents of every file its query reads
    uploads: frozenset[str]  # relative paths of uploaded lists


_NO_SIDE = _Side(None, {}, {}, {}, frozenset())


def _load_at(exported: Path, revision: gitref.Revision, tmp: str) -> Project:
    """The project at the base revision; its errors name files as ``REF:path``."""
    try:
        return load_project(exported)
    except SpecErrors as errors:
        shown = "\n".join(f"  {str(e).replace(tmp + os.sep, f'{revision.ref}:')}" for e in errors.errors)
        raise SegmentsError(
            f"the specs at {revision.label} do not validate, so there is nothing to compare with "
            f"(review against another --base):\n{shown}"
        ) from None


def _side(project: Project) -> _Side:
    """One side's files, and for each segment the contents of every file its
    compiled query depends on: the configuration files, and the spec and upload
    files of the segments it reads (itself included)."""
    base = project.specs_dir

    def relative(path: Path) -> str:
        return path.relative_to(base).as_posix()

    spec_of = {name: (spec.name, relative(spec.path)) for spec in project.segments for name in spec.segment_names()}
    uploads = {relative(spec.upload.file) for spec in project.segments if spec.upload}
    wanted = {path for _, path in spec_of.values()} | uploads
    files = {
        relative(p): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file() and (relative(p) in wanted or _is_config(p, base))
    }
    config = tuple((path, content) for path, content in files.items() if path.startswith("_"))
    inputs: dict[str, tuple[object, ...]] = {}
    for spec in project.segments:
        read = [project.spec(name) for name in md.segment_closure(project, spec.segment_names())]
        paths = sorted({relative(s.path) for s in read} | {relative(s.upload.file) for s in read if s.upload})
        for name in spec.segment_names():
            inputs[name] = config + tuple((path, files[path]) for path in paths)
    return _Side(project, files, spec_of, inputs, frozenset(uploads))


@dataclass(frozen=True)
class _Query:
    sql: str  # what runs
    shown: str  # what the report shows: uploaded keys left out


def _queries(side: _Side, names: set[str], as_of: dt.datetime) -> dict[str, _Query]:
    """The standalone query of each of ``names``, each spec compiled on its own."""
    assert side.project is not None
    out: dict[str, _Query] = {}
    for spec in side.project.segments:
        if names.isdisjoint(spec.segment_names()):
            continue
        compiled = md.compile_project(side.project, only=spec.segment_names())
        for name in spec.segment_names():
            query = render.standalone_query(compiled, md.segment_model_name(name), as_of)
            out[name] = _Query(_pretty(query), _pretty(query.transform(_hide_uploaded_keys)))
    return out


def _pretty(query: exp.Expression) -> str:
    return dialects.render(query, "duckdb", pretty=True)


def _hide_uploaded_keys(node: exp.Expression) -> exp.Expression:
    """An uploaded list's rows (emails, phones) become one row saying how many
    there are and a digest that changes with them.

    >>> rows = exp.values([("a@x.io",), ("b@x.io",)], alias=md.UPLOADED, columns=["k"])
    >>> _hide_uploaded_keys(rows).sql()
    "(VALUES ('2 uploaded keys, not shown; digest 41f1753d')) AS uploaded(k)"
    """
    if not isinstance(node, exp.Values) or node.alias != md.UPLOADED:
        return node
    digest = hashlib.sha256(repr([row.sql() for row in node.expressions]).encode()).hexdigest()[:8]
    hidden = node.copy()
    text = f"{len(node.expressions)} uploaded keys, not shown; digest {digest}"
    hidden.set("expressions", [exp.Tuple(expressions=[exp.Literal.string(text)])])
    return hidden


def _is_config(path: Path, base: Path) -> bool:
    return path.parent == base and path.name.startswith("_") and path.suffix in (".yml", ".yaml")


def _classify(before: _Side, head: _Side, as_of: dt.datetime, revision: gitref.Revision) -> list[SegmentChange]:
    """Every segment added, removed, changed or edited, grouped by spec.

    Only segments whose input files differ are compiled: equal inputs compile to
    equal queries.
    """
    names = list(head.spec_of) + [n for n in before.spec_of if n not in head.spec_of]
    names.sort(key=lambda n: (before.spec_of.get(n) or head.spec_of[n])[0])  # stable: tiers keep their order
    differ = {n for n in names if before.inputs.get(n) != head.inputs.get(n)}
    new = _queries(head, differ, as_of) if differ & set(head.spec_of) else {}
    try:
        old = _queries(before, differ, as_of) if differ & set(before.spec_of) else {}
    except SegmentsError as error:
        raise SegmentsError(f"at {revision.label}: {error}") from None
    out: list[SegmentChange] = []
    for name in names:
        spec = (head.spec_of.get(name) or before.spec_of[name])[0]
        if name not in before.spec_of:
            status: Status = "added"
        elif name not in head.spec_of:
            status = "removed"
        elif name in differ and old[name].sql != new[name].sql:
            status = "changed"
        elif before.files[before.spec_of[name][1]] != head.files[head.spec_of[name][1]]:
            status = "edited"
        else:
            continue
        sql = ""
        if status == "changed":
            sql = _diff(old[name].shown, new[name].shown, f"seg_{name}.sql")
        elif status == "added":
            sql = new[name].shown
        out.append(SegmentChange(name, spec, status, sql))
    return out


def _diff(old: str | None, new: str | None, name: str) -> str:
    """A unified diff as git writes it (a missing side is ``/dev/null``).

    >>> print(_diff("x\\ny\\n", "x\\nz\\n", "f.sql"), end="")
    --- a/f.sql
    +++ b/f.sql
    @@ -1,2 +1,2 @@
     x
    -y
    +z
    """
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
        fromfile="/dev/null" if old is None else f"a/{name}", tofile="/dev/null" if new is None else f"b/{name}",
    ))


def _file_change(shown: str, path: str, before: _Side, head: _Side) -> FileChange | None:
    old, new = before.files.get(path), head.files.get(path)
    if old == new:
        return None
    label = path if shown == "." else f"{shown}/{path}"
    if path in before.uploads | head.uploads:
        return FileChange(label, "", _rows(old), _rows(new))
    return FileChange(label, _diff(_text(old), _text(new), label))


def _text(content: bytes | None) -> str | None:
    return None if content is None else content.decode("utf-8", errors="replace").lstrip("\ufeff")


def _rows(content: bytes | None) -> int | None:
    """Data rows of an uploaded CSV (after its header), blank lines not counted.

    >>> _rows(b"email\\na@x.io\\n\\nb@x.io\\n"), _rows(None)
    (2, None)
    """
    if content is None:
        return None
    return max(0, sum(1 for row in csv.reader(io.StringIO(_text(content) or "")) if row) - 1)
