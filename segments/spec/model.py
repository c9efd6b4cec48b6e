"""Typed models of the spec files (SPEC sections 1.1 to 1.6).

The parser (:mod:`segments.spec.parse`) turns YAML into these frozen dataclasses
after checking every rule of the contract; the compiler only ever sees them. Values
are already typed: a test on a number column holds ``int``/``float`` operands, on a
timestamp column :class:`AbsoluteTime` or :class:`RelativeTime`, and so on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

ColumnType = Literal["string", "number", "boolean", "timestamp"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("string", "number", "boolean", "timestamp")

DurationUnit = Literal["s", "m", "h", "d", "w"]
UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Location:
    """Where a node stands in a spec file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Duration:
    """A whole number of one unit, as written: ``90m``, ``48h``, ``7d``, ``2w``.

    >>> Duration(48, "h").seconds
    172800
    >>> str(Duration(2, "w"))
    '2w'
    """

    amount: int
    unit: DurationUnit

    @property
    def seconds(self) -> int:
        return self.amount * UNIT_SECONDS[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True)
class AbsoluteTime:
    """A fixed instant, naive and in UTC."""

    at: dt.datetime

    def __str__(self) -> str:
        return self.at.isoformat(sep=" ")


@dataclass(frozen=True)
class RelativeTime:
    """``now``, ``now - D`` or ``now + D``; ``now`` is the build's ``as_of``.

    ``sign`` is +1 or -1 and only matters when ``offset`` is set.
    """

    offset: Duration | None = None
    sign: int = -1

    def __str__(self) -> str:
        if self.offset is None:
            return "now"
        return f"now {'+' if self.sign > 0 else '-'} {self.offset}"


TimeValue = Union[AbsoluteTime, RelativeTime]
Scalar = Union[str, int, float, bool, AbsoluteTime, RelativeTime]

# Operators and the column types they apply to (SPEC 1.3).
EQUALITY_OPS = ("is", "is_not", "in", "not_in")
STRING_OPS = ("contains", "not_contains", "starts_with", "ends_with")
NUMBER_OPS = ("gt", "gte", "lt", "lte", "between")
TIMESTAMP_OPS = ("before", "after", "within", "not_within")
ALL_OPS = EQUALITY_OPS + ("is_set",) + STRING_OPS + NUMBER_OPS + TIMESTAMP_OPS
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "string": EQUALITY_OPS + ("is_set",) + STRING_OPS,
    "number": EQUALITY_OPS + ("is_set",) + NUMBER_OPS,
    "boolean": EQUALITY_OPS + ("is_set",),
    # between on times is [start, end), like an event window's (SPEC 1.4)
    "timestamp": EQUALITY_OPS + ("is_set",) + TIMESTAMP_OPS + ("between",),
}
# Each negative operator is the exact complement of its positive twin.
NEGATIVE_OPS: dict[str, str] = {
    "is_not": "is",
    "not_in": "in",
    "not_contains": "contains",
    "not_within": "within",
}


@dataclass(frozen=True)
class Test:
    """One operator applied to a typed value.

    ``value`` by operator:
      - ``is``/``is_not``/``contains``/...: one scalar of the column's type;
      - ``in``/``not_in``: a tuple of scalars;
      - ``between``: a 2-tuple ``(lo, hi)``: inclusive on numbers, ``[lo, hi)`` on
        timestamps (as an event window's ``between``);
      - ``before``/``after``: a :data:`TimeValue`;
      - ``within``/``not_within``: a :class:`Duration`;
      - ``is_set``: a bool.
    ``value_type`` is the type of the tested column, trait or measure.
    ``ignore_case`` only appears on string operators.
    """

    op: str
    value: object
    value_type: ColumnType
    ignore_case: bool = False


@dataclass(frozen=True)
class Column:
    """A users attribute or an events property.

    ``name`` is the name rules use; ``column`` the warehouse column behind it.
    """

    name: str
    column: str
    type: ColumnType
    pii: bool = False
    values: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Relation:
    """A warehouse relation as written in the catalog: ``[schema.]name``."""

    name: str
    schema: str | None = None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class UsersTable:
    relation: Relation
    key: str
    created_at: str | None
    attributes: dict[str, Column]


