"""The graph of dbt models a project compiles to: the models' names, a model (its query,
folder, columns and tests) and the compiled project.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlglot import exp

from segments import keys
from segments.compiler import measures as ms
from segments.compiler import sqlexpr as sx
from segments.spec import model as m


STAGING, INTERMEDIATE, SEGMENTS, MARTS = "staging", "intermediate", "segments", "marts"


USERS, EVENTS = "stg_users", "stg_events"


UNIVERSE = "int_segment_universe"


MEASURES, SEQUENCES = "int_user_event_measures", "int_user_event_sequences"


BASE, TRAITS, MEMBERSHIP = "int_segment_base", "user_traits", "segment_membership"


#: Every segment's rule as a bit of a BIGINT word, one row per user of the universe.
FLAGS = "int_segment_flags"


#: Traits and follow-up counts per user: narrow, so the base joins one table for both.
USER_TRAITS_AND_FOLLOWUPS = "int_user_traits"


TRAIT_PREFIX = "trait_"


#: The source of catalog tables named without a schema: they live in the schema of
#: the engine's target (``main`` on DuckDB, ``public`` on PostgreSQL, ``default`` on Spark).
TARGET_SCHEMA_SOURCE = "main"


SEGMENT_PREFIX = "seg_"


#: The longest relation name every engine keeps whole (PostgreSQL's identifier limit).
MAX_RELATION_NAME = 63


_KEPT_WHEN_SHORTENED = MAX_RELATION_NAME - len(SEGMENT_PREFIX) - 9  # "_" + 8 hex digits


def segment_model_name(segment: str) -> str:
    """The model and relation of a segment: ``seg_<name>``, on every engine.

    A segment name may have 63 characters, so ``seg_<name>`` may not fit the 63 that
    PostgreSQL keeps of an identifier. Such a name keeps its first 50 characters and
    ends with the first 8 hex digits of the md5 of the whole name: still readable,
    still unique, and the same on every engine.

    >>> segment_model_name("abandoned_cart")
    'seg_abandoned_cart'
    >>> long = "customers_who_abandoned_a_cart_and_never_came_back_winback_tier"
    >>> shortened = segment_model_name(long)
    >>> shortened, len(shortened)
    ('seg_customers_who_abandoned_a_cart_and_never_came_back_3d07d2fc', 63)
    """
    name = SEGMENT_PREFIX + segment
    if len(name) <= MAX_RELATION_NAME:
        return name
    digest = hashlib.md5(segment.encode()).hexdigest()[:8]
    return f"{SEGMENT_PREFIX}{segment[:_KEPT_WHEN_SHORTENED]}_{digest}"


@dataclass(frozen=True)
class ColumnDoc:
    name: str
    description: str = ""
    tests: tuple[str, ...] = ()


@dataclass
class Model:
    """One dbt model: its query and what its YAML says about it."""

    name: str
    folder: str
    query: exp.Query
    description: str
    spec_path: str | None = None  # the spec file it comes from, for the header
    columns: list[ColumnDoc] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    tests: tuple[dict[str, object], ...] = ()  # model-level dbt data tests
    #: ``view`` for a model that only renames or filters what another holds; None
    #: keeps its folder's materialization (dbt_project.yml).
    materialized: str | None = None
    #: Built in buckets of users on DuckDB (:mod:`.buckets`) when not 0: each model it
    #: reads is narrowed to the bucket being built, and a table is built one bucket per
    #: statement, as many as its users times this many columns per user need.
    bucket_columns: int = 0

    def refs(self) -> set[str]:
        return set(self.refs_all())

    def refs_all(self) -> list[str]:
        """The models this one reads, once per place it reads them."""
        return [t.meta["model"] for t in self.query.find_all(exp.Table) if "model" in t.meta]


@dataclass(frozen=True)
class Quantile:
    """A quantile trait: column ``name`` scores column ``of`` in ``buckets`` buckets."""

    name: str
    of: str
    buckets: int


@dataclass
class CompiledProject:
    models: list[Model]  # dependency order
    sources: dict[str, list[str]]  # source (schema) -> tables
    catalog: m.Catalog
    segments: list[str]  # segment names, in spec order
    #: each segment's rule over the base (a derived rule reads the flags of the
    #: segments it names), as ``int_segment_flags`` evaluates it
    rules: dict[str, exp.Expression] = field(default_factory=dict)
    #: the distinct measures and follow-ups the measure models compute
    measures: ms.MeasureSet = field(default_factory=ms.MeasureSet)
    #: the quantile traits of ``int_user_traits``, a trait after the one it ranks
    quantiles: list[Quantile] = field(default_factory=list)

    def model(self, name: str) -> Model:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


def aliased(table: exp.Table, alias: str) -> exp.Table:
    table.set("alias", exp.TableAlias(this=sx.ident(alias)))
    return table


def source_for(relation: m.Relation) -> exp.Table:
    return sx.source_ref(relation.schema or TARGET_SCHEMA_SOURCE, relation.name)


def select_renamed(pairs: Iterable[tuple[str, exp.Expression]]) -> list[exp.Expression]:
    """``expr AS name``, or the bare column when it already has that name."""
    out: list[exp.Expression] = []
    for name, expression in pairs:
        if isinstance(expression, exp.Column) and expression.name == name:
            out.append(expression)
        else:
            out.append(exp.alias_(expression, name))
    return out


#: The keys uploaded lists are matched on, per user: computed once per build.
UPLOAD_KEYS = "int_upload_keys"


#: Every uploaded list's members: (segment_name, match_on, user_id), one join per build.
UPLOAD_MEMBERS = "int_upload_members"


#: The warehouse table of every uploaded list (:mod:`segments.uploads`), a dbt source.
UPLOADS_TABLE = "segment_uploads"


def closure(start: Iterable[str], reads: Callable[[str], Iterable[str]]) -> set[str]:
    """``start`` and everything they read, directly or not (segments, traits).

    >>> sorted(closure(["a"], {"a": ["b"], "b": ["c", "a"], "c": []}.__getitem__))
    ['a', 'b', 'c']
    """
    found: set[str] = set()
    stack = list(start)
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(reads(name))
    return found
