"""Sizes of a segment membership table, the one small query publish, its guard,
``segments list`` and review all ask."""

from __future__ import annotations

from sqlglot import exp

from segments.engines.base import Session, count_if


def sizes(session: Session, table: exp.Table) -> dict[str, tuple[int, int]]:
    """Segment -> (members, holdout members) of a table of ``segment_name, user_id,
    is_holdout`` rows (a published or built ``segment_membership``, a review's side)."""
    query = (
        exp.select("segment_name", exp.Count(this=exp.Star()), count_if(exp.column("is_holdout")))
        .from_(table)
        .group_by("segment_name")
    )
    return {str(name): (int(members), int(holdout or 0)) for name, members, holdout in session.rows(query)}
