"""The shape of the spec files, as one table: the keys of every mapping and their values.

Two readers use it. The parser (:mod:`segments.spec.parse`) takes from it which
keys each mapping accepts (to report the closest valid one), which keys exclude
each other, the names' patterns and the allowed values; :mod:`segments.spec.schema`
turns it into the JSON Schema that editors validate and complete spec files with.
What no table can say (that an attribute exists in the catalog, that an operator
fits the attribute's type, that segment references form no cycle) stays the
parser's alone.

Examples:
    >>> SEGMENT.names[:4]
    ('name', 'description', 'owner', 'tags')
    >>> EVENT.key("within").value
    Duration()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from segments.spec import model as m
from segments.spec import timeparse

# ---- values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A string; ``pattern`` must match all of it, ``choices`` lists the allowed ones."""

    pattern: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Prose:
    """Any scalar, taken as written (a description, an owner, a tag)."""


@dataclass(frozen=True)
class Number:
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Integer:
    minimum: int


@dataclass(frozen=True)
class Boolean:
    """``true`` or ``false``; ``only_true`` when false is not a valid value."""

    only_true: bool = False


@dataclass(frozen=True)
class Duration:
    """``90m``, ``48h``, ``7d``, ``2w``."""


@dataclass(frozen=True)
class Time:
    """``now``, ``now - 7d``, ``2026-01-31`` or ``2026-01-31T12:00:00Z``."""


@dataclass(frozen=True)
class Cron:
    """Five cron fields, in UTC, or ``realtime``."""


@dataclass(frozen=True)
class ListOf:
    item: Value
    min_items: int = 0
    max_items: int | None = None


@dataclass(frozen=True)
class OneOrMany:
    """One value, or a non-empty list of them."""

    item: Value


@dataclass(frozen=True)
class MapOf:
    """A mapping from names matching ``key_pattern`` to values."""

    key_pattern: str
    value: Value


@dataclass(frozen=True)
class Either:
    options: tuple[Value, ...]


@dataclass(frozen=True)
class Ref:
    """Another shape of :data:`SHAPES`, by name."""

    name: str


@dataclass(frozen=True)
class AnyValue:
    """Anything: options another part of the system reads."""


Value = Union[Text, Prose, Number, Integer, Boolean, Duration, Time, Cron, ListOf, OneOrMany, MapOf, Either, Ref, AnyValue]


# ---- mappings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    name: str
    value: Value
    doc: str
    required: bool = False


@dataclass(frozen=True)
class Group:
    """Keys of one mapping that exclude each other: at most one, or exactly one."""

    keys: tuple[str, ...]
    exactly_one: bool = False


@dataclass(frozen=True)
class Mapping:
    """A YAML mapping with known keys; any other key is an error unless ``other``
    gives the value of keys not listed."""

    name: str
    doc: str
    keys: tuple[Key, ...]
    groups: tuple[Group, ...] = ()
    needs_one_of: tuple[str, ...] = ()  # at least one of these keys
    other: Value | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)

    def key(self, name: str) -> Key:
        return next(key for key in self.keys if key.name == name)


