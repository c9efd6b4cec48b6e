"""A validated project as a graph of dbt models, each a sqlglot query.

The graph, in dependency order::

    stg_users, stg_events                 staging: rename catalog columns (views)
    int_segment_universe                  users not created after as_of (view)
    int_user_event_measures               every measure of every spec: one pass over the events
    int_user_event_sequences              follow-up counts for sequences (if any)
    user_traits                           computed traits, quantile scores
    int_segment_base                      one row per user: attributes, measures, traits (view)
    segment_membership                    every segment's members, from one pass over the base
    seg_<name>                            one segment's rows of the membership (views)

Segments become predicates over ``int_segment_base``, evaluated together in
``segment_membership`` as one boolean column each (a derived segment reads the column
of the segment it names), so many segments cost one read of the events and one of the
base, not one query each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlglot import exp

from segments import keys
from segments.compiler import experiments
from segments.compiler import measures as ms
from segments.compiler import predicates as pr
from segments.compiler import sqlexpr as sx
from segments.errors import SegmentsError
from segments.spec import model as m

STAGING, INTERMEDIATE, SEGMENTS, MARTS = "staging", "intermediate", "segments", "marts"

USERS, EVENTS = "stg_users", "stg_events"
UNIVERSE = "int_segment_universe"
MEASURES, SEQUENCES = "int_user_event_measures", "int_user_event_sequences"
BASE, TRAITS, MEMBERSHIP = "int_segment_base", "user_traits", "segment_membership"
#: Every segment's rule as a boolean column, one row per user of the universe.
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


def _aliased(table: exp.Table, alias: str) -> exp.Table:
    table.set("alias", exp.TableAlias(this=sx.ident(alias)))
    return table


def _source_for(relation: m.Relation) -> exp.Table:
    return sx.source_ref(relation.schema or TARGET_SCHEMA_SOURCE, relation.name)


def _select_renamed(pairs: Iterable[tuple[str, exp.Expression]]) -> list[exp.Expression]:
    """``expr AS name``, or the bare column when it already has that name."""
    out: list[exp.Expression] = []
    for name, expression in pairs:
        if isinstance(expression, exp.Column) and expression.name == name:
            out.append(expression)
        else:
            out.append(exp.alias_(expression, name))
    return out


class _BaseResolver:
    """Resolves names in segment rules to columns of ``int_segment_base``."""

    def __init__(self, project: m.Project, measure_set: ms.MeasureSet):
        self.project = project
        self.measures = measure_set
        self.traits_used: set[str] = set()

    def attribute(self, name: str) -> pr.Value:
        return pr.Value(sx.col(name))

    def trait(self, name: str) -> pr.Value:
        self.traits_used.add(name)
        return pr.Value(sx.col(TRAIT_PREFIX + name), nullable=_trait_nullable(self.project.traits[name]))

    def property(self, name: str) -> pr.Value:
        raise ValueError("property conditions only appear inside an event's where")

    def event(self, condition: m.EventCondition, negate: bool) -> exp.Expression:
        column = self.measures.measure(condition.measure)
        measured = pr.test(condition.test, pr.Value(sx.col(column.name), column.nullable), negate)
        if condition.sequence is None:
            return measured
        follow = self.measures.followups(condition.measure.filter, condition.sequence)
        has_anchor = exp.Not(this=exp.Is(this=sx.col(follow.anchor.name), expression=exp.null()))
        count = sx.col(follow.name)
        zero = exp.Literal.number(0)
        # followed_by: some follow-up; not_followed_by: none. Both need an anchor t0.
        followed = exp.GT(this=count, expression=zero)
        if not condition.sequence.followed:
            followed = exp.EQ(this=count, expression=zero)
        if not negate:
            return sx.and_(measured, has_anchor, followed)
        no_anchor = exp.Is(this=sx.col(follow.anchor.name), expression=exp.null())
        not_followed = pr.complement(followed)
        return sx.or_(sx.paren(measured), no_anchor, not_followed)

    def segment(self, name: str, negate: bool = False) -> exp.Expression:
        # the segment's membership column of the same pass (see _membership_model)
        member = sx.col(segment_model_name(name))
        return exp.Not(this=member) if negate else member


def _trait_nullable(trait: m.Trait) -> bool:
    if isinstance(trait, m.MeasureTrait):
        return trait.measure.kind not in ms.ZERO_ON_NONE
    return True


def _needed_traits(project: m.Project, names: set[str]) -> list[str]:
    """The traits ``names`` read, with the traits their quantiles rank, in file order."""
    needed: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        trait = project.traits[name]
        if isinstance(trait, m.QuantileTrait):
            stack.append(trait.of)
    return [name for name in project.traits if name in needed]


def segment_closure(project: m.Project, wanted: Iterable[str]) -> list[str]:
    """``wanted`` and every segment they read, in spec order."""
    by_name = {name: spec for spec in project.segments for name in spec.segment_names()}
    keep: set[str] = set()
    stack = list(wanted)
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        if name not in by_name:
            raise SegmentsError(f"unknown segment {name!r}")
        keep.add(name)
        spec = by_name[name]
        stack.extend(spec.segment_names())  # tiers are computed together
        for condition in _spec_conditions(spec):
            stack.extend(_segment_refs(condition))
    return [n for n in project.segment_names() if n in keep]


def _spec_conditions(spec: m.SegmentSpec) -> list[m.Condition]:
    conditions = [spec.where] if spec.where is not None else []
    conditions += [tier.where for tier in spec.tiers if tier.where is not None]
    return conditions


def _segment_refs(condition: m.Condition) -> list[str]:
    if isinstance(condition, m.SegmentCondition):
        return [condition.segment]
    if isinstance(condition, (m.All, m.Any)):
        return [r for item in condition.items for r in _segment_refs(item)]
    if isinstance(condition, m.Not):
        return _segment_refs(condition.item)
    return []


#: The keys uploaded lists are matched on, per user: computed once per build.
UPLOAD_KEYS = "int_upload_keys"
#: Every uploaded list's members: (segment_name, match_on, user_id), one join per build.
UPLOAD_MEMBERS = "int_upload_members"
#: The warehouse table of every uploaded list (:mod:`segments.uploads`), a dbt source.
UPLOADS_TABLE = "segment_uploads"


def upload_key_column(match_on: str) -> str:
    return f"{match_on}_key"


def _upload_predicate(segment: str, upload: m.Upload) -> exp.Expression:
    """Users on the segment's list in the warehouse: a semi-join on the list's
    members, no key of the list in the SQL."""
    members = (
        exp.select("user_id")
        .from_(sx.model_ref(UPLOAD_MEMBERS))
        .where(exp.EQ(this=sx.col("segment_name"), expression=sx.literal(segment)))
        .where(exp.EQ(this=sx.col("match_on"), expression=sx.literal(upload.match_on)))
    )
    return sx.col("user_id").isin(query=members)


def _upload_models(catalog: m.Catalog, match_ons: list[str]) -> list[Model]:
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
        "catalog's default_country, else their digits), computed once per build.",
        columns=[ColumnDoc("user_id", "The user's key.")],
    )
    parts: list[exp.Query] = []
    for match_on in match_ons:
        listed = _aliased(sx.source_ref(TARGET_SCHEMA_SOURCE, UPLOADS_TABLE), "l")
        on_key = exp.EQ(this=sx.col("upload_key", "l"), expression=sx.col(upload_key_column(match_on), "k"))
        parts.append(
            exp.select(sx.col("segment_name", "l"), sx.col("match_on", "l"), sx.col("user_id", "k"))
            .from_(_aliased(sx.model_ref(UPLOAD_KEYS), "k"))
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


def _holdout(segment: str, percent: float | None) -> exp.Expression:
    """SPEC 2.6: the first 8 hex digits of md5(name:user_id) as an integer, mod 100 < H."""
    if not percent:
        return exp.false()
    return exp.LT(this=experiments.bucket(segment, 100), expression=sx.literal(percent))


def _segment_queries(spec: m.SegmentSpec, resolver: _BaseResolver) -> list[tuple[str, exp.Expression]]:
    """Each segment a spec defines with its predicate over the base."""
    narrow = pr.predicate(spec.where, resolver) if spec.where is not None else None
    if spec.upload is not None:
        narrow = sx.and_(_upload_predicate(spec.name, spec.upload), *(p for p in [narrow] if p is not None))
    if not spec.tiers:
        return [(spec.name, narrow if narrow is not None else exp.true())]
    out: list[tuple[str, exp.Expression]] = []
    for index, (tier, name) in enumerate(zip(spec.tiers, spec.segment_names())):
        parts = [sx.paren(p) for p in [narrow] if p is not None]
        if tier.where is not None:
            parts.append(sx.paren(pr.predicate(tier.where, resolver)))
        # First match wins. An earlier tier's model holds exactly the narrowed users
        # its rule took, so excluding its members excludes what it matched.
        for earlier in spec.segment_names()[:index]:
            parts.append(resolver.segment(earlier, negate=True))
        out.append((name, sx.and_(*parts)))
    return out


def _spec_path(project: m.Project, spec: m.SegmentSpec) -> str:
    try:
        return str(spec.path.relative_to(project.specs_dir.parent))
    except ValueError:
        return str(spec.path)


def compile_project(project: m.Project, only: Iterable[str] | None = None) -> CompiledProject:
    """Build every model for ``project`` (or just what the segments ``only`` need).

    Raises:
        SegmentsError: when a name collides with a column the compiler makes.
    """
    catalog = project.catalog
    names = segment_closure(project, only) if only is not None else list(project.segment_names())
    measure_set = ms.MeasureSet()
    resolver = _BaseResolver(project, measure_set)

    rules: list[tuple[m.SegmentSpec, str, exp.Expression]] = []
    for spec in project.segments:
        if not set(spec.segment_names()) & set(names):
            continue
        rules += [(spec, name, where) for name, where in _segment_queries(spec, resolver)]

    trait_names = _needed_traits(project, resolver.traits_used) if only is not None else list(project.traits)
    for trait_name in trait_names:
        trait = project.traits[trait_name]
        if isinstance(trait, m.MeasureTrait):
            measure_set.measure(trait.measure)

    _check_collisions(catalog, trait_names, measure_set, [name for _, name, _ in rules])
    models = _staging_models(catalog)
    models.append(_universe(catalog))
    measure_models = _measure_models(catalog, measure_set)
    models += measure_models
    has_measures = bool(measure_set.measures)
    has_sequences = bool(measure_set.followup_columns)
    models.append(_traits_model(project, trait_names, measure_set, has_measures, has_sequences))
    models.append(_user_traits_model(project, trait_names))
    models.append(_base_model(catalog, trait_names, measure_set, has_measures, has_sequences))
    match_ons = sorted({spec.upload.match_on for spec, _, _ in rules if spec.upload is not None})
    if match_ons:
        models += _upload_models(catalog, match_ons)
    segment_models = [_segment_model(project, spec, name) for spec, name, _ in rules]
    _check_relation_names(segment_models)
    if rules:
        models.append(_flags_model(rules))
    models.append(_membership_model(rules))
    models += segment_models
    sources: dict[str, list[str]] = {}
    for relation in (catalog.users.relation, catalog.events.relation):
        tables = sources.setdefault(relation.schema or TARGET_SCHEMA_SOURCE, [])
        if relation.name not in tables:
            tables.append(relation.name)
    if match_ons:
        sources.setdefault(TARGET_SCHEMA_SOURCE, []).append(UPLOADS_TABLE)
    quantiles = sorted(
        (Quantile(name, trait.of, trait.buckets) for name in trait_names if isinstance(trait := project.traits[name], m.QuantileTrait)),
        key=lambda q: _trait_depth(project, q.name),
    )
    return CompiledProject(models, sources, catalog, names, {name: where for _, name, where in rules}, measure_set, quantiles)


def _check_collisions(catalog: m.Catalog, trait_names: list[str], measure_set: ms.MeasureSet, segments: list[str]) -> None:
    made = {TRAIT_PREFIX + t for t in trait_names} | {c.name for c in measure_set.measures}
    made |= {c.name for c in measure_set.followup_columns} | {"user_id", "created_at"}
    made |= {segment_model_name(name) for name in segments}  # membership columns
    for name in catalog.users.attributes:
        if name in made and name not in ("user_id", "created_at"):
            raise SegmentsError(f"attribute {name!r} collides with a column the compiler makes; rename it")


def _check_relation_names(segment_models: list[Model]) -> None:
    seen: dict[str, object] = {}
    for model in segment_models:
        segment = model.meta["segment"]
        if model.name in seen:
            raise SegmentsError(f"segments {seen[model.name]!r} and {segment!r} would share the relation {model.name}; rename one")
        seen[model.name] = segment


def _segment_model(project: m.Project, spec: m.SegmentSpec, name: str) -> Model:
    """``seg_<name>``: the segment's rows of ``segment_membership``, a view."""
    description = spec.description or f"Members of segment {name}."
    if spec.tiers:
        tier = name.split("__", 1)[1]
        description = f"{description.rstrip('.')}. Tier {tier} of {spec.name}."
    meta: dict[str, object] = {
        "segment": name,
        "spec": _spec_path(project, spec),
        "refresh": spec.refresh,
        "holdout_pct": spec.holdout or 0,
        "max_size_change_pct": spec.checks.max_size_change_pct,
    }
    if spec.owner:
        meta["owner"] = spec.owner
    if spec.experiment is not None:
        meta["experiment"] = {"name": spec.experiment.name, "arms": dict(spec.experiment.arms)}
    if spec.sync:
        meta["sync"] = list(dict.fromkeys(t.destination for t in spec.sync))  # arms may share one
    # Keys are tested once for all segments, on segment_membership: a test per
    # segment would cost a dbt node and a scan each.
    columns = [
        ColumnDoc("user_id", "A member of the segment."),
        ColumnDoc("is_holdout", "True for the control group, which is never synced."),
        ColumnDoc("as_of", "The instant the segment was evaluated at."),
        ColumnDoc("arm", "The member's experiment arm, if the spec has an experiment."),
    ]
    query = exp.select("user_id", "is_holdout", "as_of", "arm").from_(sx.model_ref(MEMBERSHIP)).where(
        exp.EQ(this=sx.col("segment_name"), expression=sx.literal(name))
    )
    return Model(
        segment_model_name(name), SEGMENTS, query, description, _spec_path(project, spec),
        columns, meta, spec.tags, materialized="segment_view",
    )


