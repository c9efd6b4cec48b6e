"""Parse and validate a specs directory into :class:`~segments.spec.model.Project`.

The YAML is composed, not loaded, so that every node keeps its line and column and
every error can say ``file:line:col``. The parser never stops at the first problem:
each file collects its errors, files are checked one after another, then the
cross-file rules (segment references, duplicates, cycles) run, and every error of
every file is raised together as one :class:`~segments.errors.SpecErrors`.

Conventions used throughout:
  * a parsing function returns the model it built, or ``None`` when the input was
    absent or wrong (the wrong case has already been reported);
  * a builder takes ``mark = ctx.mark()`` first and returns ``None`` if
    ``ctx.failed_since(mark)``, so that no half-validated model is ever built.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import math
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from segments.errors import SpecError, SpecErrors
from segments.spec import grammar
from segments.spec import model as m
from segments.spec.timeparse import parse_duration, parse_time

# ---- names and vocabularies --------------------------------------------------------

SEGMENT_NAME_RE = re.compile(grammar.SEGMENT_NAME)
TIER_NAME_RE = re.compile(grammar.TIER_NAME)
IDENTIFIER_RE = re.compile(grammar.IDENTIFIER)
MAX_NAME_LENGTH = 63

CATALOG_FILE, TRAITS_FILE, DESTINATIONS_FILE = "_catalog", "_traits", "_destinations"
CONFIG_FILES = (CATALOG_FILE, TRAITS_FILE, DESTINATIONS_FILE)
YAML_SUFFIXES = (".yml", ".yaml")
#: ``<spec>.tests.yml`` beside a spec holds its tests (see :mod:`segments.spec_tests`), not a spec.
TESTS_SUFFIX = ".tests"

DESTINATION_TYPES = ("webhook", "intercom", "chatwoot", "customerio", "braze", "wati", "csv")
MATCH_ON = grammar.MATCH_ON
RESERVED_TRAIT_NAMES = ("user_id",)  # user_traits already has this column (SPEC 2.5)

# Which keys each mapping takes: the grammar's table, which the JSON Schema shares.
SEGMENT_KEYS = grammar.SEGMENT.names
SEGMENT_KINDS = grammar.CONDITION.kinds
PROPERTY_KINDS = grammar.PROPERTY_CONDITION.kinds
CONDITION_KINDS = SEGMENT_KINDS + tuple(k for k in PROPERTY_KINDS if k not in SEGMENT_KINDS)
WINDOW_KEYS = grammar.WINDOW_KEYS
SEQUENCE_KINDS = grammar.SEQUENCE_KEYS
EVENT_KEYS = grammar.EVENT.names
TRAIT_MEASURE_KEYS = grammar.MEASURE_TRAIT.names
QUANTILE_KEYS = grammar.QUANTILE_TRAIT.names
_KINDS = {option.names[0]: option for option in grammar.CONDITION.options + grammar.PROPERTY_CONDITION.options}
CHECK_KEYS = grammar.CHECKS.names
# Equality and string operators are the ones that can compare case-insensitively.
IGNORE_CASE_OPS = m.EQUALITY_OPS + m.STRING_OPS

DEFAULT_TEST = m.Test("gte", 1, "number")
NEVER_TEST = m.Test("is", 0, "number")  # an event condition's ``is: false``
MAX_DEPTH = 64  # nesting of conditions or raw options; deeper is certainly a mistake
# YAML aliases can expand a small file into billions of conditions; no real spec has
# anywhere near this many.
MAX_CONDITIONS = 10_000

_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP, _MERGE = (
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "timestamp", "merge")
)
# YAML 1.1 reads 1e3 as text; a plain (unquoted) one is still meant as a number.
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?")
_CONSTRUCTOR = SafeConstructor()


# ---- error collection -----------------------------------------------------------------


@dataclass
class _Ctx:
    """The errors of one file, and where that file is."""

    file: str
    errors: list[SpecError] = field(default_factory=list)
    misspelt: set[int] = field(default_factory=set)  # ids of key nodes reported unknown
    conditions: int = 0  # conditions read so far, against MAX_CONDITIONS
    zone: dt.tzinfo | None = None  # the catalog's timezone: where a date's day starts

    def loc(self, node: Node | None) -> m.Location:
        """The 1-based location of ``node`` (the file's start when there is none)."""
        if node is None:
            return m.Location(self.file, 1, 1)
        return m.Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, node: Node | None, message: str) -> None:
        self.errors.append(SpecError(self.loc(node), message))

    def mark(self) -> int:
        return len(self.errors)

    def failed_since(self, mark: int) -> bool:
        return len(self.errors) > mark


