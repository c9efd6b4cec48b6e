"""Data checks as pandera schemas: the input tables and each segment's membership.

The input schemas follow ``_catalog.yml``: the users key is unique and never missing,
every column has a value of its declared type, no timestamp is absurdly far in the
future, and every event has a user, a time and a non-empty name. The membership schema
says what a published segment must look like: one row per member, flagged holdout
only when the spec keeps one, all evaluated at one instant.

:func:`problems` turns a validation into readable lines, for the Dagster UI.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from segments.spec import model as m

#: How far past the current time a timestamp may lie before it counts as absurd
#: (clocks drift, and a day of slack never hides a wrong unit or century).
FUTURE_SLACK = dt.timedelta(days=1)

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "timestamp": (dt.datetime, dt.date),
}
_DTYPE_TESTS: dict[str, Callable[[pd.Series], bool]] = {
    "string": pd.api.types.is_string_dtype,
    "number": lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s),
    "boolean": pd.api.types.is_bool_dtype,
    "timestamp": pd.api.types.is_datetime64_any_dtype,
}


def _is_type(kind: str, series: pd.Series) -> bool:
    """Whether a column holds ``kind`` values: by its dtype, or value by value when
    the dtype says nothing (``object``, as for a column of nulls).

    >>> _is_type("number", pd.Series([1, 2.5]))
    True
    >>> _is_type("number", pd.Series(["1"]))
    False
    >>> _is_type("boolean", pd.Series([None, None], dtype=object))
    True
    """
    if series.dtype != object:
        return _DTYPE_TESTS[kind](series)
    values = series.dropna()
    if kind == "number":
        return all(isinstance(v, _PYTHON_TYPES[kind]) and not isinstance(v, bool) for v in values)
    return all(isinstance(v, _PYTHON_TYPES[kind]) for v in values)


def _type_check(kind: str) -> pa.Check:
    return pa.Check(lambda s: _is_type(kind, s), name=f"type {kind}", error=f"values are not of type {kind}")


def _not_after(limit: dt.datetime) -> pa.Check:
    return pa.Check(
        lambda s: pd.to_datetime(s).isna() | (pd.to_datetime(s) <= pd.Timestamp(limit)),
        name="not in the future",
        error=f"timestamps after {limit.isoformat(sep=' ')}",
    )


def _column(kind: str, now: dt.datetime, *, nullable: bool = True, unique: bool = False) -> pa.Column:
    checks = [_type_check(kind)]
    if kind == "timestamp":
        checks.append(_not_after(now + FUTURE_SLACK))
    return pa.Column(checks=checks, nullable=nullable, unique=unique)


def users_schema(catalog: m.Catalog, now: dt.datetime) -> pa.DataFrameSchema:
    """The users table: a unique, non-null key and typed attributes."""
    users = catalog.users
    key_check = pa.Check(lambda s: _is_type("string", s) or _is_type("number", s), name="type key",
                         error="keys are neither text nor numbers")
    columns = {users.key: pa.Column(checks=[key_check], nullable=False, unique=True)}
    if users.created_at:
        columns[users.created_at] = _column("timestamp", now)
    for attribute in users.attributes.values():
        columns.setdefault(attribute.column, _column(attribute.type, now))
    return pa.DataFrameSchema(columns, name=str(users.relation))


def events_schema(catalog: m.Catalog, now: dt.datetime) -> pa.DataFrameSchema:
    """The events table: a user, a time and a non-empty name on every event."""
    events = catalog.events
    non_empty = pa.Check(lambda s: s.str.strip().str.len() > 0, name="non-empty", error="empty event names")
    columns = {
        events.user_key: pa.Column(nullable=False),
        events.name: pa.Column(checks=[_type_check("string"), non_empty], nullable=False),
        events.timestamp: _column("timestamp", now, nullable=False),
    }
    for prop in events.properties.values():
        columns.setdefault(prop.column, _column(prop.type, now))
    return pa.DataFrameSchema(columns, name=str(events.relation))


def membership_schema(segment: str, holdout_pct: float, arms: tuple[str, ...] = ()) -> pa.DataFrameSchema:
    """One segment's rows of ``segment_membership``: with an experiment's ``arms``,
    every member has one of them; without, none has an arm.

    >>> frame = pd.DataFrame({"segment_name": ["vip"], "user_id": ["u1"], "is_holdout": [True],
    ...                       "as_of": [pd.Timestamp("2026-01-15")], "arm": [None]})
    >>> problems(membership_schema("vip", 0), frame)
    ['is_holdout: holdout members in a segment without holdout (1 row(s), e.g. True)']
    """
    checks = [pa.Check(lambda s: s.nunique() <= 1, name="one as_of", error="members evaluated at several instants")]
    holdout_checks = []
    if not holdout_pct:
        holdout_checks.append(
            pa.Check(lambda s: ~s.astype(bool), name="no holdout", error="holdout members in a segment without holdout")
        )
    columns = {
        "segment_name": pa.Column(checks=[pa.Check.isin([segment])], nullable=False),
        "user_id": pa.Column(checks=[_type_check("string")], nullable=False, unique=True),
        "is_holdout": pa.Column(checks=[_type_check("boolean"), *holdout_checks], nullable=False),
        "as_of": pa.Column(checks=[_type_check("timestamp"), *checks], nullable=False),
    }
    if arms:
        columns["arm"] = pa.Column(checks=[pa.Check.isin(list(arms))], nullable=False)
    else:
        columns["arm"] = pa.Column(
            checks=[pa.Check(lambda s: s.isna(), name="no arm", error="arms in a segment without an experiment")],
            nullable=True,
        )
    return pa.DataFrameSchema(columns, name=f"segment_membership of {segment}")


# pandera's names for its built-in checks, as a reader would say them
_BUILT_IN = {
    "not_nullable": "missing values",
    "field_uniqueness": "duplicate values",
    "column_in_dataframe": "missing column",
}


def problems(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> list[str]:
    """Every way ``frame`` breaks ``schema``, one line per column and check.

    >>> schema = pa.DataFrameSchema({"k": pa.Column(nullable=False, unique=True), "v": pa.Column()})
    >>> problems(schema, pd.DataFrame({"k": ["a", "a", None], "v": 1}))
    ['k: missing values (1 row(s), e.g. nan)', 'k: duplicate values (2 row(s), e.g. a)']
    >>> problems(schema, pd.DataFrame({"k": ["a"]}))
    ['v: missing column']
    >>> problems(schema, pd.DataFrame({"k": ["a"], "v": 1}))
    []
    """
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        found: list[str] = []
        cases = errors.failure_cases
        for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
            message = _BUILT_IN.get(check, check)  # a check's own error text otherwise
            if check == "column_in_dataframe":  # its failure cases are the missing columns
                found += [f"{case}: {message}" for case in group["failure_case"]]
            else:
                found.append(f"{column}: {message} ({len(group)} row(s), e.g. {group['failure_case'].iloc[0]})")
        return found
    return []