def _staging_models(catalog: m.Catalog) -> list[Model]:
    users, events = catalog.users, catalog.events
    user_cols: list[tuple[str, exp.Expression]] = [
        ("user_id", exp.cast(sx.col(users.key), exp.DataType.Type.VARCHAR))
    ]
    if users.created_at:
        user_cols.append(("created_at", sx.col(users.created_at)))
    user_cols += [(a.name, sx.col(a.column)) for a in users.attributes.values() if a.name not in ("user_id", "created_at")]
    stg_users = exp.select(*_select_renamed(user_cols)).from_(_source_for(users.relation))
    event_cols: list[tuple[str, exp.Expression]] = [
        ("user_id", exp.cast(sx.col(events.user_key), exp.DataType.Type.VARCHAR)),
        ("event_name", sx.col(events.name)),
        ("occurred_at", sx.col(events.timestamp)),
    ]
    event_cols += [(p.name, sx.col(p.column)) for p in events.properties.values()]
    stg_events = exp.select(*_select_renamed(event_cols)).from_(_source_for(events.relation))
    user_docs = [ColumnDoc("user_id", "The user's key, as text.", ("unique", "not_null"))]
    return [
        Model(USERS, STAGING, stg_users, f"Users from {users.relation}, columns renamed as the catalog names them.", columns=user_docs),
        Model(EVENTS, STAGING, stg_events, f"Events from {events.relation}, columns renamed as the catalog names them."),
    ]