def _hint(name: str, choices: Collection[str], *, list_up_to: int = 12) -> str:
    """A `` (did you mean 'x'?)`` suffix, or the short list of valid names.

    Examples:
        >>> _hint("withn", ["within", "before"])
        " (did you mean 'within'?)"
        >>> _hint("zzz", ["a", "b"])
        ' (expected one of: a, b)'
    """
    close = difflib.get_close_matches(name, list(choices), n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if 0 < len(choices) <= list_up_to:
        return f" (expected one of: {', '.join(choices)})"
    return ""


def _unknown(
    ctx: _Ctx,
    node: Node | None,
    what: str,
    name: str,
    choices: Collection[str],
    where_defined: str = "",
) -> None:
    """Report ``unknown <what> '<name>'`` with the closest valid name.

    With no valid name at all, ``where_defined`` (a file name) says where to add one.
    """
    hint = _hint(name, choices)
    if not choices and where_defined:
        hint = f" (none are defined: add it to {where_defined})"
    ctx.error(node, f"unknown {what} '{name}'{hint}")


# ---- YAML nodes -------------------------------------------------------------------------

Entries = dict[str, tuple[ScalarNode, Node]]


def _compose(ctx: _Ctx, path: Path) -> Node | None:
    """Read one YAML document as a node tree; syntax errors become spec errors."""
    try:
        text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        ctx.error(None, "file is not valid UTF-8 text")
        return None
    except OSError as exc:
        ctx.error(None, f"cannot read file: {exc.strerror or exc}")
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = m.Location(ctx.file, mark.line + 1, mark.column + 1) if mark else ctx.loc(None)
        detail = f" ({exc.context})" if exc.context else ""
        ctx.errors.append(SpecError(where, f"invalid YAML: {exc.problem}{detail}"))
        return None
    except (yaml.YAMLError, RecursionError) as exc:
        ctx.error(
            None, f"invalid YAML: {exc if isinstance(exc, yaml.YAMLError) else 'nesting too deep'}"
        )
        return None
    if node is None:
        ctx.error(None, "the file is empty")
    return node


def _kind(node: Node) -> str:
    """A short name for what a node holds, used to pick how to read it."""
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return {
        _STR: "text",
        _INT: "number",
        _FLOAT: "number",
        _BOOL: "boolean",
        _NULL: "null",
        _TIMESTAMP: "time",
    }.get(node.tag, "other")


def _describe(node: Node) -> str:
    """How a node reads in a message: ``number 49``, ``text 'abc'``, ``a list``."""
    kind = _kind(node)
    if kind in ("mapping", "list"):
        return f"a {kind}"
    if kind == "null":
        return "null"
    if kind == "text":
        return f"text {node.value!r}"
    if kind == "other":
        return f"a value tagged {node.tag}"
    return f"{kind} {node.value}"


def _pairs(ctx: _Ctx, node: MappingNode, depth: int = 0) -> Iterator[tuple[Node, Node, bool]]:
    """The key/value pairs of a mapping, ``<<`` merge keys expanded.

    Yields ``(key, value, merged)``; merged pairs come first so that the mapping's
    own keys override them, as YAML merge keys specify.
    """
    own = [(k, v) for k, v in node.value if k.tag != _MERGE]
    for key, value in node.value:
        if key.tag != _MERGE:
            continue
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, MappingNode) or depth > MAX_DEPTH:
                ctx.error(source, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            for k, v, _ in _pairs(ctx, source, depth + 1):
                yield k, v, True
    for key, value in own:
        yield key, value, False


def _entries(ctx: _Ctx, node: Node, what: str) -> Entries | None:
    """Read a mapping as ``{key: (key node, value node)}``; duplicate keys are errors."""
    if not isinstance(node, MappingNode):
        ctx.error(node, f"{what} must be a mapping, got {_describe(node)}")
        return None
    entries: Entries = {}
    own_keys: set[str] = set()
    for key, value, merged in _pairs(ctx, node):
        if not isinstance(key, ScalarNode):
            ctx.error(key, "a key must be a plain name")
            continue
        if not merged:
            if key.value in own_keys:
                ctx.error(key, f"duplicate key '{key.value}'")
                continue
            own_keys.add(key.value)
        entries[key.value] = (key, value)
    return entries


def _check_keys(
    ctx: _Ctx,
    entries: Entries,
    allowed: Collection[str],
    suggest: Collection[str] | None = None,
) -> bool:
    """Report every key not in ``allowed``, suggesting the closest of ``suggest``.

    ``suggest`` defaults to ``allowed``; it is narrower when some keys are known but
    wrong in context (an operator of another type) and get their own message.
    """
    ok = True
    for name, (key, _) in entries.items():
        if name not in allowed:
            _unknown(ctx, key, "key", name, allowed if suggest is None else suggest)
            ctx.misspelt.add(id(key))
            ok = False
    return ok


def _require(ctx: _Ctx, node: Node, entries: Entries, key: str, what: str) -> Node | None:
    """The value node of a required key, or an error at the mapping.

    A misspelling of the key already reported as unknown says it all: no second error.
    """
    if key in entries:
        return entries[key][1]
    if not _misspelt(ctx, entries, key):
        ctx.error(node, f"{what} needs '{key}'")
    return None


def _misspelt(ctx: _Ctx, entries: Entries, key: str) -> bool:
    """Whether an unknown key already reported in ``entries`` looks like ``key``."""
    unknown = [name for name, (k, _) in entries.items() if id(k) in ctx.misspelt]
    return bool(difflib.get_close_matches(key, unknown, n=1))


def _value_of(entries: Entries, key: str) -> Node | None:
    return entries[key][1] if key in entries else None


def _one_of(ctx: _Ctx, entries: Entries, keys: Collection[str], message: str) -> str | None:
    """The single key of ``keys`` present (or None); a second one is an error at it."""
    present = [k for k in entries if k in keys]
    for extra in present[1:]:
        ctx.error(entries[extra][0], f"{message}: found '{present[0]}' and '{extra}'")
    return present[0] if present else None


# ---- scalars --------------------------------------------------------------------------------


def _quote_hint(node: Node) -> str:
    if isinstance(node, ScalarNode) and _kind(node) not in ("text", "null", "other"):
        return f": quote it ('{node.value}')"
    return ""


def _text(ctx: _Ctx, node: Node | None, what: str) -> str | None:
    """A text scalar; a number, boolean or time must be quoted to be text."""
    if node is None:
        return None
    if _kind(node) == "text":
        return node.value
    ctx.error(node, f"{what} must be text, got {_describe(node)}{_quote_hint(node)}")
    return None


def _name(
    ctx: _Ctx, node: Node | None, what: str, pattern: re.Pattern[str], rule: str
) -> str | None:
    """A text scalar that must match ``pattern`` (``rule`` explains it)."""
    text = _text(ctx, node, what)
    if text is not None and not pattern.fullmatch(text):
        ctx.error(node, f"invalid {what} '{text}': {rule}")
        return None
    return text


def _free_text(ctx: _Ctx, node: Node | None, what: str) -> str | None:
    """Prose (description, owner, tags): any scalar, taken exactly as written."""
    if node is None:
        return None
    if isinstance(node, ScalarNode) and _kind(node) != "null":
        return node.value
    ctx.error(node, f"{what} must be text, got {_describe(node)}")
    return None


def _bool(ctx: _Ctx, node: Node | None, what: str) -> bool | None:
    if node is None:
        return None
    if _kind(node) == "boolean":
        return bool(_CONSTRUCTOR.construct_yaml_bool(node))
    ctx.error(node, f"{what} must be true or false, got {_describe(node)}")
    return None


def _as_number(node: Node) -> int | float | None:
    """The number a scalar holds (booleans are not numbers), or None."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        if node.tag == _INT:
            return int(_CONSTRUCTOR.construct_yaml_int(node))
        if node.tag == _FLOAT:
            number = float(_CONSTRUCTOR.construct_yaml_float(node))
        elif node.tag == _STR and node.style is None and _PLAIN_NUMBER_RE.fullmatch(node.value):
            number = float(node.value.replace("_", ""))
        else:
            return None
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number(ctx: _Ctx, node: Node | None, what: str) -> int | float | None:
    if node is None:
        return None
    number = _as_number(node)
    if number is None:
        quoted = _kind(node) == "text" and _PLAIN_NUMBER_RE.fullmatch(node.value.strip())
        hint = ": remove the quotes" if quoted else ""
        finite = " finite" if _kind(node) == "number" else ""  # .nan, .inf
        ctx.error(node, f"{what} must be a{finite} number, got {_describe(node)}{hint}")
    return number


def _int(ctx: _Ctx, node: Node | None, what: str, minimum: int) -> int | None:
    if node is None:
        return None
    number = _as_number(node)
    if not isinstance(number, int) or number < minimum:
        ctx.error(node, f"{what} must be a whole number >= {minimum}, got {_describe(node)}")
        return None
    return number


def _list(ctx: _Ctx, node: Node | None, what: str) -> list[Node] | None:
    if node is None:
        return None
    if isinstance(node, SequenceNode):
        return list(node.value)
    ctx.error(node, f"{what} must be a list, got {_describe(node)}")
    return None


def _duration(ctx: _Ctx, node: Node | None, what: str) -> m.Duration | None:
    if node is None:
        return None
    if _kind(node) == "text":
        try:
            return parse_duration(node.value)
        except ValueError as exc:
            ctx.error(node, f"{what}: {exc}")
            return None
    hint = f": add a unit, e.g. {node.value}d" if _kind(node) == "number" else ""
    ctx.error(node, f"{what} must be a duration such as 48h or 7d, got {_describe(node)}{hint}")
    return None


def _time(ctx: _Ctx, node: Node | None, what: str) -> m.TimeValue | None:
    """A time: text (``now - 7d``, ``'2024-06-23'``) or a YAML timestamp."""
    if node is None:
        return None
    kind = _kind(node)
    try:
        if kind == "time":
            try:  # the YAML loader knows every timestamp shape YAML allows
                return parse_time(_CONSTRUCTOR.construct_yaml_timestamp(node), ctx.zone)
            except (ValueError, AttributeError, TypeError):
                return parse_time(node.value, ctx.zone)  # explains what is wrong with it
        if kind == "text":
            return parse_time(node.value, ctx.zone)
    except ValueError as exc:
        ctx.error(node, f"{what}: {exc}")
        return None
    ctx.error(node, f"{what} must be a time such as now - 7d or 2026-01-31, got {_describe(node)}")
    return None


def _plain(ctx: _Ctx, node: Node, depth: int = 0) -> object:
    """A node as a plain Python value, for options kept as written."""
    if depth > MAX_DEPTH:
        ctx.error(node, "value nested too deeply")
        return None
    if isinstance(node, MappingNode):
        entries = _entries(ctx, node, "a value") or {}
        return {name: _plain(ctx, value, depth + 1) for name, (_, value) in entries.items()}
    if isinstance(node, SequenceNode):
        return [_plain(ctx, item, depth + 1) for item in node.value]
    kind = _kind(node)
    if kind == "number":
        return _as_number(node)
    if kind == "boolean":
        return bool(_CONSTRUCTOR.construct_yaml_bool(node))
    if kind == "null":
        return None
    if kind == "time":
        time = _time(ctx, node, "a time")
        return time.at if isinstance(time, m.AbsoluteTime) else node.value
    if kind == "other":
        ctx.error(node, f"unsupported YAML tag {node.tag}")
    return node.value


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


# ---- segment specs ---------------------------------------------------------------------------


@dataclass
class _SpecInfo:
    """What the cross-file checks need from a spec, even a broken one."""

    ctx: _Ctx
    name: str
    defines: list[tuple[str, Node | None]]  # segment names, each with its defining node
    tiered: bool = False
    deps: dict[str, list[tuple[str, Node]]] = field(default_factory=dict)  # name -> references
    refs: list[tuple[str, Node]] = field(default_factory=list)  # every reference in the file


_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM_RE = re.compile(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?")


def cron_problem(text: str) -> str | None:
    """What is wrong with a 5-field cron expression, or None if it is valid.

    Examples:
        >>> cron_problem("0 */6 * * mon-fri") is None
        True
        >>> cron_problem("0 6 * *")
        'expected 5 fields (minute hour day-of-month month day-of-week), got 4'
        >>> cron_problem("61 6 * * *")
        "minute '61' is out of range 0-59"
    """
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for value, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in value.lower().split(","):
            match = _CRON_ITEM_RE.fullmatch(item)
            if match is None or match.group(2) == "0":
                return f"invalid {label} '{value}'"
            if match.group(1) == "*":
                continue
            for part in match.group(1).split("-"):
                if part in names:  # jan is month 1, sun is weekday 0
                    number = names.index(part) + low
                elif part.isdigit():
                    number = int(part)
                else:
                    return f"invalid {label} '{value}'"
                if not low <= number <= high:
                    return f"{label} '{part}' is out of range {low}-{high}"
    return None


def _refresh(ctx: _Ctx, node: Node | None) -> str | None:
    """``refresh``: a 5-field cron in UTC (unquoted ``0 * * * *`` is plain text)."""
    text = _free_text(ctx, node, "refresh")
    if text is None:
        return None
    problem = cron_problem(text)
    if problem:
        ctx.error(node, f"invalid refresh cron '{text}': {problem}")
        return None
    return text


def _holdout(ctx: _Ctx, node: Node | None) -> int | float | None:
    number = _number(ctx, node, "holdout")
    low, high = grammar.HOLDOUT.minimum, grammar.HOLDOUT.maximum
    if number is not None and not low <= number <= high:
        ctx.error(node, f"holdout must be a percent between {low} and {high}, got {number}")
        return None
    return number


def _upload(ctx: _Ctx, node: Node, specs_dir: Path, env: _Env) -> m.Upload | None:
    """``upload: {file, match_on}``; reads the keys from the CSV now."""
    mark = ctx.mark()
    entries = _entries(ctx, node, "upload")
    if entries is None:
        return None
    _check_keys(ctx, entries, grammar.UPLOAD.names)
    match_node = _require(ctx, node, entries, "match_on", "upload")
    match_on = _text(ctx, match_node, "match_on")
    if match_on is not None and match_on not in MATCH_ON:
        _unknown(ctx, match_node, "match_on", match_on, MATCH_ON)
        match_on = None
    elif (
        match_on in ("email", "phone")
        and env.attributes is not None
        and match_on not in env.attributes
    ):
        ctx.error(
            match_node, f"match_on: {match_on} needs a users attribute '{match_on}' in _catalog.yml"
        )
    file_node = _require(ctx, node, entries, "file", "upload")
    file_text = _text(ctx, file_node, "file")
    if file_text is None:
        return None
    path = _confined_upload(ctx, file_node, specs_dir, file_text)
    if path is None:
        return None
    if not path.is_file():
        siblings = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
        ctx.error(
            file_node,
            f"upload file '{file_text}' not found in {specs_dir}"
            f"{_hint(path.name, siblings, list_up_to=0)}",
        )
        return None
    if match_on is None:
        return None
    keys = _read_upload(ctx, file_node, path, file_text, match_on)
    if keys is None or ctx.failed_since(mark):
        return None
    return m.Upload(path, match_on, keys)  # type: ignore[arg-type]


def _confined_upload(ctx: _Ctx, node: Node, specs_dir: Path, file_text: str) -> Path | None:
    """The upload's path when it stays inside the specs folder, else None (reported).

    A spec comes from whoever can open a pull request: an absolute path, ``..`` or a
    symlink leading out would let it read any file the build can (``/proc/self/environ``,
    keys), and its content would reach SQL and error messages.
    """
    relative = Path(file_text)
    if relative.is_absolute() or relative.drive or ".." in relative.parts:
        ctx.error(node, f"upload file '{file_text}' must be a path inside the specs folder, relative to it, without '..'")
        return None
    root = specs_dir.resolve()
    path = specs_dir / relative
    if not path.resolve().is_relative_to(root):
        ctx.error(node, f"upload file '{file_text}' leads outside the specs folder (a symlink): uploads must live inside it")
        return None
    return path


def _read_upload(
    ctx: _Ctx, node: Node, path: Path, shown: str, column: str
) -> tuple[str, ...] | None:
    """The raw cells of ``column``, in file order (duplicates and empties kept)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]  # [] is a blank line
    except UnicodeDecodeError:
        ctx.error(node, f"upload file '{shown}' is not UTF-8 text")
        return None
    except OSError as exc:
        ctx.error(node, f"cannot read upload file '{shown}': {exc.strerror or type(exc).__name__}")
        return None
    except csv.Error:
        # csv's messages may quote the offending text: say what, not the content.
        ctx.error(node, f"upload file '{shown}' is not valid CSV (a NUL byte or a field over the size limit)")
        return None
    if not rows:
        ctx.error(node, f"upload file '{shown}' is empty: it needs a header row naming '{column}'")
        return None
    header = [cell.strip() for cell in rows[0]]
    if column not in header:
        # Header cells are file content: never echoed (SPEC 3.2), only their count.
        ctx.error(node, f"upload file '{shown}' has no column '{column}' in its header row ({len(header)} columns)")
        return None
    index = header.index(column)
    return tuple(row[index] if index < len(row) else "" for row in rows[1:])


