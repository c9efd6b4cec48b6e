"""Conditions of specs and traits: what a test applies to, the tests, the logical
groups, and event conditions with their windows, measures and sequences."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from yaml.nodes import MappingNode, Node, SequenceNode

from segments.spec import grammar
from segments.spec import model as m
from segments.spec.nodes import (
    CONDITION_KINDS, DEFAULT_TEST, EVENT_KEYS, Entries, IGNORE_CASE_OPS, MAX_CONDITIONS, MAX_DEPTH, NEVER_TEST,
    PROPERTY_KINDS, SEGMENT_KINDS, SEQUENCE_KINDS, WINDOW_KEYS, _CONSTRUCTOR, _Ctx, _KINDS, _bool, _check_keys,
    _describe, _duration, _entries, _hint, _kind, _list, _number, _one_of, _require, _text, _time, _unknown,
    _value_of,
)


# ---- what a test applies to ------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """The thing a test compares: its label for messages, type and allowed values.

    ``type`` is None when it cannot be known (a broken catalog or trait, already
    reported): the test is then only checked for shape.
    """

    label: str
    type: m.ColumnType | None
    values: tuple[str, ...] | None = None


@dataclass
class _Env:
    """What rules may refer to; None tables mean "unknown, skip the checks"."""

    attributes: dict[str, m.Column | None] | None
    properties: dict[str, m.Column | None] | None
    traits: dict[str, m.ColumnType | None] | None
    refs: list[tuple[str, Node]] | None = None  # segment references found, with nodes
    depth: int = 0


def _column_subject(
    ctx: _Ctx, node: Node, what: str, table: dict[str, m.Column | None] | None
) -> _Subject | None:
    """The subject for ``{attribute: NAME}`` / ``{property: NAME}``; None if unknown name."""
    name = _text(ctx, node, what)
    if name is None:
        return None
    if table is None:
        return _Subject(f"{what} '{name}'", None)
    if name not in table:
        _unknown(ctx, node, what, name, list(table))
        return None
    column = table[name]
    if column is None:
        return _Subject(f"{what} '{name}'", None)
    return _Subject(f"{what} '{name}'", column.type, column.values)


def _typed_value(ctx: _Ctx, node: Node, subject: _Subject) -> m.Scalar | None:
    """One value of the subject's type (None: wrong, reported; or type unknown)."""
    kind, what = _kind(node), f"value for {subject.label}"
    if kind == "null":
        ctx.error(node, f"{what} is null; to test for a missing value use is_set: false")
        return None
    if subject.type is None:
        return None
    if subject.type == "string":
        return _text(ctx, node, f"{what} ({subject.type})")
    if subject.type == "number":
        return _number(ctx, node, f"{what} ({subject.type})")
    if subject.type == "boolean":
        return _bool(ctx, node, f"{what} ({subject.type})")
    return _time(ctx, node, f"{what} ({subject.type})")


def _check_allowed_values(ctx: _Ctx, node: Node, value: object, subject: _Subject) -> None:
    """Equality values of a column with catalog ``values:`` must be among them."""
    if subject.values is not None and isinstance(value, str) and value not in subject.values:
        ctx.error(
            node,
            f"'{value}' is not an allowed value of {subject.label}{_hint(value, subject.values)}",
        )


def _operand(ctx: _Ctx, op: str, node: Node, subject: _Subject, ignore_case: bool) -> object:
    """The value of one operator, typed as :class:`~segments.spec.model.Test` expects."""
    what = f"'{op}' on {subject.label}"
    if op == "is_set":
        return _bool(ctx, node, what)
    if op in ("within", "not_within"):
        return _duration(ctx, node, what)
    if op in ("before", "after"):
        return _time(ctx, node, what)
    check_values = not ignore_case and op in m.EQUALITY_OPS
    if op in ("in", "not_in", "between"):
        items = _list(ctx, node, what)
        if items is None:
            return None
        if op == "between" and len(items) != 2:
            shape = "[start, end]" if subject.type == "timestamp" else "[low, high]"
            ctx.error(node, f"{what} takes exactly 2 values {shape}, got {len(items)}")
            return None
        values = []
        for item in items:
            values.append(_typed_value(ctx, item, subject))
            if check_values:
                _check_allowed_values(ctx, item, values[-1], subject)
        return tuple(values)
    if isinstance(node, (MappingNode, SequenceNode)):
        ctx.error(node, f"{what} takes one value, got {_describe(node)}")
        return None
    value = _typed_value(ctx, node, subject)
    if check_values:
        _check_allowed_values(ctx, node, value, subject)
    return value


