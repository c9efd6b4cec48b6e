"""Uploaded lists in the graph: their keys normalized once per build (``int_upload_keys``),
the users they match (``int_upload_members``), and a segment's test of membership.
"""

from __future__ import annotations

from sqlglot import exp

from segments import keys
from segments.compiler import sqlexpr as sx
from segments.spec import model as m
from segments.compiler.graph import (
    aliased, ColumnDoc, INTERMEDIATE, Model, TARGET_SCHEMA_SOURCE, UPLOAD_KEYS, UPLOAD_MEMBERS, UPLOADS_TABLE,
    USERS,
)


def upload_key_column(match_on: str) -> str:
    return f"{match_on}_key"


def upload_predicate(segment: str, upload: m.Upload) -> exp.Expression:
    """Users on the segment's list in the warehouse: a semi-join on the list's
    members, no key of the list in the SQL."""
    members = (
        exp.select("user_id")
        .from_(sx.model_ref(UPLOAD_MEMBERS))
        .where(exp.EQ(this=sx.col("segment_name"), expression=sx.literal(segment)))
        .where(exp.EQ(this=sx.col("match_on"), expression=sx.literal(upload.match_on)))
    )
    return sx.col("user_id").isin(query=members)


def upload_models(catalog: m.Catalog, match_ons: list[str]) -> list[Model]:
    """``int_upload_keys``: each user's key for every ``match_on`` an upload uses,
    normalized as uploaded keys are (:mod:`segments.keys`); ``int_upload_members``:
    the users each list names. The membership reads models only, so an incremental
    refresh reads the lists as the last build joined them (an upload makes the next
    build a full one)."""
    columns = [
        exp.alias_(keys.sql_key(match_on, sx.col(match_on), catalog.default_country), upload_key_column(match_on))
        for match_on in match_ons
    ]
    users_keys = Model(
        UPLOAD_KEYS, INTERMEDIATE, exp.select("user_id", *columns).from_(sx.model_ref(USERS)),
        "Every user's keys uploaded lists match on (emails trimmed and lower-cased, phones as E.164 for the "
        "catalog's default_country, else their digits).",
        columns=[ColumnDoc("user_id", "The user's key.")],
        # a view: the members' join computes each key column it needs as it goes, where
        # a table wrote every user's keys (a million rows: half a second) to be read once
        materialized="view",
    )
    parts: list[exp.Query] = []
    for match_on in match_ons:
        listed = aliased(sx.source_ref(TARGET_SCHEMA_SOURCE, UPLOADS_TABLE), "l")
        on_key = exp.EQ(this=sx.col("upload_key", "l"), expression=sx.col(upload_key_column(match_on), "k"))
        parts.append(
            exp.select(sx.col("segment_name", "l"), sx.col("match_on", "l"), sx.col("user_id", "k"))
            .from_(aliased(sx.model_ref(UPLOAD_KEYS), "k"))
            .join(listed, on=on_key)
            .where(exp.EQ(this=sx.col("match_on", "l"), expression=sx.literal(match_on)))
        )
    query = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False)
    members = Model(
        UPLOAD_MEMBERS, INTERMEDIATE, query,
        "The users each uploaded list (segment_uploads) names, by the list's match_on.",
        columns=[ColumnDoc("segment_name", "The upload segment."), ColumnDoc("user_id", "A user on its list.")],
    )
    return [users_keys, members]