def _tiers(
    ctx: _Ctx, node: Node, name: str | None, env: _Env
) -> tuple[list[tuple[m.Tier | None, Node]], list[list[tuple[str, Node]]]]:
    """``tiers``: each tier with its name node, and each tier's segment references."""
    items = _list(ctx, node, "tiers")
    if items is None:
        return [], []
    if not items:
        ctx.error(node, "tiers needs at least one tier")
    tiers: list[tuple[m.Tier | None, Node]] = []
    refs: list[list[tuple[str, Node]]] = []
    seen: set[str] = set()
    for position, item in enumerate(items, start=1):
        mark = ctx.mark()
        tier_refs: list[tuple[str, Node]] = []
        refs.append(tier_refs)
        entries = _entries(ctx, item, "a tier")
        if entries is None:
            tiers.append((None, item))  # a mapping node: no name to define
            continue
        _check_keys(ctx, entries, grammar.TIER.names)
        name_node = _require(ctx, item, entries, "name", "a tier")
        tier = _name(
            ctx,
            name_node,
            "tier name",
            TIER_NAME_RE,
            "lower-case letters, digits and _, starting with a letter",
        )
        if tier is not None:
            if tier in seen:
                ctx.error(name_node, f"duplicate tier name '{tier}'")
            seen.add(tier)
            if name is not None and len(f"{name}__{tier}") > MAX_NAME_LENGTH:
                ctx.error(
                    name_node,
                    f"segment name '{name}__{tier}' is longer than {MAX_NAME_LENGTH} characters",
                )
        where_node = _value_of(entries, "where")
        where = None
        if where_node is not None:
            where = _condition(ctx, where_node, replace(env, refs=tier_refs), in_event=False)
        elif position < len(items):
            ctx.error(item, "only the last tier may omit where")
        ok = not ctx.failed_since(mark) and tier is not None
        tiers.append((m.Tier(tier, where) if ok else None, name_node or item))  # type: ignore[arg-type]
    return tiers, refs


