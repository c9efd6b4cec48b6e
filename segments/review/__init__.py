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

Its modules: :mod:`~segments.review.model` (what a review finds),
:mod:`~segments.review.sides` (the specs at a revision and now, from git, and what
changed), :mod:`~segments.review.measure` (both sides run on the warehouse) and
:mod:`~segments.review.report` (the Markdown).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from segments import engines, gitref
from segments.review.measure import _measure
from segments.review.model import FileChange, Review, SegmentChange, Size
from segments.review.report import markdown
from segments.review.sides import _NO_SIDE, _classify, _file_change, _load_at, _side
from segments.spec.parse import load_project

__all__ = ["FileChange", "Review", "SegmentChange", "Size", "markdown", "review"]


def review(specs_dir: Path, base: str, engine: engines.Engine, as_of: dt.datetime) -> Review:
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
        warehouse=engine.describe() if engine.target != "duckdb" else Path(engine.describe()).name,
        changes=changes,
        unchanged=len(set(before.spec_of) & set(head.spec_of)) - sum(c.status in ("changed", "edited") for c in changes),
        spec_files=spec_files,
        other_files=[c for p in others if (c := _file_change(shown, p, before, head)) is not None],
        note=f"`{shown}/` does not exist at {revision.label}: every segment is new." if exported is None else "",
    )
    if not changes:
        return result
    return _measure(result, before, head, engine, revision)