def _universe(catalog: m.Catalog) -> Model:
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


def _not_null(column: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=column, expression=exp.null()))


def _measure_models(catalog: m.Catalog, measure_set: ms.MeasureSet) -> list[Model]:
    """The measures (one pass over the events) and the sequences' follow-ups."""
    out: list[Model] = []
    columns = measure_set.measures
    if columns:
        out.append(_measures_model(catalog, columns))
    followups = measure_set.followup_columns
    if followups:
        events = ms.EventRowResolver(catalog, table="e")
        names = sorted({n for c in followups for n in c.sequence.events})
        anchors = sorted({c.anchor.name for c in followups})
        query = (
            exp.select(sx.col("user_id", "e"), *[exp.alias_(ms.followup_count(c, events, "m"), c.name) for c in followups])
            .from_(_aliased(sx.model_ref(EVENTS), "e"))
            .join(_aliased(sx.model_ref(MEASURES), "m"), on=exp.EQ(this=sx.col("user_id", "m"), expression=sx.col("user_id", "e")))
            .where(ms.event_names_match(tuple(names), sx.col("event_name", "e")))
            .where(exp.LTE(this=sx.col("occurred_at", "e"), expression=sx.as_of()))
            .where(sx.or_(*[_not_null(sx.col(a, "m")) for a in anchors]))
            .group_by(sx.col("user_id", "e"))
        )
        # keys unique by construction (GROUP BY user_id) carry no test: a test costs a
        # dbt node and a scan; the users' key is tested once, on stg_users
        docs = [ColumnDoc("user_id", "A user with an anchor event and a candidate follow-up.")]
        docs += [ColumnDoc(c.name, f"Follow-up events after {c.anchor.name}: {_describe_sequence(c.sequence)}.") for c in followups]
        out.append(Model(
            SEQUENCES, INTERMEDIATE, query,
            "Follow-up events after each sequence's anchor (its latest qualifying event), in one pass.",
            columns=docs,
        ))
    return out


