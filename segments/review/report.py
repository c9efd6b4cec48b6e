"""The review as Markdown, as GitHub renders it in a pull request comment."""

from __future__ import annotations

import datetime as dt  # the doctests build reviews
import re

from segments.review.model import (
    FileChange, MAX_DIFF_LINES, MAX_OVERLAP_COLUMNS, MAX_OVERLAP_ROWS, Review, SegmentChange, Size,
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
