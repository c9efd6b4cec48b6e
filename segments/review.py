"""``segments review``: what a change to the specs does to the audiences.

The specs at a git revision and in the working tree are both compiled and run on
the same warehouse at the same ``as_of``, straight from their compiled SQL (as
``segments preview`` does: no dbt, nothing written). The report says, for each
segment added, changed or removed, how its spec and its SQL changed, its size
before and after, who enters and who leaves, and how it overlaps the others.

A segment has changed when its compiled query has. Each spec is compiled on its
own (``compile_project(only=...)``), so a segment's query holds everything its
members depend on: its rule, the traits, measures and segments it reads, the
catalog and its uploaded list. A change to ``_traits.yml`` therefore shows up on
exactly the segments that read the trait. Equal queries on the same data at the
same ``as_of`` give equal members, so only the segments whose query changed are
run at the base revision; the working tree's segments are all run, in one query,
for the overlaps.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import duckdb
from sqlglot import exp

from segments import engines, gitref, pipeline, warehouse
from segments.compiler import models as md
from segments.compiler import dialects, render
from segments.errors import SegmentsError, SpecErrors
from segments.spec.model import Project
from segments.spec.parse import load_project

Status = Literal["added", "changed", "removed", "edited"]
#: How many example ids of those who enter, and of those who leave.
SAMPLES = 5
#: Longest diff shown in full; longer ones are cut, with a note.
MAX_DIFF_LINES = 200
#: The overlap matrix keeps the most overlapping rows and the most changed columns.
MAX_OVERLAP_ROWS, MAX_OVERLAP_COLUMNS = 15, 8

BEFORE, AFTER, MOVES = "review_before", "review_after", "review_moves"


@dataclass(frozen=True)
class Size:
    members: int
    holdout: int
    arms: tuple[tuple[str, int], ...] = ()  # members per experiment arm


@dataclass(frozen=True)
class SegmentChange:
    """One segment whose compiled query or spec file differs between the sides.

    ``edited``: the spec file changed but not the query (a description, an owner),
    so the members are the same.
    """

    name: str
    spec: str  # the spec's name; the tiers of one spec share it
    status: Status
    sql: str  # changed: the diff of its compiled query; added: the query; else empty
    before: Size | None = None  # None where the segment does not exist
    after: Size | None = None
    entered: int = 0
    left: int = 0
    sample_entered: tuple[str, ...] = ()
    sample_left: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileChange:
    """A file of the specs directory that differs: a spec, configuration or upload."""

    path: str  # as the repository names it, e.g. segment_specs/_traits.yml
    diff: str  # unified diff; empty for uploads, whose rows may be personal data
    rows_before: int | None = None  # uploads: data rows on each side
    rows_after: int | None = None


@dataclass(frozen=True)
class Review:
    """Everything the report says, for :func:`markdown` or a test to read."""

    base: str
    head: str
    as_of: dt.datetime
    warehouse: str
    changes: list[SegmentChange]
    unchanged: int  # segments on both sides with the same query and spec file
    spec_files: dict[str, FileChange]  # spec name -> how its file changed
    other_files: list[FileChange]  # _catalog.yml, _traits.yml, uploads...
    sizes_after: dict[str, int] = field(default_factory=dict)  # every segment after
    overlap: dict[tuple[str, str], int] = field(default_factory=dict)  # (changed, other) -> shared
    note: str = ""


@dataclass(frozen=True)
class _Side:
    project: Project | None  # None: there is no specs directory on this side
    files: dict[str, bytes]  # spec, configuration and upload files, by relative path
    spec_of: dict[str, tuple[str, str]]  # segment -> (spec name, spec file), in spec order
    inputs: dict[str, tuple[object, ...]]  # segment -> the contents of every file its query reads
    uploads: frozenset[str]  # relative paths of uploaded lists


_NO_SIDE = _Side(None, {}, {}, {}, frozenset())


def review(specs_dir: Path, base: str, warehouse_file: Path, as_of: dt.datetime) -> Review:
    """Compare the specs at git revision ``base`` with ``specs_dir`` as it is now.

    Raises:
        SpecErrors: the working tree's specs do not validate.
        SegmentsError: not a git repository, an unknown revision, specs that do
            not validate at ``base``, or a warehouse that cannot run them.
    """
    specs_dir = specs_dir.resolve()
    head = _side(load_project(specs_dir))
    root = gitref.repository_root(specs_dir)
    revision = gitref.resolve(root, base)
    shown = specs_dir.relative_to(root).as_posix() if specs_dir != root else "."
    with tempfile.TemporaryDirectory(prefix="segments-review-") as tmp:
        exported = gitref.export_directory(root, revision, specs_dir, Path(tmp))
        before = _NO_SIDE if exported is None else _side(_load_at(exported, revision, tmp))
        changes = _classify(before, head, as_of, revision)
    spec_paths = {c.spec: (before.spec_of.get(c.name) or head.spec_of[c.name])[1] for c in changes}
    spec_files = {
        spec: change
        for spec, path in sorted(spec_paths.items())
        if (change := _file_change(shown, path, before, head)) is not None
    }
    uploads = head.uploads | before.uploads
    others = sorted(p for p in set(before.files) | set(head.files) if p.startswith("_") or p in uploads)
    result = Review(
        base=revision.label,
        head="working tree",
        as_of=as_of,
        warehouse=warehouse_file.name,
        changes=changes,
        unchanged=len(set(before.spec_of) & set(head.spec_of)) - sum(c.status in ("changed", "edited") for c in changes),
        spec_files=spec_files,
        other_files=[c for p in others if (c := _file_change(shown, p, before, head)) is not None],
        note=f"`{shown}/` does not exist at {revision.label}: every segment is new." if exported is None else "",
    )
    if not changes:
        return result
    return _measure(result, before, head, warehouse_file, revision)


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


# ---- membership on the warehouse ---------------------------------------------------


def _measure(result: Review, before: _Side, head: _Side, warehouse_file: Path, revision: gitref.Revision) -> Review:
    """Run both sides on the warehouse: sizes, who enters and leaves, overlaps."""
    assert head.project is not None
    moved = [c.name for c in result.changes if c.status != "edited"]
    at_base = [c.name for c in result.changes if c.status in ("changed", "removed")]
    with engines.get("duckdb", warehouse_file).connect(read_only=True) as session:
        con = session.con  # the review runs the compiled SQL on DuckDB
        warehouse.check_inputs(session, head.project.catalog)
        pipeline.materialize(con, md.compile_project(head.project), md.MEMBERSHIP, result.as_of, AFTER)
        if at_base:
            assert before.project is not None
            try:
                warehouse.check_inputs(session, before.project.catalog)
            except SegmentsError as error:
                raise SegmentsError(f"the specs at {revision.label}: {error}") from None
        base_project = before.project or head.project  # with nothing to run, any project compiles to no rows
        pipeline.materialize(con, md.compile_project(base_project, only=at_base), md.MEMBERSHIP, result.as_of, BEFORE)
        try:
            sizes_before, sizes_after = _sizes(con, BEFORE), _sizes(con, AFTER)
            _moves(con, moved)
            counts = {name: (entered, left) for name, entered, left in _fetch(con, _move_counts())}
            samples = _fetch(con, _move_samples())
            columns = [c.name for c in result.changes if c.status in ("added", "changed") and c.name in counts]
            overlap = {(a, b): n for a, b, n in _fetch(con, _overlap(columns))}
        except duckdb.Error as error:
            raise SegmentsError(f"comparing the memberships failed: {error}") from None
    examples: dict[tuple[str, bool], list[str]] = {}
    for name, entered, user_id in samples:
        examples.setdefault((name, entered), []).append(user_id)
    changes = []
    for change in result.changes:
        entered, left = counts.get(change.name, (0, 0))
        after = sizes_after.get(change.name, Size(0, 0)) if change.status != "removed" else None
        before_size = sizes_before.get(change.name, Size(0, 0)) if change.status in ("changed", "removed") else None
        changes.append(replace(
            change,
            before=after if change.status == "edited" else before_size,
            after=after,
            entered=entered,
            left=left,
            sample_entered=tuple(sorted(examples.get((change.name, True), []))),
            sample_left=tuple(sorted(examples.get((change.name, False), []))),
        ))
    return replace(
        result, changes=changes, sizes_after={n: s.members for n, s in sizes_after.items()}, overlap=overlap
    )


def _fetch(con: duckdb.DuckDBPyConnection, query: exp.Query) -> list[tuple]:
    return con.execute(dialects.render(query, "duckdb")).fetchall()


def _count_if(condition: exp.Expression) -> exp.Expression:
    return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=condition))


def _is_set(column: exp.Column) -> exp.Expression:
    return exp.Not(this=exp.Is(this=column, expression=exp.null()))


def _sizes(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Size]:
    query = (
        exp.select("segment_name", exp.Count(this=exp.Star()), _count_if(exp.column("is_holdout")))
        .from_(table)
        .group_by("segment_name")
    )
    arms: dict[str, list[tuple[str, int]]] = {}
    per_arm = (
        exp.select("segment_name", "arm", exp.Count(this=exp.Star()))
        .from_(table)
        .where(_is_set(exp.column("arm")))
        .group_by("segment_name", "arm")
        .order_by("segment_name", "arm")
    )
    for name, arm, count in _fetch(con, per_arm):
        arms.setdefault(name, []).append((str(arm), int(count)))
    return {name: Size(members, holdout, tuple(arms.get(name, ()))) for name, members, holdout in _fetch(con, query)}


def _moves(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """``review_moves``: (segment_name, user_id, entered) for every member who
    enters (true) or leaves (false) one of ``names``."""
    wanted = exp.column("segment_name").isin(*[exp.Literal.string(n) for n in names]) if names else exp.false()
    sides = {alias: exp.select("segment_name", "user_id").from_(table).where(wanted.copy()).subquery(alias)
             for alias, table in (("b", BEFORE), ("a", AFTER))}
    same = exp.and_(*[exp.EQ(this=exp.column(c, "a"), expression=exp.column(c, "b")) for c in ("segment_name", "user_id")])
    query = (
        exp.select(
            *[exp.alias_(exp.Coalesce(this=exp.column(c, "a"), expressions=[exp.column(c, "b")]), c)
              for c in ("segment_name", "user_id")],
            exp.alias_(_is_set(exp.column("user_id", "a")), "entered"),
        )
        .from_(sides["b"])
        .join(sides["a"], on=same, join_type="full outer")
        .where(exp.or_(exp.Is(this=exp.column("user_id", "a"), expression=exp.null()),
                       exp.Is(this=exp.column("user_id", "b"), expression=exp.null())))
    )
    create = exp.Create(
        kind="TABLE", this=exp.to_table(MOVES), expression=query,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )
    con.execute(dialects.render(create, "duckdb"))


def _move_counts() -> exp.Query:
    entered = exp.column("entered")
    return (
        exp.select("segment_name", _count_if(entered), _count_if(exp.Not(this=entered.copy())))
        .from_(MOVES)
        .group_by("segment_name")
    )


def _move_samples() -> exp.Query:
    """A few of those who enter and of those who leave each segment, picked by a
    hash of their id: spread over the ids, and the same on every run."""
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[exp.column("segment_name"), exp.column("entered")],
        order=exp.Order(expressions=[exp.Ordered(this=exp.MD5(this=exp.column("user_id"))), exp.Ordered(this=exp.column("user_id"))]),
    )
    return (
        exp.select("segment_name", "entered", "user_id")
        .from_(MOVES)
        .qualify(exp.LTE(this=rank, expression=exp.Literal.number(SAMPLES)))
    )


def _overlap(columns: list[str]) -> exp.Query:
    """Members shared by each of ``columns`` (the segments whose members move) and
    every other segment, after the change."""
    c, o = exp.column("segment_name", "c"), exp.column("segment_name", "o")
    wanted = c.isin(*[exp.Literal.string(n) for n in columns]) if columns else exp.false()
    return (
        exp.select(c, o.copy(), exp.Count(this=exp.Star()))
        .from_(exp.to_table(AFTER).as_("c"))
        .join(
            exp.to_table(AFTER).as_("o"),
            on=exp.and_(
                exp.EQ(this=exp.column("user_id", "o"), expression=exp.column("user_id", "c")),
                exp.NEQ(this=o.copy(), expression=c.copy()),
            ),
        )
        .where(wanted)
        .group_by(c.copy(), o.copy())
    )


# ---- the Markdown report ---------------------------------------------------------------


def markdown(review: Review) -> str:
    """The report, as GitHub renders it in a pull request comment."""
    lines = [f"## Segment review: {review.base} → {review.head}", ""]
    if review.note:
        lines += [review.note, ""]
    if not review.changes:
        lines += [f"No segment changes: all {review.unchanged} segments compile to the same SQL on both sides.", ""]
        return _join(lines + _files_section(review.other_files))
    at = review.as_of.isoformat(sep=" ")
    lines += [
        f"Both sides evaluated on `{review.warehouse}` at as_of {at} UTC, by running their compiled SQL "
        "directly on the same data.",
        "",
        _headline(review),
        "",
        "| segment | change | before | after | enter | leave |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for change in review.changes:
        lines.append(
            f"| `{change.name}` | {change.status} | {_size(change.before)} | {_size(change.after)} "
            f"| {_count(change.entered, change)} | {_count(change.left, change)} |"
        )
    lines.append("")
    lines += _overlap_section(review)
    lines += _files_section(review.other_files)
    by_spec: dict[str, list[SegmentChange]] = {}
    for change in review.changes:
        by_spec.setdefault(change.spec, []).append(change)
    for spec, changes in by_spec.items():
        lines += [f"### `{spec}`", ""]
        if spec in review.spec_files:
            lines += _fenced(_cut(review.spec_files[spec].diff), "diff")
        else:
            lines += ["Spec file unchanged: what it reads changed (see the SQL).", ""]
        for change in changes:
            lines += _segment_section(change)
    return _join(lines)


def _join(lines: list[str]) -> str:
    return "\n".join(lines).rstrip("\n") + "\n"


def _headline(review: Review) -> str:
    """``3 segments change (1 added, 2 changed)``, then edits and the rest.

    >>> r = Review("main", "working tree", dt.datetime(2026, 1, 1), "w.duckdb",
    ...            [SegmentChange("a", "a", "added", ""), SegmentChange("b", "b", "edited", "")],
    ...            4, {}, [])
    >>> _headline(r)
    '**1 segment changes** (1 added); 1 spec edited without changing its SQL; 4 unchanged.'
    """
    moved = [c for c in review.changes if c.status != "edited"]
    kinds = [f"{sum(c.status == k for c in moved)} {k}" for k in ("added", "changed", "removed") if any(c.status == k for c in moved)]
    text = f"**{_plural(len(moved), 'segment')} {'change' if len(moved) != 1 else 'changes'}**"
    text += f" ({', '.join(kinds)})" if kinds else ""
    edited = sum(c.status == "edited" for c in review.changes)
    if edited:
        text += f"; {_plural(edited, 'spec')} edited without changing {'its' if edited == 1 else 'their'} SQL"
    return f"{text}; {review.unchanged:,} unchanged."


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _size(size: Size | None) -> str:
    return "—" if size is None else f"{size.members:,}"


def _count(value: int, change: SegmentChange) -> str:
    return "—" if change.status == "edited" else f"{value:,}"


def _overlap_section(review: Review) -> list[str]:
    columns = [c for c in review.changes if c.status in ("added", "changed") and c.entered + c.left]
    if not columns:
        return []
    columns.sort(key=lambda c: -(c.entered + c.left))
    shown = [c.name for c in columns[:MAX_OVERLAP_COLUMNS]]
    lines = ["### Overlap after the change", ""]
    if len(columns) > len(shown):
        lines += [f"The {len(shown)} changed segments that move most members; {len(columns) - len(shown)} more not shown.", ""]

    def share(row: str, column: str) -> float:
        size = review.sizes_after.get(column, 0)
        return review.overlap.get((column, row), 0) / size if size else 0.0

    rows = sorted(
        {other for (column, other), n in review.overlap.items() if column in shown and n},
        key=lambda row: (-max(share(row, column) for column in shown), row),
    )
    if not rows:
        return lines + ["The changed segments share no members with any other segment.", ""]
    lines += [
        "Members of each segment whose members move (column) who are also in another segment (row): "
        "how many, and their share of the column's members.",
        "",
        "| segment | " + " | ".join(f"`{name}`" for name in shown) + " |",
        "| --- |" + " ---: |" * len(shown),
    ]
    for row in rows[:MAX_OVERLAP_ROWS]:
        cells = []
        for column in shown:
            shared = review.overlap.get((column, row), 0)
            cells.append("—" if row == column else _shared(shared, share(row, column)))
        lines.append(f"| `{row}` ({review.sizes_after.get(row, 0):,}) | " + " | ".join(cells) + " |")
    if len(rows) > MAX_OVERLAP_ROWS:
        lines.append(f"\n{len(rows) - MAX_OVERLAP_ROWS} more overlapping segments not shown.")
    return lines + [""]


def _shared(count: int, share: float) -> str:
    """A cell of the overlap matrix.

    >>> _shared(0, 0.0), _shared(3, 0.004), _shared(40, 0.5)
    ('0', '3 (<1%)', '40 (50%)')
    """
    if not count:
        return "0"
    return f"{count:,} ({'<1%' if share < 0.01 else format(share, '.0%')})"


def _files_section(files: list[FileChange]) -> list[str]:
    if not files:
        return []
    lines = ["### Configuration and uploaded lists", ""]
    for change in files:
        if change.diff:
            lines += [f"`{change.path}`", ""] + _fenced(_cut(change.diff), "diff")
        else:
            rows = " → ".join("—" if n is None else f"{n:,} rows" for n in (change.rows_before, change.rows_after))
            lines += [f"`{change.path}`: {rows} (contents not shown: uploaded lists may hold personal data).", ""]
    return lines


def _segment_section(change: SegmentChange) -> list[str]:
    name = f"**`{change.name}`**"
    if change.status == "edited":
        return [f"{name}: spec edited, compiled SQL unchanged: the same {_size(change.after)} members.", ""]
    sizes = " → ".join(_members(s) for s in (change.before, change.after) if s is not None)
    line = f"{name} {change.status}: {sizes}; {change.entered:,} enter, {change.left:,} leave."
    lines = [line, ""]
    for label, count, sample in (("enter", change.entered, change.sample_entered), ("leave", change.left, change.sample_left)):
        if sample:
            more = f" and {count - len(sample):,} more" if count > len(sample) else ""
            lines.append(f"- {label}: {', '.join(_code(s) for s in sample)}{more}")
    if change.sample_entered or change.sample_left:
        lines.append("")
    if not change.sql:
        return lines
    what, language = ("Compiled SQL", "sql") if change.status == "added" else ("Compiled SQL diff", "diff")
    lines += [f"<details><summary>{what} of <code>{change.name}</code></summary>", ""]
    lines += _fenced(_cut(change.sql), language)
    return lines + ["</details>", ""]


def _members(size: Size) -> str:
    holdout = f" ({size.holdout:,} holdout)" if size.holdout else ""
    arms = f" (arms: {', '.join(f'{arm} {count:,}' for arm, count in size.arms)})" if size.arms else ""
    return f"{size.members:,} members{holdout}{arms}"


def _cut(diff: str) -> str:
    lines = diff.splitlines()
    if len(lines) <= MAX_DIFF_LINES:
        return diff
    return "\n".join(lines[:MAX_DIFF_LINES]) + f"\n... {len(lines) - MAX_DIFF_LINES} more lines\n"


def _fenced(text: str, language: str) -> list[str]:
    """A fenced block longer than any run of backticks inside it.

    >>> _fenced("a ``` b", "diff")
    ['````diff', 'a ``` b', '````', '']
    """
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return [f"{fence}{language}", text.rstrip("\n"), fence, ""]


def _code(text: str) -> str:
    """Inline code that survives backticks in ``text``.

    >>> _code("u1"), _code("a`b")
    ('`u1`', '`` a`b ``')
    """
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (1 + max(len(run) for run in re.findall(r"`+", text)))
    return f"{fence} {text} {fence}"

