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


def refresh_traits(build: BuildSchema, users: str, as_of: dt.datetime) -> exp.Query | None:
    """Traits of ``users`` computed again; the users whose traits changed, or None
    when none did (the table is then left as it is).

    The first layer (measure traits, follow-ups) is per user: computed for ``users``
    only and kept from the table for everyone else. The layers above it rank every
    user (quantiles): they move when any user's value does, so they are computed again
    for everyone into a new table, and rows are compared by user to find who changed.
    A traits model that reads ``as_of`` itself is computed again for everyone."""
    traits = md.USER_TRAITS_AND_FOLLOWUPS
    tree = build.compiled.model(traits).query.copy()
    ctes = list(tree.ctes)
    per_user = ctes[0].this if ctes else tree
    assert isinstance(per_user, exp.Select)
    columns = [e.alias_or_name for e in per_user.expressions]
    if any(is_as_of(p) for p in tree.find_all(exp.Placeholder)):
        build.create_temp(_TRAITS_FRESH, exp.select(*columns).from_(build.table(traits)).where(exp.false()))
        layer: exp.Query = build.query(traits, {}, as_of, tree=per_user)  # type: ignore[assignment]
    else:
        fresh = build.query(traits, {md.UNIVERSE: build.only(md.UNIVERSE, users, as_of)}, as_of, tree=per_user)
        build.create_temp(_TRAITS_FRESH, fresh)
        old = exp.select(*columns).from_(build.table(traits)).where(user_in(users))
        fresh_rows = exp.select(*columns).from_(_TRAITS_FRESH)
        moved = exp.union(exp.except_(fresh_rows, old), exp.except_(old.copy(), fresh_rows.copy()), distinct=False)
        if not build.rows(exp.select(exp.Count(this=exp.Star())).from_(exp.Subquery(this=moved, alias=exp.TableAlias(this=sx.ident("m")))))[0][0]:
            return None  # no user's own traits changed: nor do the ranks
        kept = exp.select(*columns).from_(build.table(traits)).where(exp.Not(this=user_in(users)))
        layer = exp.union(kept, fresh_rows.copy(), distinct=False)
    if ctes:
        ctes[0].set("this", layer)
        new = build.query(traits, {}, as_of, tree=tree)
    else:
        new = layer
    build.run(exp.Create(kind="TABLE", this=build.table(_NEW_TRAITS), replace=True, expression=new))
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
