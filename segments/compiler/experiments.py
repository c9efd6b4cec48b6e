"""Experiment arms (SPEC 2.7) and the holdout (SPEC 2.6): buckets from a hash of the user.

Both read the first 8 hex digits of ``md5(key || ':' || user_id)`` as an unsigned
integer: the holdout keys it with the segment's name and takes ``mod 100 < H``; an
experiment keys it with the experiment's name and takes ``mod 10000`` (hundredths of
a percent), the arms owning consecutive ranges in the order written. A user's arm
depends on nothing else, so it stays when the rule changes and agrees on every engine
(the hex reading is spelt per engine in :mod:`segments.compiler.dialects`).
"""

from __future__ import annotations

import hashlib

from sqlglot import exp

from segments.compiler import sqlexpr as sx
from segments.spec import model as m

#: An experiment's buckets: hundredths of a percent.
ARM_BUCKETS = 10_000


def bucket(key: str, modulus: int) -> exp.Expression:
    """``first 8 hex digits of md5(key:user_id) mod modulus`` over the column ``user_id``."""
    digest = exp.MD5(this=exp.DPipe(this=sx.literal(f"{key}:"), expression=sx.col("user_id")))
    first8 = exp.Substring(this=digest, start=exp.Literal.number(1), length=exp.Literal.number(8))
    as_int = exp.FromBase(this=first8, expression=exp.Literal.number(16))  # see dialects
    return exp.Mod(this=as_int, expression=exp.Literal.number(modulus))


def bounds(experiment: m.Experiment) -> list[tuple[str, int]]:
    """Each arm with the bucket its range ends before.

    >>> bounds(m.Experiment("x", (("a", 45), ("b", 45), ("control", 10))))
    [('a', 4500), ('b', 9000), ('control', 10000)]
    >>> bounds(m.Experiment("x", (("a", 33.33), ("b", 66.67))))
    [('a', 3333), ('b', 10000)]
    """
    out, total = [], 0
    for arm, percent in experiment.arms:
        total += round(percent * 100)
        out.append((arm, total))
    return out


def arm(experiment: m.Experiment | None) -> exp.Expression:
    """The member's arm, or a NULL text for a segment without an experiment."""
    if experiment is None:
        return exp.cast(exp.null(), exp.DataType.Type.VARCHAR)
    ranges = bounds(experiment)
    which = bucket(experiment.name, ARM_BUCKETS)
    ifs = [exp.If(this=exp.LT(this=which.copy(), expression=exp.Literal.number(end)), true=sx.literal(name))
           for name, end in ranges[:-1]]
    return exp.Case(ifs=ifs, default=sx.literal(ranges[-1][0]))


def arm_of(experiment: m.Experiment, user_id: str) -> str:
    """The arm in Python, as the SQL computes it (for explain and tests' readers).

    >>> arm_of(m.Experiment("cart_copy", (("a", 50), ("b", 50))), "u1") in ("a", "b")
    True
    """
    value = int(hashlib.md5(f"{experiment.name}:{user_id}".encode()).hexdigest()[:8], 16) % ARM_BUCKETS
    return next(name for name, end in bounds(experiment) if value < end)