def event_names(columns: list[ms.MeasureColumn]) -> list[str]:
    return sorted({n for c in columns for n in c.measure.filter.events})


def relevant_events(names: Iterable[str]) -> exp.Expression:
    """The events some measure reads (``names``). An event without a user belongs to
    no user of the universe."""
    return sx.and_(ms.event_names_match(tuple(names), sx.col("event_name")), _not_null(sx.col("user_id")))


def _measures_model(catalog: m.Catalog, columns: list[ms.MeasureColumn]) -> Model:
    """Every measure of every spec and trait from GROUP BY user_id scans of the events
    they read (one, unless there are many measures: :func:`.measures.scan_groups`);
    active days from a narrow scan of their own (see :mod:`.measures`)."""
    resolver = ms.EventRowResolver(catalog)
    days = [c for c in columns if c.measure.kind == "active_days"]
    parts: list[tuple[str, exp.Query, list[ms.MeasureColumn]]] = []
    for index, group in enumerate(ms.scan_groups([c for c in columns if c.measure.kind != "active_days"])):
        scan = (
            exp.select("user_id", *[exp.alias_(ms.aggregate(c, resolver), c.name) for c in group])
            .from_(sx.model_ref(EVENTS))
            .where(relevant_events(event_names(group)))
            .where(exp.LTE(this=sx.col("occurred_at"), expression=sx.as_of()))
            .group_by("user_id")
        )
        parts.append((f"e{index}", scan, group))
    if days:
        parts.append(("d", ms.active_days_query(days, sx.model_ref(EVENTS), resolver), days))
    if len(parts) == 1:
        query: exp.Query = parts[0][1]
        users = "A user with at least one relevant event."
    else:
        # one scan holds every user with a relevant event when it reads every event
        # name (the active days read no others); else the universe holds them all
        first_reads_all = len(parts) == 2 and days and set(event_names(parts[0][2])) >= set(event_names(columns))
        if first_reads_all:
            driver, joined = exp.Subquery(this=parts[0][1], alias=exp.TableAlias(this=sx.ident("e0"))), parts[1:]
            key, users = sx.col("user_id", "e0"), "A user with at least one relevant event."
        else:
            driver, joined = _aliased(sx.model_ref(UNIVERSE), "u"), parts
            key, users = sx.col("user_id", "u"), "A user of the universe."
        source = {c.name: alias for alias, _, group in parts for c in group}
        query = exp.select(key.copy(), *[sx.col(c.name, source[c.name]) for c in columns]).from_(driver)
        for alias, part, _ in joined:
            query = query.join(
                exp.Subquery(this=part, alias=exp.TableAlias(this=sx.ident(alias))),
                on=exp.EQ(this=sx.col("user_id", alias), expression=key.copy()), join_type="left",
            )
    docs = [ColumnDoc("user_id", users)]
    docs += [ColumnDoc(c.name, _describe_measure(c.measure)) for c in columns]
    return Model(
        MEASURES, INTERMEDIATE, query,
        "Every event measure of every segment and trait, in as few passes over the events as they allow.",
        columns=docs,
    )


