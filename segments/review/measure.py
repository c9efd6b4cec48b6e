"""Membership on the warehouse: both sides run in temporary tables of one engine
session; sizes, who enters and leaves, overlaps."""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from segments import engines, gitref, membership, pipeline, warehouse
from segments.compiler import models as md
from segments.engines.base import EngineError, Session, count_if
from segments.errors import SegmentsError
from segments.review.model import AFTER, BEFORE, MOVES, Review, SAMPLES, Size
from segments.review.sides import _Side


# ---- membership on the warehouse ---------------------------------------------------


def _measure(result: Review, before: _Side, head: _Side, engine: engines.Engine, revision: gitref.Revision) -> Review:
    """Run both sides on the warehouse: sizes, who enters and leaves, overlaps (in
    temporary tables of the review's session: nothing is written)."""
    assert head.project is not None
    moved = [c.name for c in result.changes if c.status != "edited"]
    at_base = [c.name for c in result.changes if c.status in ("changed", "removed")]
    with engine.connect(read_only=not engine.temporaries_need_writes) as session:
        warehouse.check_inputs(session, head.project.catalog)
        pipeline.materialize(session, md.compile_project(head.project), md.MEMBERSHIP, result.as_of, AFTER)
        if at_base:
            assert before.project is not None
            try:
                warehouse.check_inputs(session, before.project.catalog)
            except SegmentsError as error:
                raise SegmentsError(f"the specs at {revision.label}: {error}") from None
        base_project = before.project or head.project  # with nothing to run, any project compiles to no rows
        pipeline.materialize(session, md.compile_project(base_project, only=at_base), md.MEMBERSHIP, result.as_of, BEFORE)
        try:
            sizes_before, sizes_after = _sizes(session, BEFORE), _sizes(session, AFTER)
            _moves(session, moved)
            counts = {str(name): (int(entered), int(left)) for name, entered, left in session.rows(_move_counts())}
            samples = [(str(n), bool(e), str(u)) for n, e, u in session.rows(_move_samples())]
            columns = [c.name for c in result.changes if c.status in ("added", "changed") and c.name in counts]
            overlap = {(str(a), str(b)): int(n) for a, b, n in session.rows(_overlap(columns))}
        except EngineError as error:
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


def _is_set(column: exp.Column) -> exp.Expression:
    return exp.Not(this=exp.Is(this=column, expression=exp.null()))


def _sizes(session: Session, table: str) -> dict[str, Size]:
    arms: dict[str, list[tuple[str, int]]] = {}
    per_arm = (
        exp.select("segment_name", "arm", exp.Count(this=exp.Star()))
        .from_(table)
        .where(_is_set(exp.column("arm")))
        .group_by("segment_name", "arm")
        .order_by("segment_name", "arm")
    )
    for name, arm, count in session.rows(per_arm):
        arms.setdefault(str(name), []).append((str(arm), int(count)))
    return {
        name: Size(*counts, tuple(arms.get(name, ())))
        for name, counts in membership.sizes(session, exp.to_table(table)).items()
    }


def _moves(session: Session, names: list[str]) -> None:
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
    session.create_temporary(MOVES, query)


def _move_counts() -> exp.Query:
    entered = exp.column("entered")
    return (
        exp.select("segment_name", count_if(entered), count_if(exp.Not(this=entered.copy())))
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
