"""The parser's footing: YAML nodes with their marks, the errors collected against
them, and the scalars read from them (see :mod:`segments.spec.parse` for the
conventions every parsing function follows)."""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from segments.errors import SpecError
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


#: libyaml's parser where PyYAML has it: fifteen times the speed of the pure-Python one,
#: which every command pays on every spec file
_LIBYAML_LOADER = getattr(yaml, "CSafeLoader", None)
#: The deepest document libyaml composes here. Its composer recurses in C, which a
#: deep enough document crashes; the pure-Python one composes far deeper documents
#: (and stops on deeper ones with a RecursionError, reported as a spec error).
_LIBYAML_DEPTH = 200
_OPENS, _CLOSES = (yaml.MappingStartEvent, yaml.SequenceStartEvent), (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def compose(text: str) -> Node | None:
    """One YAML document as a node tree, each node marked with its line and column.

    Raises:
        yaml.YAMLError: in the words of PyYAML's pure-Python composer, which spec
            errors quote: a document libyaml rejects is read again by it.
        RecursionError: nesting too deep for the pure-Python composer.
    """
    if _LIBYAML_LOADER is not None:
        try:
            depth = deepest = 0
            for event in yaml.parse(text, Loader=_LIBYAML_LOADER):  # libyaml's parser keeps a stack: no recursion
                if isinstance(event, _OPENS):
                    depth += 1
                    deepest = max(deepest, depth)
                elif isinstance(event, _CLOSES):
                    depth -= 1
            if deepest <= _LIBYAML_DEPTH:
                return yaml.compose(text, Loader=_LIBYAML_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


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
        node = compose(text)
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
        elif node.tag == _STR and not node.style and _PLAIN_NUMBER_RE.fullmatch(node.value):  # plain: None, or libyaml's ''
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