def _priority(
    ctx: _Ctx, node: Node, name: str | None
) -> tuple[list[tuple[m.Tier | None, Node]], list[list[tuple[str, Node]]]]:
    """``priority: [a, b, c]``: one tier per listed segment, ``{segment: X}`` its rule,
    so a user is in the first listed segment that holds them only (first match wins,
    as tiers do). The listed names are checked with every spec known, as references."""
    items = _list(ctx, node, "priority")
    if not items:
        if items is not None:
            ctx.error(node, "priority needs at least one segment")
        return [], []
    tiers: list[tuple[m.Tier | None, Node]] = []
    refs: list[list[tuple[str, Node]]] = []
    seen: set[str] = set()
    for item in items:
        segment = _text(ctx, item, "a segment of priority")
        refs.append([(segment, item)] if segment is not None else [])
        if segment is None:
            tiers.append((None, item))
            continue
        if segment in seen:
            ctx.error(item, f"segment '{segment}' is listed twice in priority")
        seen.add(segment)
        if name is not None and len(f"{name}__{segment}") > MAX_NAME_LENGTH:
            ctx.error(item, f"segment name '{name}__{segment}' is longer than {MAX_NAME_LENGTH} characters")
        tiers.append((m.Tier(segment, m.SegmentCondition(segment)), item))
    return tiers, refs