def _non_operators(shape: grammar.Mapping) -> tuple[str, ...]:
    """The keys of a test's mapping besides its operator: ``attribute``, ``ignore_case``...

    >>> _non_operators(grammar.PROPERTY_TEST)
    ('property',)
    """
    return tuple(name for name in shape.names if name not in m.ALL_OPS)


def _test(
    ctx: _Ctx, node: Node, entries: Entries, subject: _Subject | None, extra_keys: tuple[str, ...]
) -> m.Test | None:
    """Exactly one operator and its value, checked against the subject's type.

    ``extra_keys`` are the other keys the mapping may hold (``attribute``,
    ``ignore_case``, ``property``...). A ``None`` subject (unknown name, already
    reported) still gets its keys and operator checked.
    """
    mark = ctx.mark()
    type_ = subject.type if subject else None
    ops_for_type = m.OPS_BY_TYPE[type_] if type_ else m.ALL_OPS
    keys_ok = _check_keys(ctx, entries, extra_keys + m.ALL_OPS, extra_keys + ops_for_type)
    ops = [k for k in entries if k in m.ALL_OPS]
    label = subject.label if subject else "this condition"
    if not ops:
        if keys_ok:  # else a misspelt operator was just reported
            ctx.error(node, f"{label} needs an operator (one of: {', '.join(ops_for_type)})")
        return None
    for extra in ops[1:]:
        ctx.error(
            entries[extra][0],
            f"exactly one operator per condition, found '{ops[0]}' and '{extra}' "
            "(combine several with all:)",
        )
    op = ops[0]
    if op not in ops_for_type:
        ctx.error(
            entries[op][0],
            f"operator '{op}' does not apply to {label} ({type_}); "
            f"use one of: {', '.join(ops_for_type)}",
        )
        return None
    ignore_case = False
    if "ignore_case" in entries:
        key, value = entries["ignore_case"]
        ignore_case = bool(_bool(ctx, value, "ignore_case"))
        if type_ is not None and (type_ != "string" or op not in IGNORE_CASE_OPS):
            ctx.error(
                key,
                "ignore_case only applies to text with one of: " + ", ".join(IGNORE_CASE_OPS),
            )
    if subject is None:
        return None
    operand = _operand(ctx, op, entries[op][1], subject, ignore_case)
    if ctx.failed_since(mark) or type_ is None:
        return None
    return m.Test(op, operand, type_, ignore_case)


# ---- conditions -----------------------------------------------------------------------------


def _condition(ctx: _Ctx, node: Node, env: _Env, in_event: bool) -> m.Condition | None:
    """One condition of SPEC 1.3; ``in_event`` selects the event-property grammar."""
    if env.depth > MAX_DEPTH:
        ctx.error(node, "conditions nested too deeply")
        return None
    ctx.conditions += 1
    if ctx.conditions > MAX_CONDITIONS:
        if ctx.conditions == MAX_CONDITIONS + 1:
            ctx.error(node, f"more than {MAX_CONDITIONS} conditions in one file")
        return None
    env = replace(env, depth=env.depth + 1)
    entries = _entries(ctx, node, "a condition")
    if entries is None:
        return None
    allowed = PROPERTY_KINDS if in_event else SEGMENT_KINDS
    mark = ctx.mark()
    kind = _one_of(ctx, entries, CONDITION_KINDS, "a condition has exactly one kind")
    if ctx.failed_since(mark):
        return None  # two kinds: checking either one's keys would only add noise
    if kind is None:
        misspelt = [n for n in entries if difflib.get_close_matches(n, allowed, n=1)]
        if misspelt:
            _unknown(ctx, entries[misspelt[0]][0], "key", misspelt[0], allowed)
        else:
            ctx.error(node, f"a condition needs one of: {', '.join(allowed)}")
        return None
    key = entries[kind][0]
    if kind not in allowed:
        if in_event:
            ctx.error(
                key, f"'{kind}' is not allowed in an event's where (use: {', '.join(allowed)})"
            )
        else:
            ctx.error(key, "'property' conditions are only allowed inside an event's where")
        return None
    if kind in ("all", "any"):
        return _group(ctx, entries, kind, env, in_event)
    if kind == "not":
        _check_keys(ctx, entries, _KINDS["not"].names)
        inner = _condition(ctx, entries["not"][1], env, in_event)
        return m.Not(inner) if inner is not None else None
    if kind == "segment":
        return _segment_condition(ctx, entries, env)
    if kind == "event":
        return _event_condition(ctx, node, entries, env)
    return _subject_condition(ctx, node, entries, kind, env)


