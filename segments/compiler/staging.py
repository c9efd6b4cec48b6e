"""Staging models over the declared sources (``stg_users``, ``stg_events``) and the
universe (``int_segment_universe``).
"""

from __future__ import annotations

from sqlglot import exp

from segments.compiler import sqlexpr as sx
from segments.spec import model as m
from segments.compiler.graph import (
    ColumnDoc, EVENTS, INTERMEDIATE, Model, select_renamed, source_for, STAGING, UNIVERSE, USERS,
)


def staging_models(catalog: m.Catalog) -> list[Model]:
    users, events = catalog.users, catalog.events
    user_cols: list[tuple[str, exp.Expression]] = [
        ("user_id", exp.cast(sx.col(users.key), exp.DataType.Type.VARCHAR))
    ]
    if users.created_at:
        user_cols.append(("created_at", sx.col(users.created_at)))
    user_cols += [(a.name, sx.col(a.column)) for a in users.attributes.values() if a.name not in ("user_id", "created_at")]
    stg_users = exp.select(*select_renamed(user_cols)).from_(source_for(users.relation))
    event_cols: list[tuple[str, exp.Expression]] = [
        ("user_id", exp.cast(sx.col(events.user_key), exp.DataType.Type.VARCHAR)),
        ("event_name", sx.col(events.name)),
        ("occurred_at", sx.col(events.timestamp)),
    ]
    event_cols += [(p.name, sx.col(p.column)) for p in events.properties.values()]
    stg_events = exp.select(*select_renamed(event_cols)).from_(source_for(events.relation))
    user_docs = [ColumnDoc("user_id", "The user's key, as text.", ("unique", "not_null"))]
    return [
        Model(USERS, STAGING, stg_users, f"Users from {users.relation}, columns renamed as the catalog names them.", columns=user_docs),
        Model(EVENTS, STAGING, stg_events, f"Events from {events.relation}, columns renamed as the catalog names them."),
    ]


def universe_model(catalog: m.Catalog) -> Model:
    columns = ["user_id"] + (["created_at"] if catalog.users.created_at else [])
    columns += [a for a in catalog.users.attributes if a not in ("user_id", "created_at")]
    universe = exp.select(*columns).from_(sx.model_ref(USERS))
    if catalog.users.created_at:
        # SPEC 2.2: a user created after as_of is in no segment; no created_at stays
        universe = universe.where(
            sx.or_(
                exp.Is(this=sx.col("created_at"), expression=exp.null()),
                exp.LTE(this=sx.col("created_at"), expression=sx.as_of()),
            )
        )
    # Events need no filter by the universe: measures are per user, and every reader
    # starts from the universe and joins them (SPEC 2.2's "events of users outside the
    # universe are ignored").
    return Model(
        UNIVERSE, INTERMEDIATE, universe,
        "The users segments are evaluated over: everyone not created after as_of.",
        columns=[ColumnDoc("user_id", "The user's key.")],  # stg_users' key is tested
        materialized="view",
    )