def _sync(
    ctx: _Ctx, node: Node, destinations: dict[str, m.Destination] | None, experiment: m.Experiment | None = None,
) -> tuple[m.SyncTarget, ...] | None:
    """``sync: [{destination, arm?, ...options}]``; options are kept as written."""
    mark = ctx.mark()
    targets = []
    for item in _list(ctx, node, "sync") or []:
        entries = _entries(ctx, item, "a sync entry")
        if entries is None:
            continue
        dest_node = _require(ctx, item, entries, "destination", "a sync entry")
        dest = _text(ctx, dest_node, "destination")
        if dest is not None and destinations is not None and dest not in destinations:
            _unknown(ctx, dest_node, "destination", dest, list(destinations), "_destinations.yml")
        arm = None
        if "arm" in entries:
            arm_node = entries["arm"][1]
            arm = _text(ctx, arm_node, "arm")
            arms = [a for a, _ in experiment.arms] if experiment is not None else []
            if arm is not None and not arms:
                ctx.error(arm_node, "arm: this spec has no experiment")
            elif arm is not None and arm not in arms:
                _unknown(ctx, arm_node, "arm", arm, arms, "the experiment's arms")
        options = {k: _plain(ctx, v) for k, (_, v) in entries.items() if k not in ("destination", "arm")}
        targets.append(m.SyncTarget(dest, options, arm))  # type: ignore[arg-type]
    return None if ctx.failed_since(mark) else tuple(targets)