def _group(ctx: _Ctx, entries: Entries, kind: str, env: _Env, in_event: bool) -> m.Condition | None:
    """``all: [...]`` or ``any: [...]``; empty lists are allowed (true, false)."""
    mark = ctx.mark()
    _check_keys(ctx, entries, _KINDS[kind].names)
    items = _list(ctx, entries[kind][1], f"'{kind}'")
    parsed = [_condition(ctx, item, env, in_event) for item in items or []]
    if ctx.failed_since(mark) or items is None:
        return None
    return (m.All if kind == "all" else m.Any)(tuple(parsed))


def _segment_condition(ctx: _Ctx, entries: Entries, env: _Env) -> m.SegmentCondition | None:
    """``{segment: NAME}``; the name is checked once every spec is known."""
    _check_keys(ctx, entries, _KINDS["segment"].names)
    node = entries["segment"][1]
    name = _text(ctx, node, "segment")
    if name is None:
        return None
    if env.refs is not None:
        env.refs.append((name, node))
    return m.SegmentCondition(name)


def _subject_condition(
    ctx: _Ctx, node: Node, entries: Entries, kind: str, env: _Env
) -> m.Condition | None:
    """``{attribute|trait|property: NAME, OP: VALUE, ignore_case?}``."""
    name_node = entries[kind][1]
    if kind == "trait":
        subject = _trait_subject(ctx, name_node, env)
    else:
        table = env.attributes if kind == "attribute" else env.properties
        subject = _column_subject(ctx, name_node, kind, table)
    test = _test(ctx, node, entries, subject, _non_operators(_KINDS[kind]))
    if test is None or subject is None:
        return None
    name = name_node.value
    if kind == "attribute":
        return m.AttributeCondition(name, test)
    if kind == "trait":
        return m.TraitCondition(name, test)
    return m.PropertyCondition(name, test)


def _trait_subject(ctx: _Ctx, node: Node, env: _Env) -> _Subject | None:
    name = _text(ctx, node, "trait")
    if name is None:
        return None
    if env.traits is None:
        return _Subject(f"trait '{name}'", None)
    if name not in env.traits:
        _unknown(ctx, node, "trait", name, list(env.traits), "_traits.yml")
        return None
    return _Subject(f"trait '{name}'", env.traits[name])


# ---- events ---------------------------------------------------------------------------------


def _event_names(ctx: _Ctx, node: Node | None) -> tuple[str, ...] | None:
    """``event: NAME`` or a non-empty list of names, as a sorted tuple.

    Sorting and de-duplicating makes equal filters compare equal, which lets the
    compiler share one measure between specs.
    """
    if node is None:
        return None
    items = node.value if isinstance(node, SequenceNode) else [node]
    if not items:
        ctx.error(node, "event needs at least one event name")
        return None
    names = [_text(ctx, item, "an event name") for item in items]
    for item, name in zip(items, names, strict=True):
        if name is not None and not name.strip():
            ctx.error(item, "an event name must not be empty")
            return None
    if any(name is None for name in names):
        return None
    return tuple(sorted(set(names)))  # type: ignore[arg-type]


def _window(ctx: _Ctx, entries: Entries) -> m.Window | None:
    """The one optional window of an event filter."""
    key = _one_of(ctx, entries, WINDOW_KEYS, "an event condition has at most one window")
    if key is None:
        return None
    node = entries[key][1]
    if key == "within":
        duration = _duration(ctx, node, "within")
        return m.WithinWindow(duration) if duration else None
    if key in ("before", "after"):
        at = _time(ctx, node, key)
        if at is None:
            return None
        return m.BeforeWindow(at) if key == "before" else m.AfterWindow(at)
    items = _list(ctx, node, "between")
    if items is None:
        return None
    if len(items) != 2:
        ctx.error(node, f"between takes exactly 2 times [start, end], got {len(items)}")
        return None
    start, end = (_time(ctx, item, "between") for item in items)
    return m.BetweenWindow(start, end) if start and end else None


def _event_filter(ctx: _Ctx, node: Node, entries: Entries, env: _Env) -> m.EventFilter | None:
    """``event``, ``where`` and the window: which events qualify."""
    mark = ctx.mark()
    events = _event_names(ctx, _require(ctx, node, entries, "event", "an event condition"))
    where_node = _value_of(entries, "where")
    where = _condition(ctx, where_node, env, in_event=True) if where_node is not None else None
    window = _window(ctx, entries)
    if ctx.failed_since(mark) or events is None:
        return None
    return m.EventFilter(events, where, window)