def _describe_measure(measure: m.Measure) -> str:
    what = measure.kind + (f" of {measure.property}" if measure.property else "")
    text = f"{what} over events {', '.join(measure.filter.events)}"
    window = measure.filter.window
    if window is not None:
        text += f", {_describe_window(window)}"
    if measure.filter.where is not None:
        text += ", filtered by properties"
    return text


def _describe_window(window: m.Window) -> str:
    if isinstance(window, m.WithinWindow):
        return f"within {window.duration}"
    if isinstance(window, m.BetweenWindow):
        return f"between {window.start} and {window.end}"
    if isinstance(window, m.BeforeWindow):
        return f"before {window.at}"
    return f"after {window.at}"


def _describe_sequence(sequence: m.Sequence) -> str:
    text = f"{', '.join(sequence.events)}"
    if sequence.within is not None:
        text += f" within {sequence.within}"
    return text


def _measure_value(column: ms.MeasureColumn, table: str | None) -> exp.Expression:
    """A measure as users see it: 0 rather than missing where nothing qualified."""
    value = sx.col(column.name, table)
    if column.measure.kind in ms.ZERO_ON_NONE:
        return exp.Coalesce(this=value, expressions=[exp.Literal.number(0)])
    return value


def _quantile(of: exp.Expression, buckets: int) -> exp.Expression:
    """SPEC 1.5 score of ``of`` among every user's (:func:`quantile_score`, with a rank
    window), missing where the trait is missing."""
    rank = exp.Window(this=exp.Anonymous(this="RANK"), order=exp.Order(expressions=[exp.Ordered(this=of.copy(), nulls_first=False)]))
    below = exp.Paren(this=exp.Sub(this=rank, expression=exp.Literal.number(1)))
    score = quantile_score(below, exp.Window(this=exp.Count(this=of.copy())), buckets)
    case = exp.Case(ifs=[exp.If(this=exp.Not(this=exp.Is(this=of.copy(), expression=exp.null())), true=score)])
    return exp.cast(case, exp.DataType.Type.BIGINT)