def _experiment(ctx: _Ctx, node: Node, spec_name: str) -> m.Experiment | None:
    """``experiment: {name?, arms: {arm: percent, ...}}``: at least two arms, positive
    percents with at most two decimals, adding up to 100."""
    mark = ctx.mark()
    entries = _entries(ctx, node, "experiment")
    if entries is None:
        return None
    _check_keys(ctx, entries, grammar.EXPERIMENT.names)
    name = spec_name
    if "name" in entries:
        name = _name(ctx, entries["name"][1], "experiment name", SEGMENT_NAME_RE,
                     "lower-case letters, digits and _, starting with a letter, at most 63 characters") or spec_name
    arms_node = _require(ctx, node, entries, "arms", "an experiment")
    arms_entries = _entries(ctx, arms_node, "arms") if arms_node is not None else None
    if arms_entries is None:
        return None
    arms: list[tuple[str, float]] = []
    for arm, (key_node, value_node) in arms_entries.items():
        if not TIER_NAME_RE.fullmatch(arm):
            ctx.error(key_node, f"invalid arm name '{arm}': lower-case letters, digits and _, starting with a letter")
        percent = _number(ctx, value_node, f"arm {arm}")
        if percent is None:
            continue
        if percent <= 0 or abs(round(percent * 100) - percent * 100) > 1e-6:
            ctx.error(value_node, f"arm {arm}: a percent above 0 with at most two decimals, got {percent}")
            continue
        arms.append((arm, percent))
    if len(arms_entries) < 2:
        ctx.error(arms_node, "an experiment needs at least two arms (a control group alone is holdout: N)")
    total = sum(round(p * 100) for _, p in arms)
    if not ctx.failed_since(mark) and total != 100 * 100:
        ctx.error(arms_node, f"the arms add up to {total / 100:g}%, not 100%")
    return None if ctx.failed_since(mark) else m.Experiment(name, tuple(arms))


def _checks(ctx: _Ctx, node: Node) -> m.Checks | None:
    """``checks: {max_size_change_pct: N}``; what is not written keeps its default."""
    entries = _entries(ctx, node, "checks")
    if entries is None:
        return None
    _check_keys(ctx, entries, CHECK_KEYS)
    pct_node = _value_of(entries, "max_size_change_pct")
    pct = _number(ctx, pct_node, "max_size_change_pct")
    if pct is None:
        return m.Checks()
    if pct <= 0:
        ctx.error(pct_node, f"max_size_change_pct must be a positive percent, got {pct}")
        return None
    return m.Checks(max_size_change_pct=pct)


