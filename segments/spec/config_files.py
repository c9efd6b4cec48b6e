"""The configuration files of a specs folder: ``_catalog.yml``, ``_traits.yml`` and
``_destinations.yml``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from yaml.nodes import MappingNode, Node

from segments.spec import grammar
from segments.spec import model as m
from segments.spec.conditions import _Env, _column_subject, _event_filter, _measure_type, _property_for_measure
from segments.spec.nodes import (
    DESTINATION_TYPES, Entries, IDENTIFIER_RE, QUANTILE_KEYS, RESERVED_TRAIT_NAMES, SEGMENT_NAME_RE,
    TRAIT_MEASURE_KEYS, _Ctx, _bool, _check_keys, _cycles, _describe, _entries, _int, _kind, _list, _name, _number,
    _one_of, _plain, _require, _text, _unknown, _value_of,
)


# ---- _catalog.yml ---------------------------------------------------------------------------

_IDENTIFIER_RULE = "letters, digits and _, not starting with a digit"


def _identifier(ctx: _Ctx, node: Node | None, what: str) -> str | None:
    return _name(ctx, node, what, IDENTIFIER_RE, _IDENTIFIER_RULE)


def _relation(ctx: _Ctx, node: Node | None) -> m.Relation | None:
    """``table: [schema.]name``."""
    text = _text(ctx, node, "table")
    if text is None:
        return None
    parts = text.split(".")
    if len(parts) > 2 or not all(IDENTIFIER_RE.fullmatch(part) for part in parts):
        ctx.error(
            node, f"invalid table '{text}': expected name or schema.name ({_IDENTIFIER_RULE})"
        )
        return None
    return m.Relation(parts[-1], parts[0] if len(parts) == 2 else None)


def _column(ctx: _Ctx, name: str, node: Node) -> m.Column | None:
    """One attribute or property: ``{type, pii?, values?, column?}``."""
    mark = ctx.mark()
    entries = _entries(ctx, node, f"'{name}'")
    if entries is None:
        return None
    _check_keys(ctx, entries, grammar.COLUMN.names)
    type_node = _require(ctx, node, entries, "type", f"'{name}'")
    type_ = _text(ctx, type_node, "type")
    if type_ is not None and type_ not in m.COLUMN_TYPES:
        _unknown(ctx, type_node, "type", type_, m.COLUMN_TYPES)
    pii = _bool(ctx, _value_of(entries, "pii"), "pii")
    column = _identifier(ctx, _value_of(entries, "column"), "column")
    values = None
    if "values" in entries:
        key, values_node = entries["values"]
        if type_ is not None and type_ != "string":
            ctx.error(key, f"values only applies to string columns; '{name}' is {type_}")
        items = _list(ctx, values_node, "values")
        if items is not None and not items:
            ctx.error(values_node, "values needs at least one value")
        values = tuple(_text(ctx, item, "a value") for item in items or [])
    if ctx.failed_since(mark):
        return None
    return m.Column(name, column or name, type_, bool(pii), values)  # type: ignore[arg-type]


def _columns(
    ctx: _Ctx, node: Node | None, what: str, singular: str
) -> dict[str, m.Column | None] | None:
    """``attributes:`` / ``properties:``; broken entries map to None (still known names)."""
    if node is None:
        return {}
    entries = _entries(ctx, node, what)
    if entries is None:
        return None
    columns: dict[str, m.Column | None] = {}
    for name, (key, value) in entries.items():
        ok = _identifier(ctx, key, f"{singular} name") is not None
        column = _column(ctx, name, value)
        columns[name] = column if ok else None
    return columns


#: Names of UTC itself: a catalog naming one is a catalog without a timezone.
UTC_NAMES = frozenset(
    prefix + name
    for prefix in ("", "Etc/")
    for name in ("UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich")
)


def _timezone(ctx: _Ctx, node: Node | None) -> str | None:
    """The catalog's ``timezone``: an IANA name the time zone database knows.

    Returns the name, or None when absent, UTC or wrong (reported).
    """
    name = _text(ctx, node, "timezone")
    if name is None:
        return None
    known = available_timezones()
    if name in known or (not known and _loads_zone(name)):
        return None if name in UTC_NAMES else name
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if not close:  # a city alone (``Kolkata``), or its case (``asia/kolkata``)
        folded = name.casefold().replace(" ", "_")
        close = [z for z in sorted(known) if z.casefold() == folded or z.casefold().endswith("/" + folded)][:1]
    hint = f" (did you mean '{close[0]}'?)" if close else " (expected an IANA name such as Europe/Paris or Asia/Kolkata)"
    ctx.error(node, f"unknown timezone '{name}'{hint}")
    return None


def _loads_zone(name: str) -> bool:
    """Whether zoneinfo loads ``name`` (only asked when it lists no zones at all)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@dataclass