def quantile_score(below: exp.Expression, count: exp.Expression, buckets: int) -> exp.Expression:
    """SPEC 1.5 score of a value that ``below`` of the ``count`` non-missing values are
    less than, in exact integer arithmetic rather than a floating percent rank:
    ``LEAST(b, 1 + FLOOR(below * b / (n - 1)))``, ``1`` when only one user has a value.
    The build ranks with a window; a refresh counts values (the same score).

    >>> from sqlglot import exp
    >>> quantile_score(exp.column("below"), exp.column("n"), 5).sql()
    'LEAST(5, 1 + COALESCE(FLOOR(CAST(below * 5 AS DOUBLE) / NULLIF((n - 1), 0)), 0))'
    """
    scaled = exp.Div(
        this=exp.cast(exp.Mul(this=below, expression=exp.Literal.number(buckets)), exp.DataType.Type.DOUBLE),
        expression=exp.Nullif(this=exp.Paren(this=exp.Sub(this=count, expression=exp.Literal.number(1))), expression=exp.Literal.number(0)),
    )
    # A plain LEAST call: sqlglot's Least node adds NULL guards this never-NULL score
    # does not need.
    return exp.Anonymous(this="LEAST", expressions=[
        exp.Literal.number(buckets),
        exp.Add(this=exp.Literal.number(1), expression=exp.Coalesce(this=exp.Floor(this=scaled), expressions=[exp.Literal.number(0)])),
    ])


def _trait_depth(project: m.Project, name: str) -> int:
    """0 for a measure trait, one more than the trait it ranks for a quantile."""
    trait = project.traits[name]
    return 0 if isinstance(trait, m.MeasureTrait) else _trait_depth(project, trait.of) + 1


def _traits_model(
    project: m.Project, trait_names: list[str], measure_set: ms.MeasureSet, has_measures: bool, has_sequences: bool
) -> Model:
    """``int_user_traits``: one column per trait, quantiles ranked in layers (a score
    may rank another score), and the sequences' follow-up counts. One narrow table for
    both keeps the base at two joins: a third made DuckDB's joins need more memory
    than a 512MB limit allows, where two spill."""
    level = {name: _trait_depth(project, name) for name in trait_names}
    measured: list[exp.Expression] = [sx.col("user_id", "u")]
    for name in trait_names:
        trait = project.traits[name]
        if isinstance(trait, m.MeasureTrait):
            measured.append(exp.alias_(_measure_value(measure_set.measure(trait.measure), "m"), name))
    followups = [c.name for c in measure_set.followup_columns]
    measured += [exp.alias_(exp.Coalesce(this=sx.col(f, "s"), expressions=[exp.Literal.number(0)]), f) for f in followups]
    query: exp.Select = exp.select(*measured).from_(_aliased(sx.model_ref(UNIVERSE), "u"))
    if has_measures:
        query = query.join(_aliased(sx.model_ref(MEASURES), "m"), on=exp.EQ(this=sx.col("user_id", "m"), expression=sx.col("user_id", "u")), join_type="left")
    if has_sequences:
        query = query.join(_aliased(sx.model_ref(SEQUENCES), "s"), on=exp.EQ(this=sx.col("user_id", "s"), expression=sx.col("user_id", "u")), join_type="left")
    max_level = max(level.values(), default=0)
    if max_level == 0:
        return _traits_doc(query, trait_names, followups, project)
    ctes = [("traits_0", query)]
    for depth_level in range(1, max_level + 1):
        scores = [
            exp.alias_(_quantile(sx.col(t.of), t.buckets), name)  # type: ignore[union-attr]
            for name in trait_names
            if level[name] == depth_level
            for t in [project.traits[name]]
        ]
        layer = exp.select("*", *scores).from_(f"traits_{depth_level - 1}")
        ctes.append((f"traits_{depth_level}", layer))
    final = exp.select("user_id", *trait_names, *followups).from_(f"traits_{max_level}")
    for cte_name, cte_query in ctes:
        final = final.with_(cte_name, as_=cte_query)
    return _traits_doc(final, trait_names, followups, project)