def _segment(
    ctx: _Ctx,
    path: Path,
    root: Node | None,
    specs_dir: Path,
    env: _Env,
    destinations: dict[str, m.Destination] | None,
) -> tuple[m.SegmentSpec | None, _SpecInfo]:
    """One segment spec file (SPEC 1.2, 1.6)."""
    mark = ctx.mark()
    # The file stem is the name other files see, even when `name:` is wrong.
    info = _SpecInfo(ctx, path.stem, [])
    entries = _entries(ctx, root, "a segment spec") if root is not None else None
    if entries is None:
        info.defines.append((path.stem, root))
        return None, info
    _check_keys(ctx, entries, SEGMENT_KEYS)
    name_node = _require(ctx, root, entries, "name", "a segment spec")
    name = _name(
        ctx,
        name_node,
        "segment name",
        SEGMENT_NAME_RE,
        "lower-case letters, digits and _, starting with a letter, at most 63 characters",
    )
    if name is not None and name != path.stem:
        ctx.error(name_node, f"name '{name}' must equal the file name stem '{path.stem}'")
    description = _free_text(ctx, _value_of(entries, "description"), "description")
    owner = _free_text(ctx, _value_of(entries, "owner"), "owner")
    tags = tuple(
        _free_text(ctx, t, "a tag") for t in _list(ctx, _value_of(entries, "tags"), "tags") or []
    )
    refresh = _refresh(ctx, _value_of(entries, "refresh")) or m.DEFAULT_REFRESH
    holdout = _holdout(ctx, _value_of(entries, "holdout"))
    experiment = None
    if "experiment" in entries:
        if "holdout" in entries:
            ctx.error(entries["experiment"][0], "holdout and experiment cannot be combined: give the control group an arm")
        experiment = _experiment(ctx, entries["experiment"][1], name or path.stem)

    top_refs: list[tuple[str, Node]] = []
    where_node = _value_of(entries, "where")
    where = None
    if where_node is not None:
        where = _condition(ctx, where_node, replace(env, refs=top_refs), in_event=False)
    upload = None
    if "upload" in entries:
        upload = _upload(ctx, entries["upload"][1], specs_dir, env)
    tiers: list[tuple[m.Tier | None, Node]] = []
    priority: tuple[str, ...] = ()
    for key in ("tiers", "priority"):
        for other in ("upload", "tiers", "where") if key == "priority" else ("upload",):
            if key in entries and other in entries:
                ctx.error(entries[key][0], f"{other} and {key} cannot be combined in one spec")
    if "tiers" in entries or "priority" in entries:
        info.tiered = True
        if "tiers" in entries:
            tiers, tier_refs = _tiers(ctx, entries["tiers"][1], info.name, env)
        else:
            tiers, tier_refs = _priority(ctx, entries["priority"][1], info.name)
            priority = tuple(tier.name for tier, _ in tiers if tier is not None)
        info.refs.extend(ref for refs in tier_refs for ref in refs)
        for index, (_, node) in enumerate(tiers):
            if _kind(node) != "text" or f"{info.name}__{node.value}" in info.deps:
                continue  # a broken or duplicate tier name, already reported
            full = f"{info.name}__{node.value}"
            info.defines.append((full, node))
            # First match wins: tier i depends on every earlier tier's rule too.
            info.deps[full] = top_refs + [r for refs in tier_refs[: index + 1] for r in refs]
    else:
        info.defines.append((info.name, name_node or root))
        info.deps[info.name] = top_refs
    info.refs.extend(top_refs)
    if (
        where_node is None
        and not {"upload", "tiers", "priority"} & entries.keys()
        and not _misspelt(ctx, entries, "where")
    ):
        ctx.error(root, "a segment spec needs 'where' (or 'upload', 'tiers' or 'priority')")
    sync = ()
    if "sync" in entries:
        sync = _sync(ctx, entries["sync"][1], destinations, experiment)
    checks = m.Checks()
    if "checks" in entries:
        checks = _checks(ctx, entries["checks"][1])

    if ctx.failed_since(mark):
        return None, info
    spec = m.SegmentSpec(
        name=name,
        path=path,
        description=description,
        owner=owner,
        tags=tags,  # type: ignore[arg-type]
        refresh=refresh,
        where=where,
        holdout=holdout,
        experiment=experiment,
        upload=upload,
        tiers=tuple(tier for tier, _ in tiers),
        priority=priority,
        sync=sync,
        checks=checks,  # type: ignore[arg-type]
        location=ctx.loc(root),  # type: ignore[arg-type]
    )
    return spec, info


# ---- cross-file rules -------------------------------------------------------------------------


