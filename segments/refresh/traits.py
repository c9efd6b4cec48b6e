"""Traits and flags of a refresh: the users whose traits changed, and the users whose
rules compare a value with a bound that moved."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.engines.base import drop
from segments.refresh.build import BuildSchema, user_in
from segments.refresh.edges import Edge, is_as_of

_NEW_TRAITS = "int_user_traits__refresh"
_TRAITS_FRESH, _TRAITS_CHANGED = "_refresh_traits_fresh", "_refresh_traits_changed"
_TRAITS_MOVED, _RESCORED, _TRAITS_OLD = "_refresh_traits_moved", "_refresh_rescored", "_refresh_traits_old"


def refresh_traits(build: BuildSchema, users: str, as_of: dt.datetime) -> exp.Query | None:
    """Traits of ``users`` computed again; the users whose traits changed, or None
    when none did (the table is then left as it is).

    The first layer (measure traits, follow-ups) is per user: computed for ``users``
    only, and the rows that changed replaced. A quantile score depends on how many
    values are below the user's and how many there are: both are counted per distinct
    value, and only the users whose score moved are updated (:func:`rescore`). A
    traits model that reads ``as_of`` itself is computed again for everyone."""
    traits = md.USER_TRAITS_AND_FOLLOWUPS
    tree = build.compiled.model(traits).query
    per_user = tree.ctes[0].this if tree.ctes else tree
    assert isinstance(per_user, exp.Select)
    if any(is_as_of(p) for p in tree.find_all(exp.Placeholder)):
        return _recompute_traits(build, as_of)
    columns = [e.alias_or_name for e in per_user.expressions]
    fresh = build.query(traits, {md.UNIVERSE: build.only(md.UNIVERSE, users, as_of)}, as_of, tree=per_user.copy())
    build.create_temp(_TRAITS_FRESH, fresh)
    build.copy_rows(_TRAITS_OLD, traits, users, columns)
    old = exp.select(*columns).from_(_TRAITS_OLD)
    fresh_rows = exp.select(*columns).from_(_TRAITS_FRESH)
    # each EXCEPT in parentheses: set operations chain left to right
    moved = exp.union(exp.except_(fresh_rows, old).subquery(), exp.except_(old.copy(), fresh_rows.copy()).subquery(), distinct=False)
    build.create_temp(_TRAITS_MOVED, exp.select("user_id").distinct().from_(exp.Subquery(this=moved, alias=exp.TableAlias(this=sx.ident("m")))))
    if not build.count(_TRAITS_MOVED):
        return None  # no user's own traits changed: nor do the ranks
    # their scores are left missing here, and set by the rescoring below
    build.replace_rows(traits, _TRAITS_MOVED, exp.select(*columns).from_(_TRAITS_FRESH).where(user_in(_TRAITS_MOVED)), copied=_TRAITS_OLD)
    changed: list[exp.Query] = [exp.select("user_id").from_(_TRAITS_MOVED)]
    for i, quantile in enumerate(build.compiled.quantiles):
        rescored = f"{_RESCORED}_{i}"
        build.create_temp(rescored, rescore(build.table(traits), quantile))
        build.run(exp.update(
            build.table(traits), {quantile.name: sx.col(quantile.name, "r")}, from_=exp.From(this=exp.to_table(rescored).as_("r")),
            where=exp.EQ(this=sx.col("user_id", "r"), expression=sx.col("user_id", traits)),
        ))
        changed.append(exp.select("user_id").from_(rescored))
    union = changed[0]
    for part in changed[1:]:
        union = exp.union(union, part, distinct=False)
    return union


def rescore(traits: exp.Table, quantile: md.Quantile) -> exp.Select:
    """The users whose ``quantile`` score differs from the one their value has now, with
    that score (the values' scores as the build joins them: :func:`.value_scores`).

    A user whose value is missing has no score, and matches no value."""
    scores = md.value_scores(traits, quantile.of, quantile.buckets)
    return (
        exp.select(sx.col("user_id", "t"), exp.alias_(sx.col("score", "s"), quantile.name))
        .from_(traits.copy().as_("t"))
        .join(exp.Subquery(this=scores, alias=exp.TableAlias(this=sx.ident("s"))),
              on=exp.EQ(this=sx.col("v", "s"), expression=sx.col(quantile.of, "t")), join_type="left")
        .where(exp.NullSafeNEQ(this=sx.col("score", "s"), expression=sx.col(quantile.name, "t")))
    )


def _recompute_traits(build: BuildSchema, as_of: dt.datetime) -> exp.Query:
    """Every user's traits computed again (the model reads ``as_of``); the users whose
    traits changed, found by comparing rows."""
    traits = md.USER_TRAITS_AND_FOLLOWUPS
    build.run(exp.Create(kind="TABLE", this=build.table(_NEW_TRAITS), replace=True, expression=build.query(traits, {}, as_of)))
    others = [c for c in build.session.columns(build.engine.build_schema, traits) if c != "user_id"]
    differs = sx.or_(*[exp.NullSafeNEQ(this=exp.column(c, "n"), expression=exp.column(c, "o")) for c in others]) if others else exp.false()
    changed = (
        exp.select("user_id").from_(build.table(_NEW_TRAITS).as_("n"))
        .join(build.table(traits).as_("o"), using=["user_id"], join_type="FULL OUTER")
        .where(differs)
    )
    build.create_temp(_TRAITS_CHANGED, changed)
    swap_traits(build)
    return exp.select("user_id").from_(_TRAITS_CHANGED)


def swap_traits(build: BuildSchema) -> None:
    traits = build.table(md.USER_TRAITS_AND_FOLLOWUPS)
    build.run(drop("TABLE", traits))
    renamed = exp.AlterRename(this=sx.ident(md.USER_TRAITS_AND_FOLLOWUPS))
    build.run(exp.Alter(this=build.table(_NEW_TRAITS), kind="TABLE", actions=[renamed]))


def source_edges(build: BuildSchema, found: list[Edge]) -> list[Edge]:
    """Edges of the base moved to the table its column comes from (a join less): a
    base column that is ``alias.column`` (or its COALESCE) of a model it reads."""
    base = build.compiled.model(md.BASE).query
    assert isinstance(base, exp.Select)
    origin: dict[str, str] = {}
    for table in base.find_all(exp.Table):
        if "model" in table.meta:
            model = table.meta["model"]
            origin[table.alias_or_name] = md.USERS if model == md.UNIVERSE else model
    columns = {e.alias_or_name: e.unalias() for e in base.expressions}
    moved = []
    for edge in found:
        value = columns.get(edge.column)
        if isinstance(value, exp.Coalesce):
            value = value.this
        if isinstance(value, exp.Column) and value.table in origin:
            moved.append(Edge(origin[value.table], value.name, edge.bound, edge.events))
        else:
            moved.append(edge)
    return moved