def _trait_docs(project: m.Project, trait_names: list[str]) -> list[ColumnDoc]:
    docs = [ColumnDoc("user_id", "A user of the universe.")]
    for name in trait_names:
        trait = project.traits[name]
        if isinstance(trait, m.QuantileTrait):
            docs.append(ColumnDoc(name, f"Quantile score 1-{trait.buckets} of {trait.of}; missing where {trait.of} is."))
        else:
            docs.append(ColumnDoc(name, _describe_measure(trait.measure)))
    return docs


def _traits_doc(query: exp.Query, trait_names: list[str], followups: list[str], project: m.Project) -> Model:
    docs = _trait_docs(project, trait_names) + [ColumnDoc(f, "Follow-up events after a sequence's anchor.") for f in followups]
    return Model(
        USER_TRAITS_AND_FOLLOWUPS, INTERMEDIATE, query,
        "Computed traits (_traits.yml) and the sequences' follow-up counts, one row per user of the universe.",
        columns=docs,
    )


def _user_traits_model(project: m.Project, trait_names: list[str]) -> Model:
    """``user_traits``: the traits of ``int_user_traits``, the relation a build publishes."""
    query = exp.select("user_id", *trait_names).from_(sx.model_ref(USER_TRAITS_AND_FOLLOWUPS))
    return Model(
        TRAITS, MARTS, query, "Computed traits (_traits.yml), one row per user of the universe.",
        columns=_trait_docs(project, trait_names), materialized="view",
    )


def _base_model(catalog: m.Catalog, trait_names: list[str], measure_set: ms.MeasureSet, has_measures: bool, has_sequences: bool) -> Model:
    attributes = [a for a in catalog.users.attributes if a not in ("user_id", "created_at")]
    select: list[exp.Expression] = [sx.col("user_id", "u")]
    select += [sx.col(a, "u") for a in attributes]
    select += [exp.alias_(_measure_value(c, "m"), c.name) for c in measure_set.measures]
    select += [sx.col(c.name, "t") for c in measure_set.followup_columns]
    select += [exp.alias_(sx.col(t, "t"), TRAIT_PREFIX + t) for t in trait_names]
    query = exp.select(*select).from_(_aliased(sx.model_ref(UNIVERSE), "u"))
    on_user = lambda alias: exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "u"))  # noqa: E731
    if has_measures:
        query = query.join(_aliased(sx.model_ref(MEASURES), "m"), on=on_user("m"), join_type="left")
    if trait_names or has_sequences:
        query = query.join(_aliased(sx.model_ref(USER_TRAITS_AND_FOLLOWUPS), "t"), on=on_user("t"), join_type="left")
    return Model(
        BASE, INTERMEDIATE, query,
        "One row per user of the universe with every attribute, measure and trait the segments read: "
        "a view, read once by the membership.",
        columns=[ColumnDoc("user_id", "A user of the universe.")],
        materialized="view",
    )


def _membership_layers(rules: list[tuple[m.SegmentSpec, str, exp.Expression]]) -> list[list[tuple[str, exp.Expression]]]:
    """The segments' rules in layers: a rule reads only the membership columns of
    earlier layers (a derived segment, a later tier)."""
    column_of = {segment_model_name(name): name for _, name, _ in rules}
    reads = {
        name: {column_of[c.name] for c in where.find_all(exp.Column) if c.name in column_of and not c.table}
        for _, name, where in rules
    }
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((level(r) for r in reads[name]), default=-1)
        return depth[name]

    layers: list[list[tuple[str, exp.Expression]]] = [[] for _ in range(1 + max((level(n) for _, n, _ in rules), default=0))]
    for _, name, where in rules:
        layers[level(name)].append((name, where))
    return layers


