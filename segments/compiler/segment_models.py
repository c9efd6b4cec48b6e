"""Segments as models: each rule a predicate over the base (``int_segment_base``),
evaluated together as one boolean each (``int_segment_flags``, a bit of a word), unpivoted into
``segment_membership``, one ``seg_<name>`` view per segment.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from segments.compiler import experiments
from segments.compiler import measures as ms
from segments.compiler import predicates as pr
from segments.compiler import sqlexpr as sx
from segments.errors import SegmentsError
from segments.spec import model as m
from segments.compiler.graph import (
    aliased, BASE, closure, ColumnDoc, FLAGS, INTERMEDIATE, MARTS, MEASURES, MEMBERSHIP, Model,
    segment_model_name, SEGMENTS, TRAIT_PREFIX, UNIVERSE, USER_TRAITS_AND_FOLLOWUPS,
)
from segments.compiler.measure_models import measure_value
from segments.compiler.traits import trait_nullable
from segments.compiler.upload_models import upload_predicate


class BaseResolver:
    """Resolves names in segment rules to columns of ``int_segment_base``."""

    def __init__(self, project: m.Project, measure_set: ms.MeasureSet):
        self.project = project
        self.measures = measure_set
        self.traits_used: set[str] = set()

    def attribute(self, name: str) -> pr.Value:
        return pr.Value(sx.col(name))

    def trait(self, name: str) -> pr.Value:
        self.traits_used.add(name)
        return pr.Value(sx.col(TRAIT_PREFIX + name), nullable=trait_nullable(self.project.traits[name]))

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
        # the segment's membership column of the same pass (see membership_model)
        member = sx.col(segment_model_name(name))
        return exp.Not(this=member) if negate else member


def segment_closure(project: m.Project, wanted: Iterable[str]) -> list[str]:
    """``wanted`` and every segment they read, in spec order."""
    by_name = {name: spec for spec in project.segments for name in spec.segment_names()}

    def reads(name: str) -> list[str]:
        if name not in by_name:
            raise SegmentsError(f"unknown segment {name!r}")
        spec = by_name[name]
        # tiers are computed together
        return [*spec.segment_names(), *(ref for condition in _spec_conditions(spec) for ref in _segment_refs(condition))]

    keep = closure(wanted, reads)
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


def holdout_predicate(segment: str, percent: float | None) -> exp.Expression:
    """SPEC 2.6: the first 8 hex digits of md5(name:user_id) as an integer, mod 100 < H."""
    if not percent:
        return exp.false()
    return exp.LT(this=experiments.bucket(segment, 100), expression=sx.literal(percent))


def segment_queries(spec: m.SegmentSpec, resolver: BaseResolver) -> list[tuple[str, exp.Expression]]:
    """Each segment a spec defines with its predicate over the base."""
    narrow = pr.predicate(spec.where, resolver) if spec.where is not None else None
    if spec.upload is not None:
        narrow = sx.and_(upload_predicate(spec.name, spec.upload), *(p for p in [narrow] if p is not None))
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


def segment_model(project: m.Project, spec: m.SegmentSpec, name: str) -> Model:
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


def base_columns(catalog: m.Catalog, measure_set: ms.MeasureSet) -> list[exp.Expression]:
    """The universe's attributes and the measures as the base selects them, from the
    universe ``u`` and the measures ``m``."""
    attributes = [a for a in catalog.users.attributes if a not in ("user_id", "created_at")]
    return [sx.col(a, "u") for a in attributes] + [exp.alias_(measure_value(c, "m"), c.name) for c in measure_set.measures]


def base_model(
    catalog: m.Catalog, trait_names: list[str], measure_set: ms.MeasureSet, has_measures: bool, has_sequences: bool,
    through_traits: bool = False,
) -> Model:
    """``int_segment_base``: the universe joined to the measures and the traits.

    ``through_traits``: the traits model carries the base's columns (a compile for one
    query, :func:`.traits.traits_model`), which the base reads with no join of its own.
    """
    carried = base_columns(catalog, measure_set)
    select: list[exp.Expression] = [sx.col("user_id", "t" if through_traits else "u")]
    select += [sx.col(c.alias_or_name, "t") for c in carried] if through_traits else carried
    select += [sx.col(c.name, "t") for c in measure_set.followup_columns]
    select += [exp.alias_(sx.col(t, "t"), TRAIT_PREFIX + t) for t in trait_names]
    on_user = lambda alias: exp.EQ(this=sx.col("user_id", alias), expression=sx.col("user_id", "u"))  # noqa: E731
    if through_traits:
        query = exp.select(*select).from_(aliased(sx.model_ref(USER_TRAITS_AND_FOLLOWUPS), "t"))
    else:
        query = exp.select(*select).from_(aliased(sx.model_ref(UNIVERSE), "u"))
        if has_measures:
            query = query.join(aliased(sx.model_ref(MEASURES), "m"), on=on_user("m"), join_type="left")
        if trait_names or has_sequences:
            query = query.join(aliased(sx.model_ref(USER_TRAITS_AND_FOLLOWUPS), "t"), on=on_user("t"), join_type="left")
    return Model(
        BASE, INTERMEDIATE, query,
        "One row per user of the universe with every attribute, measure and trait the segments read: "
        "a view, read once by the membership.",
        columns=[ColumnDoc("user_id", "A user of the universe.")],
        materialized="view", bucket_columns=len(select),
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


#: Segments per word of ``int_segment_flags``: bits 0-62 of a BIGINT, whose sum stays
#: positive on every engine.
FLAGS_PER_WORD = 63


def flag_word(index: int) -> str:
    """The name of ``int_segment_flags``' word ``index``."""
    return f"segment_bits_{index}"