@dataclass(frozen=True)
class OneOf:
    """Exactly one of several mappings, told apart by their first key."""

    name: str
    doc: str
    options: tuple[Mapping, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The first key of each option: ``all``, ``any``, ``attribute``...

        >>> CONDITION.kinds
        ('all', 'any', 'not', 'attribute', 'trait', 'segment', 'event')
        """
        return tuple(option.keys[0].name for option in self.options)


# ---- names, patterns and values -----------------------------------------------------------

SEGMENT_NAME = r"[a-z][a-z0-9_]{0,62}"
TIER_NAME = r"[a-z][a-z0-9_]*"
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
RELATION = rf"{IDENTIFIER}(\.{IDENTIFIER})?"
MATCH_ON = ("user_id", "email", "phone")
#: An ISO 3166 alpha-2 region (``IN``); the parser checks it against phonenumbers' regions.
COUNTRY = r"[A-Z]{2}"
#: The shape of an IANA time zone name (``Asia/Kolkata``); the parser checks the name
#: against the time zone database.
TIMEZONE = r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*"
HOLDOUT = Number(0, 50)
# The patterns accept what the parser accepts, surrounding spaces included.
DURATION_PATTERN = rf"\s*{timeparse.DURATION_RE.pattern}\s*"
TIME_PATTERN = (
    rf"\s*(now(\s*[+-]\s*{timeparse.DURATION_RE.pattern})?"
    rf"|{timeparse.DATE_RE.pattern}|{timeparse.DATETIME_RE.pattern})\s*"
)
# ``realtime`` opts a segment into ``segments watch`` instead of a cron.
CRON_PATTERN = r"\s*(realtime|\S+(\s+\S+){4})\s*"

SCALAR = Either((Text(), Number(), Boolean()))

#: What each operator (SPEC 1.3) takes; the model says which apply to which type.
OPERATOR_VALUES: dict[str, Value] = {
    **{op: SCALAR for op in ("is", "is_not")},
    **{op: ListOf(SCALAR) for op in ("in", "not_in")},
    "is_set": Boolean(),
    **{op: Text() for op in m.STRING_OPS},
    **{op: Number() for op in ("gt", "gte", "lt", "lte")},
    "between": ListOf(Either((Number(), Time())), 2, 2),
    **{op: Time() for op in ("before", "after")},
    **{op: Duration() for op in ("within", "not_within")},
}
OPERATOR_DOCS: dict[str, str] = {
    "is": "Equal to the value (false on a missing value).",
    "is_not": "Not equal: exactly `not: {is: X}`, so true on a missing value.",
    "in": "One of the values.",
    "not_in": "None of the values: exactly `not: {in: [...]}`, true on a missing value.",
    "is_set": "true: the value is present; false: it is missing.",
    "contains": "Text containing this (% and _ are plain characters).",
    "not_contains": "Text not containing this: true on a missing value.",
    "starts_with": "Text starting with this.",
    "ends_with": "Text ending with this.",
    "gt": "Greater than.",
    "gte": "Greater than or equal.",
    "lt": "Less than.",
    "lte": "Less than or equal.",
    "between": "Numbers: [low, high], both included. Times: [start, end), the start "
    "included and the end not, as an event window's between.",
    "before": "Strictly before this time.",
    "after": "Strictly after this time.",
    "within": "In (as_of - duration, as_of].",
    "not_within": "Not within the duration: true on a missing value.",
}
IGNORE_CASE = Key("ignore_case", Boolean(), "Compare text case-insensitively (is, is_not, in, not_in and the text operators).")
OPERATORS = tuple(Key(op, OPERATOR_VALUES[op], OPERATOR_DOCS[op]) for op in m.ALL_OPS)
ONE_OPERATOR = Group(m.ALL_OPS, exactly_one=True)

WINDOW_KEYS = ("within", "between", "before", "after")
SEQUENCE_KEYS = ("followed_by", "not_followed_by")
MEASURE_DOCS: dict[str, str] = {
    "count": "Number of qualifying events (0 when none).",
    "active_days": "Distinct UTC days with a qualifying event (0 when none).",
    "sum": "Sum of a property over the qualifying events (0 when none).",
    "avg": "Average of a property (missing when none).",
    "min": "Smallest value of a property (missing when none).",
    "max": "Largest value of a property (missing when none).",
    "first_occurred": "Time of the earliest qualifying event (missing when none).",
    "last_occurred": "Time of the latest qualifying event (missing when none).",
}

# ---- conditions (SPEC 1.3, 1.4) ------------------------------------------------------------


def _groups(target: str) -> tuple[Mapping, ...]:
    """``all``, ``any`` and ``not`` over conditions of shape ``target``."""
    return (
        Mapping("all", "All of the conditions (an empty list is true).",
                (Key("all", ListOf(Ref(target)), "Conditions that must all hold.", required=True),)),
        Mapping("any", "Any of the conditions (an empty list is false).",
                (Key("any", ListOf(Ref(target)), "Conditions of which one must hold.", required=True),)),
        Mapping("not", "The exact complement of a condition.",
                (Key("not", Ref(target), "The condition that must not hold.", required=True),)),
    )


def _subject(kind: str, doc: str, subject_doc: str) -> Mapping:
    return Mapping(
        kind, doc,
        (Key(kind, Text(), subject_doc, required=True), IGNORE_CASE, *OPERATORS),
        (ONE_OPERATOR,),
    )


TEST = Mapping("test", "One operator and its value, e.g. {gte: 3}.", OPERATORS, (ONE_OPERATOR,))
PROPERTY_TEST = Mapping(
    "property_test", "A property of the events and one operator, e.g. {property: amount, gte: 100}.",
    (Key("property", Text(), "The event property to aggregate.", required=True), *OPERATORS),
    (ONE_OPERATOR,),
)
PROPERTY_CONDITION = OneOf(
    "property_condition",
    "A condition on an event's properties.",
    _groups("property_condition")
    + (_subject("property", "A test on an event property.", "An event property from _catalog.yml."),),
)
SEQUENCE = Mapping(
    "sequence",
    "Follow-up events after the user's latest qualifying event.",
    (
        Key("event", OneOrMany(Text()), "The follow-up event name, or a list of names.", required=True),
        Key("within", Duration(), "Only follow-ups within this long after the qualifying event."),
        Key("where", Ref("property_condition"), "A condition on the follow-up events' properties."),
    ),
)
# The measure written, or ``is: true/false`` (did the event occur): at most one.
EVENT_TEST_KEYS = m.MEASURE_KINDS + ("is",)
FILTER_KEYS = (
    Key("event", OneOrMany(Text()), "The event name, or a list of names.", required=True),
    Key("where", Ref("property_condition"), "A condition on the events' properties."),
    Key("within", Duration(), "Events in (as_of - duration, as_of]."),
    Key("between", ListOf(Time(), 2, 2), "Events in [start, end)."),
    Key("before", Time(), "Events strictly before this time."),
    Key("after", Time(), "Events strictly after this time."),
)
EVENT = Mapping(
    "event",
    "A measure over a user's qualifying events and its test (default: count >= 1), "
    "and optionally a sequence.",
    FILTER_KEYS
    + tuple(
        Key(kind, Ref("property_test" if kind in m.PROPERTY_MEASURES else "test"), MEASURE_DOCS[kind])
        for kind in m.MEASURE_KINDS
    )
    + (
        Key("is", Boolean(), "true: the event occurred at least once (the default, count >= 1); "
            "false: it never occurred (count is 0)."),
        Key("followed_by", Ref("sequence"), "Holds when a follow-up event came after the latest qualifying one."),
        Key("not_followed_by", Ref("sequence"), "Holds when no follow-up event came after the latest qualifying one."),
    ),
    (Group(WINDOW_KEYS), Group(EVENT_TEST_KEYS), Group(SEQUENCE_KEYS)),
)
CONDITION = OneOf(
    "condition",
    "A rule: all/any/not, a test on an attribute or trait, another segment, or an event condition.",
    _groups("condition")
    + (
        _subject("attribute", "A test on a users column.", "A users attribute from _catalog.yml."),
        _subject("trait", "A test on a computed trait.", "A trait from _traits.yml."),
        Mapping("segment", "Member of another segment at the same as_of.",
                (Key("segment", Text(), "The segment's name (tiers: <spec>__<tier>).", required=True),)),
        EVENT,
    ),
)

# ---- segment specs (SPEC 1.2, 1.6) ---------------------------------------------------------

UPLOAD = Mapping(
    "upload",
    "An uploaded list: members are the users whose key is in it (`segments upload`, or a committed file).",
    (
        Key("match_on", Text(choices=MATCH_ON), "The users key the list holds (the file's column of that name).", required=True),
        Key("file", Text(), "A CSV file with a header row, relative to the specs directory, loaded into the warehouse "
            "at every build; without it the list is loaded with `segments upload`."),
    ),
)
TIER = Mapping(
    "tier",
    "One level; first match wins. Its segment is named <spec>__<tier>.",
    (
        Key("name", Text(TIER_NAME), "The tier's name.", required=True),
        Key("where", Ref("condition"), "The tier's rule; only the last tier may leave it out (everyone left)."),
    ),
)
SYNC_TARGET = Mapping(
    "sync_target",
    "A destination to push the segment to, with its options.",
    (
        Key("destination", Text(), "A key of _destinations.yml.", required=True),
        Key("arm", Text(TIER_NAME), "Only the members of this experiment arm (each arm its own tag or destination)."),
    ),
    other=AnyValue(),
)
EXPERIMENT = Mapping(
    "experiment",
    "Split the members into arms by percentage, deterministically per user and experiment name.",
    (
        Key("name", Text(SEGMENT_NAME), "The experiment's name, which the assignment hashes (default: the spec's "
            "name); keep it to keep every user's arm, change it to reshuffle."),
        Key("arms", MapOf(TIER_NAME, Number(minimum=0)), "Arm -> percent of the members (adding up to 100, at "
            "most two decimals), e.g. {a: 45, b: 45, control: 10}.", required=True),
    ),
)
CHECKS = Mapping(
    "checks",
    "Data checks of the segment's build; a failing one stops its syncs.",
    (Key("max_size_change_pct", Number(minimum=0),
         "Fail when the size moves more than this percent from the previous build (default 50)."),),
)
# ---- segment tests (segments test) -----------------------------------------------------------

TEST_USER = Mapping(
    "test_user",
    "A user of a segment test: user_id, optionally created_at, and attributes by their catalog names "
    "(missing ones are null).",
    (
        Key("user_id", Prose(), "The user's id.", required=True),
        Key("created_at", Time(), "Creation time (users created after as_of are in no segment)."),
    ),
    other=Either((Prose(), Time())),
)
TEST_EVENT = Mapping(
    "test_event",
    "An event of a segment test: who, which event, when (now means the test's as_of), and "
    "properties by their catalog names.",
    (
        Key("user_id", Prose(), "The user's id.", required=True),
        Key("event", Text(), "The event's name.", required=True),
        Key("at", Time(), "When: a date-time, or relative to the test's as_of (now - 3h).", required=True),
    ),
    other=Either((Prose(), Time())),
)
SEGMENT_TEST = Mapping(
    "segment_test",
    "A unit test of the segment: a few users and events, an as_of and the expected members "
    "(run by `segments test`).",
    (
        Key("name", Prose(), "What the test checks.", required=True),
        Key("as_of", Time(), "The instant the segment is evaluated at: a date or date-time.", required=True),
        Key("users", ListOf(Ref("test_user")), "The users table of the test."),
        Key("events", ListOf(Ref("test_event")), "The events table of the test."),
        Key("expect", Either((ListOf(Prose()), MapOf(TIER_NAME, ListOf(Prose())))),
            "The expected members (holdout included): a list of user ids, or for a tiered spec "
            "tier -> user ids (each tier listed is checked).", required=True),
    ),
)
TESTS_FILE = Mapping(
    "tests_file",
    "<spec>.tests.yml: segment tests kept beside a spec.",
    (Key("tests", ListOf(Ref("segment_test"), 1), "The tests.", required=True),),
)

SEGMENT = Mapping(
    "segment_spec",
    "One segment (segment_specs/<name>.yml).",
    (
        Key("name", Text(SEGMENT_NAME), "The segment's name; equals the file name stem.", required=True),
        Key("description", Prose(), "What the audience is, for the people who use it."),
        Key("owner", Prose(), "Who acts on this audience."),
        Key("tags", ListOf(Prose()), "Free-form labels."),
        Key("refresh", Cron(), "Cron schedule in UTC, or realtime (kept current by segments watch); default \"0 6 * * *\"."),
        Key("where", Ref("condition"), "The rule (required unless upload or tiers is given)."),
        Key("holdout", HOLDOUT, "Percent (0-50) of members kept as a control group, never synced."),
        Key("experiment", Ref("experiment"), "Arms with percentages; the arm is in segment_membership.arm."),
        Key("upload", Ref("upload"), "Members from an uploaded list (narrowed by where, if given)."),
        Key("tiers", ListOf(Ref("tier"), 1), "Mutually exclusive levels, first match wins."),
        Key("priority", ListOf(Text(), 1),
            "Other segments in priority order: a user is a member of the first one that holds them "
            "only, as the segment <name>__<segment> (one campaign per person)."),
        Key("sync", ListOf(Ref("sync_target")), "Destinations to push the segment to."),
        Key("checks", Ref("checks"), "Data checks of the segment's build."),
        Key("tests", ListOf(Ref("segment_test")), "Unit tests: users, events, as_of and expected members (segments test)."),
    ),
    (Group(("upload", "tiers", "priority")), Group(("where", "priority")), Group(("holdout", "experiment"))),
    needs_one_of=("where", "upload", "tiers", "priority"),
)

# ---- _catalog.yml (SPEC 1.1) -----------------------------------------------------------------

COLUMN = Mapping(
    "column",
    "A column rules may use, with its type.",
    (
        Key("type", Text(choices=m.COLUMN_TYPES), "The column's type.", required=True),
        Key("pii", Boolean(), "Personal data: never logged."),
        Key("values", ListOf(Text(), 1), "The allowed values (text columns)."),
        Key("column", Text(IDENTIFIER), "The warehouse column, when its name differs."),
    ),
)
USERS = Mapping(
    "users",
    "Where users live.",
    (
        Key("table", Text(RELATION), "The relation: name or schema.name.", required=True),
        Key("key", Text(IDENTIFIER), "Unique, non-null user id column.", required=True),
        Key("created_at", Text(IDENTIFIER), "Creation time column: users created after as_of are in no segment."),
        Key("attributes", MapOf(IDENTIFIER, Ref("column")), "Every users column a rule may use."),
    ),
)
EVENTS = Mapping(
    "events",
    "Where events live.",
    (
        Key("table", Text(RELATION), "The relation: name or schema.name.", required=True),
        Key("user_key", Text(IDENTIFIER), "The column holding the user id.", required=True),
        Key("name", Text(IDENTIFIER), "The text column holding the event's name.", required=True),
        Key("timestamp", Text(IDENTIFIER), "The event time column (UTC).", required=True),
        Key("properties", MapOf(IDENTIFIER, Ref("column")), "Event columns a rule may use."),
    ),
)
CATALOG = Mapping(
    "catalog",
    "_catalog.yml: where users and events live and what their columns mean.",
    (
        Key("users", Ref("users"), "The users table.", required=True),
        Key("events", Ref("events"), "The events table.", required=True),
        Key("timezone", Text(TIMEZONE),
            "IANA time zone of day boundaries (active_days, dates written without a time); UTC by default."),
        Key("default_country", Text(COUNTRY),
            "ISO 3166 alpha-2 region (IN, DE) of phone numbers without a country code: uploads and the users' phone "
            "match as E.164. Without it phones match on their digits alone."),
    ),
)

# ---- _traits.yml (SPEC 1.5) ------------------------------------------------------------------

TRAIT_MEASURE_VALUES: dict[str, Value] = {
    kind: Text() if kind in m.PROPERTY_MEASURES else Boolean(only_true=True) for kind in m.MEASURE_KINDS
}
MEASURE_TRAIT = Mapping(
    "measure_trait",
    "One measure per user over events, e.g. {event: purchase, within: 365d, sum: amount}.",
    FILTER_KEYS
    + tuple(
        Key(kind, TRAIT_MEASURE_VALUES[kind],
            MEASURE_DOCS[kind] + (" Name the property." if kind in m.PROPERTY_MEASURES else " Write true."))
        for kind in m.MEASURE_KINDS
    ),
    (Group(WINDOW_KEYS), Group(m.MEASURE_KINDS, exactly_one=True)),
)
QUANTILE_TRAIT = Mapping(
    "quantile_trait",
    "A score 1..buckets of another trait, over the users of the universe.",
    (
        Key("quantile", Text(), "The trait to score.", required=True),
        Key("buckets", Integer(1), "How many scores.", required=True),
    ),
)
TRAIT = OneOf("trait", "A computed trait.", (QUANTILE_TRAIT, MEASURE_TRAIT))
TRAITS = Mapping(
    "traits_file",
    "_traits.yml: computed per-user traits.",
    (Key("traits", MapOf(SEGMENT_NAME, Ref("trait")), "Trait name -> its definition.", required=True),),
)

#: Every named shape a :class:`Ref` may name.
SHAPES: dict[str, Mapping | OneOf] = {
    shape.name: shape
    for shape in (
        CONDITION, PROPERTY_CONDITION, TEST, PROPERTY_TEST, SEQUENCE, UPLOAD, TIER, SYNC_TARGET, CHECKS, EXPERIMENT,
        COLUMN, USERS, EVENTS, TRAIT, SEGMENT_TEST, TEST_USER, TEST_EVENT,
    )
}
#: The documents: which file holds which shape.
DOCUMENTS: dict[str, Mapping] = {"segment": SEGMENT, "catalog": CATALOG, "traits": TRAITS, "tests": TESTS_FILE}