def _flags_model(rules: list[tuple[m.SegmentSpec, str, exp.Expression]]) -> Model:
    """``int_segment_flags``: every segment's rule as one boolean column (named like
    the segment's relation) of a single pass over the base, in layers (see
    :func:`_membership_layers`).

    A rule is NULL-free here (COALESCE to FALSE), so that ``NOT`` of a membership
    column is the exact complement a derived rule or a later tier needs. A table, not a
    CTE of the membership: a narrow one the membership scans once per segment, which
    DuckDB can spill where a materialized CTE of hundreds of columns cannot.
    """
    source = BASE
    ctes: list[tuple[str, exp.Query]] = []
    for index, layer in enumerate(_membership_layers(rules)):
        columns = [
            exp.alias_(exp.Coalesce(this=sx.paren(where.copy()), expressions=[exp.false()]), segment_model_name(name))
            for name, where in layer
        ]
        relation = sx.model_ref(source) if source == BASE else exp.to_table(source)
        ctes.append((f"layer_{index}", exp.select("*", *columns).from_(relation)))
        source = f"layer_{index}"
    query = exp.select("user_id", *[segment_model_name(name) for _, name, _ in rules]).from_(source)
    for cte_name, cte_query in ctes:
        query = query.with_(cte_name, as_=cte_query, copy=False)
    docs = [ColumnDoc("user_id", "A user of the universe.")]
    docs += [ColumnDoc(segment_model_name(name), f"Member of {name} (holdout included).") for _, name, _ in rules]
    return Model(FLAGS, INTERMEDIATE, query, "Every segment's rule evaluated for every user of the universe, in one pass.", columns=docs)


def _membership_model(rules: list[tuple[m.SegmentSpec, str, exp.Expression]]) -> Model:
    """``segment_membership``: one row per (segment, member) of the flags."""
    parts: list[exp.Query] = []
    query: exp.Query
    if rules:
        spec_of = {name: spec for spec, name, _ in rules}
        for name in sorted(spec_of):
            parts.append(
                exp.select(
                    exp.alias_(sx.literal(name), "segment_name"),
                    "user_id",
                    exp.alias_(_holdout(name, spec_of[name].holdout), "is_holdout"),
                    exp.alias_(sx.as_of(), "as_of"),
                    exp.alias_(experiments.arm(spec_of[name].experiment), "arm"),
                ).from_(sx.model_ref(FLAGS)).where(sx.col(segment_model_name(name)))
            )
        query = parts[0]
        for part in parts[1:]:
            query = exp.union(query, part, distinct=False, copy=False)  # copying each step is quadratic
    else:
        empty = [
            exp.alias_(exp.cast(exp.null(), exp.DataType.Type.VARCHAR), "segment_name"),
            exp.alias_(exp.cast(exp.null(), exp.DataType.Type.VARCHAR), "user_id"),
            exp.alias_(exp.cast(exp.null(), exp.DataType.Type.BOOLEAN), "is_holdout"),
            exp.alias_(sx.as_of(), "as_of"),
            exp.alias_(experiments.arm(None), "arm"),
        ]
        query = exp.select(*empty).where(exp.false())
    columns = [
        ColumnDoc("segment_name", "The segment (tiers as <spec>__<tier>)."),
        ColumnDoc("user_id", "A member."),
        ColumnDoc("is_holdout", "Control group member: kept here, never synced."),
        ColumnDoc("as_of", "The instant the build evaluated the member's segment at."),
        ColumnDoc("arm", "The member's experiment arm (missing for a segment without an experiment)."),
    ]
    return Model(
        MEMBERSHIP, MARTS, query, "One row per (segment, member) at as_of, holdout flagged.", columns=columns,
        tests=({"segments_unique_together": {"arguments": {"columns": ["segment_name", "user_id"]}}},),
    )



# ---------------------------------------------------------------------------
# The pieces of a rule, for readers that evaluate them one by one
# ---------------------------------------------------------------------------
#
# ``segments explain`` evaluates each condition of a rule per user with the very
# expressions the flags model is made of; these give it the compiler's own builders.


def base_resolver(project: m.Project) -> _BaseResolver:
    """A resolver of rule names to ``int_segment_base`` columns. Measure and
    follow-up column names depend only on the measure, so they match any compile."""
    return _BaseResolver(project, ms.MeasureSet())


def holdout_predicate(segment: str, percent: float | None) -> exp.Expression:
    """True for a member of ``segment``'s holdout (SPEC 2.6)."""
    return _holdout(segment, percent)


def upload_predicate(segment: str, upload: m.Upload) -> exp.Expression:
    """True for a user whose key is in the segment's uploaded list."""
    return _upload_predicate(segment, upload)


def describe_window(window: m.Window) -> str:
    """An event window in words, as the models' column docs say it."""
    return _describe_window(window)