def _cycles(graph: Mapping[str, list[tuple[str, Node]]]) -> list[tuple[list[str], Node]]:
    """Every distinct cycle a depth-first walk meets, each as ``[a, b, a]`` and the
    node of its first reference.

    Cycles are rotated to start at their smallest name so each is reported once,
    in the same words on every run.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: dict[tuple[str, ...], Node] = {}
    for start in sorted(graph):
        if start in state:
            continue
        path: list[str] = [start]
        stack: list[Iterator[tuple[str, Node]]] = [iter(graph.get(start, []))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            target = step[0]
            if state.get(target) == 1:
                cycle = path[path.index(target) :]
                turn = cycle.index(min(cycle))
                cycle = cycle[turn:] + cycle[:turn]
                first = next(n for t, n in graph[cycle[0]] if t == (cycle + cycle[:1])[1])
                found.setdefault(tuple(cycle), first)
            elif target not in state and target in graph:
                state[target] = 1
                path.append(target)
                stack.append(iter(graph[target]))
    return [([*cycle, cycle[0]], node) for cycle, node in sorted(found.items())]


def _check_segments(infos: list[_SpecInfo]) -> None:
    """Duplicate names, unknown segment references and cycles, across all specs."""
    defined: dict[str, tuple[_SpecInfo, Node | None]] = {}
    for info in infos:
        for name, node in info.defines:
            if name in defined:
                other, other_node = defined[name]
                info.ctx.error(
                    node,
                    f"duplicate segment name '{name}' "
                    f"(also defined at {other.ctx.loc(other_node)})",
                )
            else:
                defined[name] = (info, node)
    tiered = {info.name: [n for n, _ in info.defines] for info in infos if info.tiered}
    graph: dict[str, list[tuple[str, Node]]] = {}
    owner: dict[int, _Ctx] = {}
    for info in infos:
        for segment, refs in info.deps.items():
            graph.setdefault(segment, [])
            for ref, node in refs:
                owner[id(node)] = info.ctx
                if ref in defined:
                    graph[segment].append((ref, node))
        for ref, node in info.refs:
            if ref in defined:
                continue
            if ref in tiered:
                info.ctx.error(
                    node,
                    f"'{ref}' has tiers and is not a segment itself; refer to "
                    f"one of: {', '.join(tiered[ref])}",
                )
            else:
                _unknown(info.ctx, node, "segment", ref, list(defined))
    for cycle, node in _cycles(graph):
        owner[id(node)].error(node, f"segment cycle: {' -> '.join(cycle)}")


# ---- entry point -----------------------------------------------------------------------------


def _spec_files(specs_dir: Path) -> list[Path]:
    """Every YAML file of the specs folder and its subfolders (teams group specs by
    owner), in a stable order; names starting with ``.`` are hidden, and folders whose
    names start with ``_`` or ``.`` are skipped (``_drafts/``, ``.git/``).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("_catalog.yml", "a.yml", "a.tests.yml", "growth/b.yaml", "growth/notes.txt",
    ...              "_drafts/c.yml", ".hidden/d.yml", ".e.yml", "uploads/vip.csv"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     _ = (root / name).write_text("")
    >>> [p.relative_to(root).as_posix() for p in _spec_files(root)]
    ['_catalog.yml', 'a.yml', 'growth/b.yaml']
    """
    found: list[Path] = []
    for folder, dirs, names in os.walk(specs_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        found.extend(
            Path(folder) / name
            for name in names
            if Path(name).suffix in YAML_SUFFIXES
            and not name.startswith(".")
            and Path(Path(name).stem).suffix != TESTS_SUFFIX  # <spec>.tests.yml: segments test reads it
            and (Path(folder) / name).is_file()
        )
    return sorted(found, key=lambda p: (p.parent != specs_dir, p.relative_to(specs_dir).as_posix()))


def load_project(specs_dir: Path) -> m.Project:
    """Parse and validate every file of a specs directory.

    Args:
        specs_dir: The directory holding ``_catalog.yml``, optional ``_traits.yml``
            and ``_destinations.yml``, and one ``<name>.yml`` per segment, there or
            in any subfolder (names stay unique across folders).

    Returns:
        The validated project; segments sorted by name.

    Raises:
        SpecErrors: Every error of every file, each as ``file:line:col: message``.
    """
    specs_dir = Path(specs_dir)
    if not specs_dir.is_dir():
        where = m.Location(str(specs_dir), 1, 1)
        raise SpecErrors([SpecError(where, "specs directory not found")])
    files = _spec_files(specs_dir)
    contexts: list[_Ctx] = []
    zone: dt.tzinfo | None = None  # the catalog's, once read

    def open_file(path: Path) -> tuple[_Ctx, Node | None]:
        ctx = _Ctx(str(path), zone=zone)
        contexts.append(ctx)
        return ctx, _compose(ctx, path)

    config: dict[str, list[Path]] = {}
    for path in files:
        if not path.name.startswith("_"):
            continue
        if path.parent != specs_dir:
            ctx = _Ctx(str(path))
            contexts.append(ctx)
            ctx.error(
                None,
                f"configuration files (names starting with '_') belong at the top of "
                f"{specs_dir}, not in a subfolder: move it there or rename it",
            )
            continue
        config.setdefault(path.stem, []).append(path)
    for stem, paths in config.items():
        for path in paths[1:]:
            ctx = _Ctx(str(path))
            contexts.append(ctx)
            ctx.error(None, f"{paths[0].name} and {path.name} are the same file: keep one")
        if stem not in CONFIG_FILES:
            ctx = _Ctx(str(paths[0]))
            contexts.append(ctx)
            _unknown(
                ctx,
                None,
                "configuration file",
                paths[0].name,
                [f"{name}{paths[0].suffix}" for name in CONFIG_FILES],
            )

    def config_root(stem: str) -> tuple[_Ctx, Node | None] | None:
        return open_file(config[stem][0]) if stem in config else None

    catalog_file = config_root(CATALOG_FILE)
    if catalog_file is None:
        ctx = _Ctx(str(specs_dir / f"{CATALOG_FILE}.yml"))
        contexts.append(ctx)
        ctx.error(None, "missing _catalog.yml (required: it says where users and events live)")
        catalog = _CatalogResult(None, None, None)
    else:
        catalog = _catalog(*catalog_file)
    if catalog.catalog is not None and catalog.catalog.timezone is not None:
        zone = ZoneInfo(catalog.catalog.timezone)
    env = _Env(catalog.attributes, catalog.properties, traits={})
    traits: dict[str, m.Trait] = {}
    traits_file = config_root(TRAITS_FILE)
    if traits_file is not None:
        traits, env.traits = _traits(*traits_file, env)
    destinations: dict[str, m.Destination] | None = {}
    destinations_file = config_root(DESTINATIONS_FILE)
    if destinations_file is not None:
        destinations = _destinations(*destinations_file, env)

    specs: list[m.SegmentSpec] = []
    infos: list[_SpecInfo] = []
    for path in files:
        if path.name.startswith("_"):
            continue
        ctx, root = open_file(path)
        spec, info = _segment(ctx, path, root, specs_dir, env, destinations)
        infos.append(info)
        if spec is not None:
            specs.append(spec)
    _check_segments(infos)

    errors = [error for ctx in contexts for error in ctx.errors]
    if errors or catalog.catalog is None:
        raise SpecErrors(errors)
    return m.Project(
        specs_dir=specs_dir,
        catalog=catalog.catalog,
        traits=traits,
        segments=tuple(sorted(specs, key=lambda spec: spec.name)),
        destinations=destinations or {},
    )