@dataclass(frozen=True)
class EventsTable:
    relation: Relation
    user_key: str
    name: str
    timestamp: str
    properties: dict[str, Column]


@dataclass(frozen=True)
class Catalog:
    users: UsersTable
    events: EventsTable
    location: Location | None = None
    #: The IANA time zone of day boundaries (``active_days``, dates without a time);
    #: None for UTC, which also stands for any name of UTC itself.
    timezone: str | None = None
    #: ISO 3166 alpha-2 region of phone numbers written without a country code; None:
    #: phones match on their digits alone (SPEC 1.6)
    default_country: str | None = None


# ---- conditions (SPEC 1.3, 1.4) --------------------------------------------------


@dataclass(frozen=True)
class All:
    """AND of the items; an empty tuple is true."""

    items: tuple["Condition", ...]


@dataclass(frozen=True)
class Any:
    """OR of the items; an empty tuple is false."""

    items: tuple["Condition", ...]


@dataclass(frozen=True)
class Not:
    item: "Condition"


@dataclass(frozen=True)
class AttributeCondition:
    attribute: str
    test: Test


@dataclass(frozen=True)
class TraitCondition:
    trait: str
    test: Test


@dataclass(frozen=True)
class PropertyCondition:
    """A test on an event property; only inside an event condition's ``where``."""

    property: str
    test: Test


@dataclass(frozen=True)
class SegmentCondition:
    """Membership of another segment (or tier ``<spec>__<tier>``) at the same as_of."""

    segment: str


@dataclass(frozen=True)
class WithinWindow:
    """``occurred_at`` in ``(as_of - duration, as_of]``."""

    duration: Duration


@dataclass(frozen=True)
class BetweenWindow:
    """``occurred_at`` in ``[start, end)``."""

    start: TimeValue
    end: TimeValue


@dataclass(frozen=True)
class BeforeWindow:
    """``occurred_at < at``."""

    at: TimeValue


@dataclass(frozen=True)
class AfterWindow:
    """``occurred_at > at``."""

    at: TimeValue


Window = Union[WithinWindow, BetweenWindow, BeforeWindow, AfterWindow]

MeasureKind = Literal[
    "count", "active_days", "sum", "avg", "min", "max", "first_occurred", "last_occurred"
]
MEASURE_KINDS: tuple[str, ...] = (
    "count", "active_days", "sum", "avg", "min", "max", "first_occurred", "last_occurred"
)
PROPERTY_MEASURES: tuple[str, ...] = ("sum", "avg", "min", "max")


@dataclass(frozen=True)
class EventFilter:
    """Which events qualify: names, property condition and window.

    Two filters that compare equal select the same events, which is what lets the
    compiler compute a measure once for every spec that uses it.
    """

    events: tuple[str, ...]
    where: "Condition | None" = None
    window: Window | None = None


@dataclass(frozen=True)
class Measure:
    """A per-user aggregate over the events an :class:`EventFilter` selects.

    ``property`` is set for ``sum``/``avg``/``min``/``max`` only.
    """

    kind: MeasureKind
    filter: EventFilter
    property: str | None = None


@dataclass(frozen=True)
class Sequence:
    """``followed_by`` / ``not_followed_by`` (SPEC 1.4).

    The anchor t0 is the latest event of the enclosing condition's filter; the
    follow-up events are filtered by ``events`` and ``where`` only, and counted in
    ``(t0, t0 + within]`` or, with no ``within``, ``(t0, as_of]``.
    """

    followed: bool
    events: tuple[str, ...]
    where: "Condition | None" = None
    within: Duration | None = None


@dataclass(frozen=True)
class EventCondition:
    """A measure over qualifying events and its test, plus an optional sequence.

    With no measure written, ``measure`` is ``count`` and ``test`` is ``gte: 1``.
    """

    measure: Measure
    test: Test
    sequence: Sequence | None = None


Condition = Union[
    All, Any, Not, AttributeCondition, TraitCondition, PropertyCondition,
    SegmentCondition, EventCondition,
]