def flag_bits(names: list[str]) -> dict[str, tuple[str, int]]:
    """Where ``int_segment_flags`` keeps each segment of ``names`` (in the rules' order):
    its word's column and its bit.

    >>> flag_bits(["a", "b"])
    {'a': ('segment_bits_0', 0), 'b': ('segment_bits_0', 1)}
    >>> flag_bits([f"s{i}" for i in range(64)])["s63"]
    ('segment_bits_1', 0)
    """
    return {name: (flag_word(i // FLAGS_PER_WORD), i % FLAGS_PER_WORD) for i, name in enumerate(names)}


def flag_set(word: str, bit: int, table: str | None = None) -> exp.Expression:
    """Whether ``bit`` of the flags word ``word`` is set: the segment's member.

    >>> flag_set("segment_bits_0", 3, "f").sql("duckdb")
    '(f.segment_bits_0 & 8) <> 0'
    >>> flag_set("segment_bits_0", 3).sql("snowflake")
    '(BITAND(segment_bits_0, 8)) <> 0'
    """
    masked = exp.BitwiseAnd(this=sx.col(word, table), expression=exp.Literal.number(1 << bit))
    return exp.NEQ(this=exp.paren(masked), expression=exp.Literal.number(0))


def _packed(flags: list[str]) -> list[exp.Expression]:
    """The flags as words: each the sum of its set flags' powers of two (BIGINT from its
    first term, so that no engine adds them up in a narrower integer)."""
    words = []
    for start in range(0, len(flags), FLAGS_PER_WORD):
        terms = [
            exp.Case(ifs=[exp.If(this=sx.col(flag), true=exp.Literal.number(1 << bit))], default=exp.Literal.number(0))
            for bit, flag in enumerate(flags[start:start + FLAGS_PER_WORD])
        ]
        word: exp.Expression = exp.cast(terms[0], exp.DataType.Type.BIGINT)
        for term in terms[1:]:
            word = exp.Add(this=word, expression=term)
        words.append(exp.alias_(word, flag_word(start // FLAGS_PER_WORD)))
    return words


def flags_model(rules: list[tuple[m.SegmentSpec, str, exp.Expression]], base: Model) -> Model:
    """``int_segment_flags``: every segment's rule evaluated in a single pass over the
    base, in layers (see :func:`_membership_layers`), each a boolean column named like
    the segment's relation that derived rules and later tiers read.

    A rule is NULL-free there (COALESCE to FALSE), so that ``NOT`` of a membership
    column is the exact complement a derived rule or a later tier needs. The table keeps
    the flags as bits of BIGINT words (:func:`flag_bits`): for the benchmark's 200
    segments it took 10.3 s with a boolean column each, 5.9 s with four words. A table, not a CTE of the membership: a narrow
    one the membership scans once per segment, which DuckDB can spill where a
    materialized CTE of hundreds of columns cannot.

    Built in buckets of users (:mod:`.buckets`), each joining its share of ``base``:
    the largest joins of the build.
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
    names = [name for _, name, _ in rules]
    query = exp.select("user_id", *_packed([segment_model_name(name) for name in names])).from_(source)
    for cte_name, cte_query in ctes:
        query = query.with_(cte_name, as_=cte_query, copy=False)
    docs = [ColumnDoc("user_id", "A user of the universe.")]
    by_word: dict[str, list[str]] = {}
    for name, (word, _) in flag_bits(names).items():
        by_word.setdefault(word, []).append(name)
    docs += [ColumnDoc(word, f"One bit per segment, from bit 0 (holdout included): {', '.join(members)}.")
             for word, members in by_word.items()]
    return Model(
        FLAGS, INTERMEDIATE, query, "Every segment's rule evaluated for every user of the universe, in one pass.",
        columns=docs, bucket_columns=base.bucket_columns + len(rules),
    )


def membership_model(rules: list[tuple[m.SegmentSpec, str, exp.Expression]]) -> Model:
    """``segment_membership``: one row per (segment, member) of the flags."""
    parts: list[exp.Query] = []
    query: exp.Query
    if rules:
        spec_of = {name: spec for spec, name, _ in rules}
        bits = flag_bits(list(spec_of))
        for name in sorted(spec_of):
            parts.append(
                exp.select(
                    exp.alias_(sx.literal(name), "segment_name"),
                    "user_id",
                    exp.alias_(holdout_predicate(name, spec_of[name].holdout), "is_holdout"),
                    exp.alias_(sx.as_of(), "as_of"),
                    exp.alias_(experiments.arm(spec_of[name].experiment), "arm"),
                ).from_(sx.model_ref(FLAGS)).where(flag_set(*bits[name]))
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


def base_resolver(project: m.Project) -> BaseResolver:
    """A resolver of rule names to ``int_segment_base`` columns. Measure and
    follow-up column names depend only on the measure, so they match any compile."""
    return BaseResolver(project, ms.MeasureSet())
