"""Computed traits (``int_user_traits``, ``user_traits``): measure traits per user, and
quantile scores ranked in layers.
"""

from __future__ import annotations

from sqlglot import exp

from segments.compiler import measures as ms
from segments.compiler import sqlexpr as sx
from segments.spec import model as m
from segments.compiler.describe import describe_measure
from segments.compiler.graph import (
    aliased, closure, ColumnDoc, INTERMEDIATE, MARTS, MEASURES, Model, SEQUENCES, TRAITS, UNIVERSE,
    USER_TRAITS_AND_FOLLOWUPS,
)
from segments.compiler.measure_models import measure_value


def trait_nullable(trait: m.Trait) -> bool:
    if isinstance(trait, m.MeasureTrait):
        return trait.measure.kind not in ms.ZERO_ON_NONE
    return True


def needed_traits(project: m.Project, names: set[str]) -> list[str]:
    """The traits ``names`` read, with the traits their quantiles rank, in file order."""
    def reads(name: str) -> list[str]:
        trait = project.traits[name]
        return [trait.of] if isinstance(trait, m.QuantileTrait) else []

    needed = closure(names, reads)
    return [name for name in project.traits if name in needed]


def value_scores(source: exp.Expression, of: str, buckets: int) -> exp.Select:
    """``(v, score)``: the SPEC 1.5 score of every distinct non-missing value ``v`` of
    column ``of`` of ``source`` among the values of all its rows (:func:`quantile_score`).

    Each value is counted once (users below a value: the counts of the values before
    it), so the sort is of the distinct values, not of every user; the build joins the
    scores back to the users by value, and a refresh finds the users whose score moved
    the same way.

    >>> value_scores(exp.to_table("t"), "x", 5).sql("duckdb")  # doctest: +ELLIPSIS
    'SELECT v, CAST(LEAST(5, 1 + COALESCE(FLOOR(CAST((SUM(k) OVER (ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - k) * 5 AS DOUBLE) / NULLIF((SUM(k) OVER () - 1), 0)), 0)) AS BIGINT) AS score FROM (SELECT x AS v, COUNT(*) AS k FROM t WHERE NOT x IS NULL GROUP BY x) AS c'
    """
    value = sx.col(of)
    counts = (
        exp.select(exp.alias_(value, "v"), exp.alias_(exp.Count(this=exp.Star()), "k"))
        .from_(source.copy()).where(exp.Not(this=exp.Is(this=value.copy(), expression=exp.null()))).group_by(value.copy())
    )
    running = exp.Window(
        this=exp.Sum(this=sx.col("k")), order=exp.Order(expressions=[exp.Ordered(this=sx.col("v"))]),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"),
    )
    below = exp.Paren(this=exp.Sub(this=running, expression=sx.col("k")))
    score = quantile_score(below, exp.Window(this=exp.Sum(this=sx.col("k"))), buckets)
    return exp.select("v", exp.alias_(exp.cast(score, exp.DataType.Type.BIGINT), "score")).from_(
        exp.Subquery(this=counts, alias=exp.TableAlias(this=sx.ident("c"))))