# ---- traits (SPEC 1.5) -----------------------------------------------------------


@dataclass(frozen=True)
class MeasureTrait:
    """One measure per user; ``type`` is the measure's value type."""

    name: str
    measure: Measure
    type: ColumnType
    location: Location | None = None


@dataclass(frozen=True)
class QuantileTrait:
    """``LEAST(buckets, 1 + FLOOR(PERCENT_RANK() * buckets))`` of another trait."""

    name: str
    of: str
    buckets: int
    type: ColumnType = "number"
    location: Location | None = None


Trait = Union[MeasureTrait, QuantileTrait]


# ---- segments (SPEC 1.2, 1.6) ----------------------------------------------------

MatchOn = Literal["user_id", "email", "phone"]


@dataclass(frozen=True)
class Upload:
    """An uploaded list, kept in the warehouse (``segments upload``); with ``file``,
    a CSV in the specs folder that every build loads into it. Its keys never reach
    the compiled SQL."""

    match_on: MatchOn
    file: Path | None = None


@dataclass(frozen=True)
class Tier:
    name: str
    where: Condition | None


@dataclass(frozen=True)
class SyncTarget:
    destination: str
    options: dict[str, object] = field(default_factory=dict)
    #: only this experiment arm's members (``arm:``); None: every member
    arm: str | None = None


@dataclass(frozen=True)
class Experiment:
    """Arms with percentages; a user's arm depends only on ``name`` and the user id
    (SPEC 2.7), so it stays when the rule changes."""

    name: str
    arms: tuple[tuple[str, float], ...]  # (arm, percent), in the order written; sum 100


DEFAULT_REFRESH = "0 6 * * *"
#: ``refresh: realtime``: no cron; ``segments watch`` (or the Dagster sensor) keeps it current.
REALTIME = "realtime"
DEFAULT_MAX_SIZE_CHANGE_PCT = 50


@dataclass(frozen=True)
class Checks:
    """The data checks that gate a segment's syncs (``checks:``).

    ``max_size_change_pct``: a build whose size differs from the previous build's by
    more than this percent of it fails its size check, and its syncs wait.
    """

    max_size_change_pct: int | float = DEFAULT_MAX_SIZE_CHANGE_PCT


@dataclass(frozen=True)
class SegmentSpec:
    """One spec file. A spec with ``tiers`` defines one segment per tier."""

    name: str
    path: Path
    description: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    refresh: str = DEFAULT_REFRESH
    where: Condition | None = None
    holdout: float | None = None
    experiment: Experiment | None = None
    upload: Upload | None = None
    tiers: tuple[Tier, ...] = ()
    #: a priority list: the segments it orders (its tiers are ``{segment: X}`` each)
    priority: tuple[str, ...] = ()
    sync: tuple[SyncTarget, ...] = ()
    checks: Checks = Checks()
    location: Location | None = None

    def segment_names(self) -> tuple[str, ...]:
        """The names this spec defines: its own, or ``<name>__<tier>`` per tier."""
        if self.tiers:
            return tuple(f"{self.name}__{tier.name}" for tier in self.tiers)
        return (self.name,)

    @property
    def realtime(self) -> bool:
        """``refresh: realtime``: kept current by ``segments watch``, on no cron."""
        return self.refresh == REALTIME


@dataclass(frozen=True)
class Destination:
    """An entry of ``_destinations.yml``; options are kept as written (secrets
    still as ``${VAR}``) for the sync engine to resolve."""

    name: str
    type: str
    options: dict[str, object]
    location: Location | None = None


@dataclass(frozen=True)
class Project:
    """Everything in one specs directory, validated."""

    specs_dir: Path
    catalog: Catalog
    traits: dict[str, Trait]
    segments: tuple[SegmentSpec, ...]
    destinations: dict[str, Destination] = field(default_factory=dict)

    def spec(self, name: str) -> SegmentSpec:
        for spec in self.segments:
            if spec.name == name or name in spec.segment_names():
                return spec
        raise KeyError(name)

    def segment_names(self) -> tuple[str, ...]:
        return tuple(n for spec in self.segments for n in spec.segment_names())