class _CatalogResult:
    catalog: m.Catalog | None
    attributes: dict[str, m.Column | None] | None
    properties: dict[str, m.Column | None] | None


def _catalog(ctx: _Ctx, root: Node | None) -> _CatalogResult:
    """``_catalog.yml`` (SPEC 1.1); the column tables are returned even when broken."""
    mark = ctx.mark()
    entries = _entries(ctx, root, "_catalog.yml") if root is not None else None
    if entries is None:
        return _CatalogResult(None, None, None)
    _check_keys(ctx, entries, grammar.CATALOG.names)
    users_node = _require(ctx, root, entries, "users", "_catalog.yml")
    events_node = _require(ctx, root, entries, "events", "_catalog.yml")
    users = _entries(ctx, users_node, "users") if users_node is not None else None
    events = _entries(ctx, events_node, "events") if events_node is not None else None
    attributes = properties = None
    users_table = events_table = None
    if users is not None:
        _check_keys(ctx, users, grammar.USERS.names)
        relation = _relation(ctx, _require(ctx, users_node, users, "table", "users"))
        key = _identifier(ctx, _require(ctx, users_node, users, "key", "users"), "key")
        created_at = _identifier(ctx, _value_of(users, "created_at"), "created_at")
        attributes = _columns(ctx, _value_of(users, "attributes"), "attributes", "attribute")
        users_table = m.UsersTable(relation, key, created_at, attributes)  # type: ignore[arg-type]
    if events is not None:
        _check_keys(ctx, events, grammar.EVENTS.names)
        relation = _relation(ctx, _require(ctx, events_node, events, "table", "events"))
        names = [
            _identifier(ctx, _require(ctx, events_node, events, key, "events"), key)
            for key in ("user_key", "name", "timestamp")
        ]
        properties = _columns(ctx, _value_of(events, "properties"), "properties", "property")
        events_table = m.EventsTable(relation, *names, properties)  # type: ignore[arg-type]
    timezone = _timezone(ctx, _value_of(entries, "timezone"))
    if ctx.failed_since(mark):
        return _CatalogResult(None, attributes, properties)
    catalog = m.Catalog(users_table, events_table, ctx.loc(root), timezone)  # type: ignore[arg-type]
    return _CatalogResult(catalog, attributes, properties)


# ---- _traits.yml ----------------------------------------------------------------------------


def _traits(
    ctx: _Ctx, root: Node | None, env: _Env
) -> tuple[dict[str, m.Trait], dict[str, m.ColumnType | None] | None]:
    """``_traits.yml`` (SPEC 1.5): the traits and each trait name's type.

    A broken trait keeps its name (type None) so rules using it are not also
    reported as unknown.
    """
    entries = _entries(ctx, root, "_traits.yml") if root is not None else None
    if entries is None:
        return {}, None
    _check_keys(ctx, entries, grammar.TRAITS.names)
    traits_node = _require(ctx, root, entries, "traits", "_traits.yml")
    defs = _entries(ctx, traits_node, "traits") if traits_node is not None else None
    if defs is None:
        return {}, None
    names = list(defs)
    traits: dict[str, m.Trait] = {}
    for name, (key, node) in defs.items():
        mark = ctx.mark()
        _name(
            ctx,
            key,
            "trait name",
            SEGMENT_NAME_RE,
            "lower-case letters, digits and _, starting with a letter, at most 63 characters",
        )
        if name in RESERVED_TRAIT_NAMES:
            ctx.error(key, f"'{name}' is reserved (a column of user_traits); rename the trait")
        trait = _trait(ctx, name, key, node, names, env)
        if trait is not None and not ctx.failed_since(mark):
            traits[name] = trait
    types: dict[str, m.ColumnType | None] = {name: None for name in names}
    types.update({name: trait.type for name, trait in traits.items()})
    graph = {
        name: [(trait.of, _quantile_node(defs[name][1]))]
        for name, trait in traits.items()
        if isinstance(trait, m.QuantileTrait)
    }
    for cycle, node in _cycles(graph):
        ctx.error(node, f"trait cycle: {' -> '.join(cycle)}")
    return traits, types


def _quantile_node(node: MappingNode) -> Node:
    """The value node of a valid quantile trait's ``quantile`` key."""
    return next(value for key, value in node.value if key.value == "quantile")