def _property_for_measure(ctx: _Ctx, node: Node | None, kind: str, env: _Env) -> _Subject | None:
    """The property a sum/avg/min/max aggregates, with its type checked."""
    if node is None:
        return None
    subject = _column_subject(ctx, node, "property", env.properties)
    if subject is None or subject.type is None:
        return subject
    allowed = ("number",) if kind in ("sum", "avg") else ("number", "timestamp")
    if subject.type not in allowed:
        ctx.error(
            node,
            f"{kind} needs a {' or '.join(allowed)} property; {subject.label} is {subject.type}",
        )
        return None
    return _Subject(f"{kind} of '{node.value}'", subject.type)


def _measure_type(kind: str, property_type: m.ColumnType | None) -> m.ColumnType | None:
    """The value type of a measure (SPEC 1.4)."""
    if kind in ("count", "active_days", "sum", "avg"):
        return "number"
    if kind in ("first_occurred", "last_occurred"):
        return "timestamp"
    return property_type


def _measure_test(ctx: _Ctx, kind: str, node: Node, env: _Env) -> tuple[str | None, m.Test | None]:
    """``count: {OP: V}`` or ``sum: {property: P, OP: V}``: (property, test)."""
    entries = _entries(ctx, node, kind)
    if entries is None:
        return None, None
    if kind in m.PROPERTY_MEASURES:
        prop_node = _require(ctx, node, entries, "property", kind)
        subject = _property_for_measure(ctx, prop_node, kind, env)
        test = _test(ctx, node, entries, subject, _non_operators(grammar.PROPERTY_TEST))
        return (prop_node.value if prop_node is not None else None), test
    subject = _Subject(kind, _measure_type(kind, None))
    return None, _test(ctx, node, entries, subject, ())


def _sequence(ctx: _Ctx, key: str, node: Node, env: _Env) -> m.Sequence | None:
    """``followed_by`` / ``not_followed_by: {event, within?, where?}``."""
    mark = ctx.mark()
    entries = _entries(ctx, node, key)
    if entries is None:
        return None
    _check_keys(ctx, entries, grammar.SEQUENCE.names)
    events = _event_names(ctx, _require(ctx, node, entries, "event", key))
    within = _duration(ctx, _value_of(entries, "within"), "within")
    where_node = _value_of(entries, "where")
    where = _condition(ctx, where_node, env, in_event=True) if where_node is not None else None
    if ctx.failed_since(mark) or events is None:
        return None
    return m.Sequence(key == "followed_by", events, where, within)


def _occurred(ctx: _Ctx, entries: Entries) -> m.Test | None:
    """``is: true`` (occurred at least once, the default) or ``is: false`` (never)."""
    node = entries["is"][1]
    if _kind(node) == "boolean":
        return DEFAULT_TEST if _CONSTRUCTOR.construct_yaml_bool(node) else NEVER_TEST
    ctx.error(
        node,
        f"is on an event condition takes true (occurred) or false (never), got {_describe(node)}; "
        "to test how many times, write count: {gte: 1}",
    )
    return None


def _event_condition(ctx: _Ctx, node: Node, entries: Entries, env: _Env) -> m.EventCondition | None:
    """An event condition (SPEC 1.4): filter, at most one measure, at most one sequence."""
    mark = ctx.mark()
    _check_keys(ctx, entries, EVENT_KEYS)
    event_filter = _event_filter(ctx, node, entries, env)
    kind = _one_of(ctx, entries, grammar.EVENT_TEST_KEYS, "an event condition has at most one measure")
    never = False
    if kind == "is":
        kind, prop, test = None, None, _occurred(ctx, entries)
        never = test == NEVER_TEST
    else:
        prop, test = _measure_test(ctx, kind, entries[kind][1], env) if kind else (None, DEFAULT_TEST)
    seq_key = _one_of(ctx, entries, SEQUENCE_KINDS, "use followed_by or not_followed_by, not both")
    if seq_key and never:
        ctx.error(
            entries["is"][0],
            f"is: false (never occurred) cannot be combined with {seq_key}: a user with no "
            "qualifying event has none to follow; write {not: {event: ...}} around the condition instead",
        )
    sequence = _sequence(ctx, seq_key, entries[seq_key][1], env) if seq_key else None
    if ctx.failed_since(mark) or event_filter is None or test is None:
        return None
    measure = m.Measure(kind or "count", event_filter, prop)  # type: ignore[arg-type]
    return m.EventCondition(measure, test, sequence)
