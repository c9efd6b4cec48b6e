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

This module assembles the graph (:func:`compile_project`); each kind of model is built
in a module of its own, whose names it re-exports (``models.X``):

- :mod:`~segments.compiler.graph`: the models' names, ``Model``, ``CompiledProject``;
- :mod:`~segments.compiler.staging`: staging models and the universe;
- :mod:`~segments.compiler.measure_models`: the measures and follow-ups;
- :mod:`~segments.compiler.traits`: computed traits and quantile scores;
- :mod:`~segments.compiler.upload_models`: uploaded lists;
- :mod:`~segments.compiler.segment_models`: the base, the flags, the membership, ``seg_`` views;
- :mod:`~segments.compiler.describe`: measures and windows in words, for the docs.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from segments.compiler import measures as ms
from segments.errors import SegmentsError
from segments.spec import model as m
from segments.compiler.graph import (  # noqa: F401 - read as models.X
    STAGING, INTERMEDIATE, SEGMENTS, MARTS, USERS, EVENTS, UNIVERSE, MEASURES, SEQUENCES, BASE, TRAITS,
    MEMBERSHIP, FLAGS, USER_TRAITS_AND_FOLLOWUPS, TRAIT_PREFIX, TARGET_SCHEMA_SOURCE, SEGMENT_PREFIX,
    MAX_RELATION_NAME, segment_model_name, ColumnDoc, Model, Quantile, CompiledProject, aliased, source_for,
    select_renamed, UPLOAD_KEYS, UPLOAD_MEMBERS, UPLOADS_TABLE,
)
from segments.compiler.describe import (  # noqa: F401 - read as models.X
    describe_measure, describe_window, describe_sequence,
)
from segments.compiler.upload_models import (  # noqa: F401 - read as models.X
    upload_key_column, upload_predicate, upload_models,
)
from segments.compiler.staging import (  # noqa: F401 - read as models.X
    staging_models, universe_model,
)
from segments.compiler.measure_models import (  # noqa: F401 - read as models.X
    measure_models, event_names, relevant_events, measure_value,
)
from segments.compiler.traits import (  # noqa: F401 - read as models.X
    trait_nullable, needed_traits, trait_depth, traits_model, user_traits_model, value_scores,
)
from segments.compiler.segment_models import (  # noqa: F401 - read as models.X
    BaseResolver, segment_closure, holdout_predicate, segment_queries, segment_model, base_columns, base_model, flags_model,
    membership_model, base_resolver, flag_bits, flag_set,
)


def compile_project(project: m.Project, only: Iterable[str] | None = None) -> CompiledProject:
    """Build every model for ``project`` (or just what the segments ``only`` need).

    Raises:
        SegmentsError: when a name collides with a column the compiler makes.
    """
    catalog = project.catalog
    names = segment_closure(project, only) if only is not None else list(project.segment_names())
    measure_set = ms.MeasureSet()
    resolver = BaseResolver(project, measure_set)

    rules: list[tuple[m.SegmentSpec, str, exp.Expression]] = []
    for spec in project.segments:
        if not set(spec.segment_names()) & set(names):
            continue
        rules += [(spec, name, where) for name, where in segment_queries(spec, resolver)]

    trait_names = needed_traits(project, resolver.traits_used) if only is not None else list(project.traits)
    for trait_name in trait_names:
        trait = project.traits[trait_name]
        if isinstance(trait, m.MeasureTrait):
            measure_set.measure(trait.measure)

    _check_collisions(catalog, trait_names, measure_set, [name for _, name, _ in rules])
    models = staging_models(catalog)
    models.append(universe_model(catalog))
    # a compile for one query (only=) reads only the events its windows hold
    event_models = measure_models(catalog, measure_set, counted_only=only is not None)
    models += event_models
    has_measures = bool(measure_set.measures)
    has_sequences = bool(measure_set.followup_columns)
    # a compile for one query reads the base's columns through the traits, where there
    # are traits: one join of the universe to the measures rather than two (a build's
    # tables keep their own columns)
    carried = base_columns(catalog, measure_set) if only is not None and (trait_names or has_sequences) else []
    through_traits = bool(carried) and not {c.alias_or_name for c in carried} & {
        *trait_names, *(c.name for c in measure_set.followup_columns)}
    models.append(traits_model(project, trait_names, measure_set, has_measures, has_sequences, carried if through_traits else []))
    models.append(user_traits_model(project, trait_names))
    base = base_model(catalog, trait_names, measure_set, has_measures, has_sequences, through_traits)
    models.append(base)
    match_ons = sorted({spec.upload.match_on for spec, _, _ in rules if spec.upload is not None})
    if match_ons:
        models += upload_models(catalog, match_ons)
    segment_models = [segment_model(project, spec, name) for spec, name, _ in rules]
    _check_relation_names(segment_models)
    if rules:
        models.append(flags_model(rules, base))
    models.append(membership_model(rules))
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
        key=lambda q: trait_depth(project, q.name),
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