def quantile_score(below: exp.Expression, count: exp.Expression, buckets: int) -> exp.Expression:
    """SPEC 1.5 score of a value that ``below`` of the ``count`` non-missing values are
    less than, in exact integer arithmetic rather than a floating percent rank:
    ``LEAST(b, 1 + FLOOR(below * b / (n - 1)))``, ``1`` when only one user has a value.
    ``below`` and ``count`` come from counted values (:func:`value_scores`).

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


def trait_depth(project: m.Project, name: str) -> int:
    """0 for a measure trait, one more than the trait it ranks for a quantile."""
    trait = project.traits[name]
    return 0 if isinstance(trait, m.MeasureTrait) else trait_depth(project, trait.of) + 1


def traits_model(
    project: m.Project, trait_names: list[str], measure_set: ms.MeasureSet, has_measures: bool, has_sequences: bool,
    carried: list[exp.Expression] = (),  # type: ignore[assignment]
) -> Model:
    """``int_user_traits``: one column per trait, quantiles ranked in layers (a score
    may rank another score), and the sequences' follow-up counts. One narrow table for
    both keeps the base at two joins: a third made DuckDB's joins need more memory
    than a 512MB limit allows, where two spill.

    ``carried``: more columns of the universe ``u`` and the measures ``m`` to pass
    through (the base's, in a compile for one query: the base then joins nothing, where
    it would join the universe to the measures a second time)."""
    level = {name: trait_depth(project, name) for name in trait_names}
    measured: list[exp.Expression] = [sx.col("user_id", "u"), *[c.copy() for c in carried]]
    for name in trait_names:
        trait = project.traits[name]
        if isinstance(trait, m.MeasureTrait):
            measured.append(exp.alias_(measure_value(measure_set.measure(trait.measure), "m"), name))
    followups = [c.name for c in measure_set.followup_columns]
    measured += [exp.alias_(exp.Coalesce(this=sx.col(f, "s"), expressions=[exp.Literal.number(0)]), f) for f in followups]
    query: exp.Select = exp.select(*measured).from_(aliased(sx.model_ref(UNIVERSE), "u"))
    # the measures joined only when a column reads them: a LEFT JOIN nobody reads still
    # costs a scan of every user's measures (DuckDB cannot drop it)
    if has_measures and any(c.table == "m" for e in measured for c in e.find_all(exp.Column)):
        query = query.join(aliased(sx.model_ref(MEASURES), "m"), on=exp.EQ(this=sx.col("user_id", "m"), expression=sx.col("user_id", "u")), join_type="left")
    if has_sequences:
        query = query.join(aliased(sx.model_ref(SEQUENCES), "s"), on=exp.EQ(this=sx.col("user_id", "s"), expression=sx.col("user_id", "u")), join_type="left")
    max_level = max(level.values(), default=0)
    if max_level == 0:
        return _traits_doc(query, trait_names, followups, project)
    ctes = [("traits_0", query)]
    for depth_level in range(1, max_level + 1):
        # each score joined by value from the distinct values' scores: a sort of the
        # distinct values, where a RANK() window sorted every user (half the time)
        below = f"traits_{depth_level - 1}"
        layer = exp.select(exp.Column(this=exp.Star(), table=sx.ident("t"))).from_(exp.to_table(below).as_("t"))
        for index, name in enumerate(n for n in trait_names if level[n] == depth_level):
            trait = project.traits[name]
            assert isinstance(trait, m.QuantileTrait)
            alias = f"q{index}"
            layer = layer.select(exp.alias_(sx.col("score", alias), name)).join(
                exp.Subquery(this=value_scores(exp.to_table(below), trait.of, trait.buckets), alias=exp.TableAlias(this=sx.ident(alias))),
                on=exp.EQ(this=sx.col("v", alias), expression=sx.col(trait.of, "t")), join_type="left",
            )
        ctes.append((f"traits_{depth_level}", layer))
    final = exp.select("user_id", *[c.alias_or_name for c in carried], *trait_names, *followups).from_(f"traits_{max_level}")
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
            docs.append(ColumnDoc(name, describe_measure(trait.measure)))
    return docs


def _traits_doc(query: exp.Query, trait_names: list[str], followups: list[str], project: m.Project) -> Model:
    docs = _trait_docs(project, trait_names) + [ColumnDoc(f, "Follow-up events after a sequence's anchor.") for f in followups]
    return Model(
        USER_TRAITS_AND_FOLLOWUPS, INTERMEDIATE, query,
        "Computed traits (_traits.yml) and the sequences' follow-up counts, one row per user of the universe.",
        columns=docs,
    )


def user_traits_model(project: m.Project, trait_names: list[str]) -> Model:
    """``user_traits``: the traits of ``int_user_traits``, the relation a build publishes."""
    query = exp.select("user_id", *trait_names).from_(sx.model_ref(USER_TRAITS_AND_FOLLOWUPS))
    return Model(
        TRAITS, MARTS, query, "Computed traits (_traits.yml), one row per user of the universe.",
        columns=_trait_docs(project, trait_names), materialized="view",
    )