def _trait(
    ctx: _Ctx, name: str, key: Node, node: Node, names: list[str], env: _Env
) -> m.Trait | None:
    """One trait: a measure over events, or a quantile score of another trait."""
    mark = ctx.mark()
    entries = _entries(ctx, node, f"trait '{name}'")
    if entries is None:
        return None
    if "quantile" in entries:
        _check_keys(ctx, entries, QUANTILE_KEYS)
        of_node = entries["quantile"][1]
        of = _text(ctx, of_node, "quantile")
        if of is not None and of not in names:
            _unknown(ctx, of_node, "trait", of, names)
        buckets = _int(
            ctx,
            _require(ctx, node, entries, "buckets", "a quantile trait"),
            "buckets",
            grammar.QUANTILE_TRAIT.key("buckets").value.minimum,  # type: ignore[union-attr]
        )
        if ctx.failed_since(mark):
            return None
        return m.QuantileTrait(name, of, buckets, location=ctx.loc(key))  # type: ignore[arg-type]
    _check_keys(
        ctx, entries, TRAIT_MEASURE_KEYS + ("quantile",), TRAIT_MEASURE_KEYS + QUANTILE_KEYS
    )
    if "event" not in entries:
        ctx.error(node, f"trait '{name}' needs 'event' (a measure) or 'quantile' (a score)")
        return None
    event_filter = _event_filter(ctx, node, entries, env)
    kind = _one_of(ctx, entries, m.MEASURE_KINDS, "a trait has exactly one measure")
    if kind is None:
        ctx.error(
            node,
            f"trait '{name}' needs a measure: count: true, active_days: true, "
            "sum|avg|min|max: PROPERTY, first_occurred: true or last_occurred: true",
        )
        return None
    value = entries[kind][1]
    prop, prop_type = None, None
    # A trait names its measure only (no test): `sum: amount`, `count: true`.
    if kind in m.PROPERTY_MEASURES and _kind(value) == "text":
        subject = _property_for_measure(ctx, value, kind, env)
        prop, prop_type = value.value, subject.type if subject else None
    elif kind in m.PROPERTY_MEASURES:
        ctx.error(value, f"a trait's measure is written '{kind}: PROPERTY', got {_describe(value)}")
    elif _kind(value) != "boolean" or _bool(ctx, value, kind) is not True:
        ctx.error(value, f"a trait's measure is written '{kind}: true', got {_describe(value)}")
    if ctx.failed_since(mark) or event_filter is None:
        return None
    measure = m.Measure(kind, event_filter, prop)  # type: ignore[arg-type]
    return m.MeasureTrait(name, measure, _measure_type(kind, prop_type), ctx.loc(key))  # type: ignore[arg-type]


# ---- _destinations.yml -----------------------------------------------------------------------


def _destinations(ctx: _Ctx, root: Node | None, env: _Env) -> dict[str, m.Destination] | None:
    """``_destinations.yml``: name -> {type, ...options kept as written}."""
    entries = _entries(ctx, root, "_destinations.yml") if root is not None else None
    if entries is None:
        return None
    _check_keys(ctx, entries, ("destinations",))
    node = _require(ctx, root, entries, "destinations", "_destinations.yml")
    defs = _entries(ctx, node, "destinations") if node is not None else None
    if defs is None:
        return None
    destinations: dict[str, m.Destination] = {}
    for name, (key, value) in defs.items():
        mark = ctx.mark()
        _text(ctx, key, "destination name")
        options = _entries(ctx, value, f"destination '{name}'")
        if options is None:
            continue
        type_node = _require(ctx, value, options, "type", f"destination '{name}'")
        type_ = _text(ctx, type_node, "type")
        if type_ is not None and type_ not in DESTINATION_TYPES:
            _unknown(ctx, type_node, "destination type", type_, DESTINATION_TYPES)
        _check_destination_options(ctx, options, env)
        raw = {k: _plain(ctx, v) for k, (_, v) in options.items() if k != "type"}
        if not ctx.failed_since(mark):
            destinations[name] = m.Destination(name, type_, raw, ctx.loc(key))  # type: ignore[arg-type]
    return destinations


def _check_destination_options(ctx: _Ctx, options: Entries, env: _Env) -> None:
    """The options SPEC 4 gives every destination; the rest belong to the sync engine."""
    if "requires" in options:
        subject = _column_subject(ctx, options["requires"][1], "attribute", env.attributes)
        if subject is not None and subject.type not in (None, "boolean"):
            ctx.error(
                options["requires"][1],
                f"requires needs a boolean attribute; {subject.label} is {subject.type}",
            )
    if "max_remove_pct" in options:
        node = options["max_remove_pct"][1]
        pct = _number(ctx, node, "max_remove_pct")
        if pct is not None and not 0 <= pct <= 100:
            ctx.error(node, f"max_remove_pct must be between 0 and 100, got {pct}")
    if "batch_size" in options:
        _int(ctx, options["batch_size"][1], "batch_size", 1)
    if "fields" in options:
        for item in _list(ctx, options["fields"][1], "fields") or []:
            _column_subject(ctx, item, "attribute", env.attributes)
