"""Valid specs parse into the typed model the compiler relies on."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from segments.spec import model as m
from segments.spec.parse import load_project

ACCEPTANCE = Path("/work/shared/acceptance")
REPO_SPECS = Path(__file__).resolve().parents[1] / "segment_specs"

CATALOG = """\
users:
  table: raw.users
  key: user_id
  created_at: created_at
  attributes:
    email: {type: string, pii: true}
    city: {type: string}
    plan: {type: string, values: [free, pro, enterprise]}
    signup_at: {type: timestamp}
    is_vip: {type: boolean}
    lifetime_value: {type: number, column: ltv}
events:
  table: events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    amount: {type: number}
    path: {type: string}
    paid_at: {type: timestamp}
"""
TRAITS = """\
traits:
  orders: {event: purchase, within: 365d, count: true}
  days: {event: [login, page_view], active_days: true}
  revenue: {event: purchase, sum: amount}
  basket: {event: purchase, avg: amount}
  smallest: {event: purchase, where: {property: amount, gt: 0}, min: amount}
  last_paid: {event: purchase, max: paid_at}
  first_seen: {event: page_view, first_occurred: true}
  last_order_at: {event: purchase, before: 2024-06-01, last_occurred: true}
  recency: {quantile: last_order_at, buckets: 5}
"""


def project_of(tmp_path: Path, files: dict[str, str]) -> m.Project:
    """Load a project made of the catalog, the traits and ``files``."""
    specs = tmp_path / "specs"
    for name, text in {"_catalog.yml": CATALOG, "_traits.yml": TRAITS, **files}.items():
        path = specs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_project(specs)


def where_of(tmp_path: Path, where: str) -> m.Condition | None:
    """The parsed ``where`` of a one-spec project (``where`` is YAML flow text)."""
    return project_of(tmp_path, {"s.yml": f"name: s\nwhere: {where}\n"}).spec("s").where


COUNT_GTE_1 = m.Test("gte", 1, "number")


def count(
    *events: str,
    where: m.Condition | None = None,
    window: m.Window | None = None,
    test: m.Test = COUNT_GTE_1,
    sequence: m.Sequence | None = None,
) -> m.EventCondition:
    return m.EventCondition(
        m.Measure("count", m.EventFilter(events, where, window)), test, sequence
    )


AT = m.AbsoluteTime
JUNE_23 = dt.datetime(2024, 6, 23)
AGO_7D = m.RelativeTime(m.Duration(7, "d"), -1)

CONDITIONS: list[tuple[str, str, m.Condition]] = [
    ("default_measure", "{event: login}", count("login")),
    ("event_is_true", "{event: login, is: true}", count("login")),  # the default
    ("event_is_false", "{event: login, within: 7d, is: false}",
     count("login", window=m.WithinWindow(m.Duration(7, "d")), test=m.Test("is", 0, "number"))),
    ("event_is_false_same_as_count_is_0", "{event: login, is: false}",
     count("login", test=m.Test("is", 0, "number"))),
    (
        "timestamp_between",
        "{attribute: signup_at, between: [2024-06-23, now - 7d]}",
        m.AttributeCondition("signup_at", m.Test("between", (AT(JUNE_23), AGO_7D), "timestamp")),
    ),
    ("event_list_sorted_unique", "{event: [page_view, login, login]}", count("login", "page_view")),
    (
        "string_is",
        "{attribute: city, is: Paris}",
        m.AttributeCondition("city", m.Test("is", "Paris", "string")),
    ),
    (
        "contains_ignore_case",
        "{attribute: city, contains: york, ignore_case: true}",
        m.AttributeCondition("city", m.Test("contains", "york", "string", True)),
    ),
    (
        "values_unchecked_with_ignore_case",
        "{attribute: plan, in: [PRO, Free], ignore_case: true}",
        m.AttributeCondition("plan", m.Test("in", ("PRO", "Free"), "string", True)),
    ),
    (
        "empty_in",
        "{attribute: plan, not_in: []}",
        m.AttributeCondition("plan", m.Test("not_in", (), "string")),
    ),
    (
        "numbers",
        "{attribute: lifetime_value, in: [1, 2.5, 1e3, 0x10]}",
        m.AttributeCondition("lifetime_value", m.Test("in", (1, 2.5, 1000.0, 16), "number")),
    ),
    (
        "between",
        "{attribute: lifetime_value, between: [10, 20.5]}",
        m.AttributeCondition("lifetime_value", m.Test("between", (10, 20.5), "number")),
    ),
    (
        "boolean",
        "{attribute: is_vip, is_not: false}",
        m.AttributeCondition("is_vip", m.Test("is_not", False, "boolean")),
    ),
    (
        "is_set",
        "{attribute: email, is_set: false}",
        m.AttributeCondition("email", m.Test("is_set", False, "string")),
    ),
    (
        "times_every_spelling",
        "{attribute: signup_at, in: [2024-06-23, '2024-06-23',"
        " !!timestamp '2024-06-23T02:00:00+02:00', 2024-06-23 00:00:00, now - 7d]}",
        m.AttributeCondition(
            "signup_at", m.Test("in", (AT(JUNE_23),) * 4 + (AGO_7D,), "timestamp")
        ),
    ),
    (
        "within",
        "{attribute: signup_at, within: 90m}",
        m.AttributeCondition("signup_at", m.Test("within", m.Duration(90, "m"), "timestamp")),
    ),
    (
        "before_now",
        "{attribute: signup_at, before: now}",
        m.AttributeCondition("signup_at", m.Test("before", m.RelativeTime(), "timestamp")),
    ),
    (
        "trait_measure",
        "{trait: orders, gte: 3}",
        m.TraitCondition("orders", m.Test("gte", 3, "number")),
    ),
    (
        "trait_timestamp",
        "{trait: last_order_at, within: 30d}",
        m.TraitCondition("last_order_at", m.Test("within", m.Duration(30, "d"), "timestamp")),
    ),
    (
        "trait_quantile_is_number",
        "{trait: recency, in: [4, 5]}",
        m.TraitCondition("recency", m.Test("in", (4, 5), "number")),
    ),
    ("empty_all_any", "{all: [{any: []}, {all: []}]}", m.All((m.Any(()), m.All(())))),
    ("not_not", "{not: {not: {segment: other}}}", m.Not(m.Not(m.SegmentCondition("other")))),
    (
        "window_between",
        "{event: login, between: [2024-06-23, now - 7d]}",
        count("login", window=m.BetweenWindow(AT(JUNE_23), AGO_7D)),
    ),
    (
        "window_after",
        "{event: login, after: '2024-06-23T12:00:00Z'}",
        count("login", window=m.AfterWindow(AT(JUNE_23.replace(hour=12)))),
    ),
    (
        "property_where",
        "{event: page_view, where: {any: [{property: path, starts_with: /p},"
        " {not: {property: amount, lt: 5}}]}, count: {gte: 2}}",
        count(
            "page_view",
            where=m.Any(
                (
                    m.PropertyCondition("path", m.Test("starts_with", "/p", "string")),
                    m.Not(m.PropertyCondition("amount", m.Test("lt", 5, "number"))),
                )
            ),
            test=m.Test("gte", 2, "number"),
        ),
    ),
    (
        "sum",
        "{event: purchase, within: 7d, sum: {property: amount, gte: 100}}",
        m.EventCondition(
            m.Measure(
                "sum",
                m.EventFilter(("purchase",), None, m.WithinWindow(m.Duration(7, "d"))),
                "amount",
            ),
            m.Test("gte", 100, "number"),
        ),
    ),
    (
        "max_of_timestamp",
        "{event: purchase, max: {property: paid_at, after: 2024-06-23}}",
        m.EventCondition(
            m.Measure("max", m.EventFilter(("purchase",)), "paid_at"),
            m.Test("after", AT(JUNE_23), "timestamp"),
        ),
    ),
    (
        "last_occurred",
        "{event: login, last_occurred: {not_within: 2w}}",
        m.EventCondition(
            m.Measure("last_occurred", m.EventFilter(("login",))),
            m.Test("not_within", m.Duration(2, "w"), "timestamp"),
        ),
    ),
    (
        "active_days",
        "{event: login, active_days: {is: 0}}",
        m.EventCondition(
            m.Measure("active_days", m.EventFilter(("login",))), m.Test("is", 0, "number")
        ),
    ),
    (
        "not_followed_by",
        "{event: cart_add, within: 48h, not_followed_by: {event: purchase}}",
        count(
            "cart_add",
            window=m.WithinWindow(m.Duration(48, "h")),
            sequence=m.Sequence(False, ("purchase",)),
        ),
    ),
    (
        "followed_by_full",
        "{event: a, followed_by: {event: [c, b], within: 1d, where: {property: amount, gte: 50}}}",
        count(
            "a",
            sequence=m.Sequence(
                True,
                ("b", "c"),
                m.PropertyCondition("amount", m.Test("gte", 50, "number")),
                m.Duration(1, "d"),
            ),
        ),
    ),
    (
        "sequence_with_measure",
        "{event: a, count: {gte: 3}, not_followed_by: {event: b, within: 7d}}",
        count(
            "a",
            test=m.Test("gte", 3, "number"),
            sequence=m.Sequence(False, ("b",), None, m.Duration(7, "d")),
        ),
    ),
]


@pytest.mark.parametrize(
    ("where", "expected"), [c[1:] for c in CONDITIONS], ids=[c[0] for c in CONDITIONS]
)
def test_condition(tmp_path: Path, where: str, expected: m.Condition) -> None:
    files = {"other.yml": "name: other\nwhere: {event: x}\n", "s.yml": f"name: s\nwhere: {where}\n"}
    assert project_of(tmp_path, files).spec("s").where == expected


def test_condition_equality_shares_measures(tmp_path: Path) -> None:
    # Equal filters written differently must compare (and hash) equal.
    first = where_of(tmp_path / "a", "{event: [b, a], within: 7d}")
    second = where_of(tmp_path / "b", "{event: [a, b, a], within: 7d}")
    assert first == second and hash(first) == hash(second)


@pytest.mark.parametrize(
    "folder",
    sorted(ACCEPTANCE.glob("*/segment_specs")) or [None],
    ids=lambda p: p.parent.name if p else "absent",
)
def test_acceptance_specs_parse(folder: Path | None) -> None:
    if folder is None:
        pytest.skip(f"no acceptance cases under {ACCEPTANCE}")
    project = load_project(folder)
    spec_files = [p for p in folder.glob("*.y*ml") if not p.name.startswith("_")]
    assert len(project.segments) == len(spec_files)
    assert [s.name for s in project.segments] == sorted(s.name for s in project.segments)
    for spec in project.segments:
        assert spec.where is not None or spec.upload is not None or spec.tiers


def test_repo_specs_parse() -> None:
    # The specs shipped with the project (the demo) must always validate.
    project = load_project(REPO_SPECS)
    spec_files = [p for p in REPO_SPECS.glob("*.y*ml") if not p.name.startswith("_") and ".tests." not in p.name]
    assert len(project.segments) == len(spec_files)


def test_spec_fields(tmp_path: Path) -> None:
    project = project_of(
        tmp_path,
        {
            "_destinations.yml": """\
            destinations:
              crm: {type: webhook, url: 'http://x', secret: '${SECRET}', batch_size: 10,
                    fields: [email], requires: is_vip, max_remove_pct: 20}
        """,
            "s.yml": """\
            name: s
            description: Carts of the last two days.
            owner: sales-team
            tags: [whatsapp, 2024]
            refresh: 0 * * * *
            holdout: 12.5
            checks: {max_size_change_pct: 30}
            where: {event: cart_add}
            sync:
              - destination: crm
                tag: abandoned
                limit: 5
                since: 2024-06-23
                extra: {a: [1, null]}
        """,
        },
    )
    spec = project.spec("s")
    assert (spec.description, spec.owner, spec.tags) == (
        "Carts of the last two days.",
        "sales-team",
        ("whatsapp", "2024"),
    )
    assert (spec.refresh, spec.holdout) == ("0 * * * *", 12.5)
    assert spec.checks == m.Checks(max_size_change_pct=30)
    assert spec.sync == (
        m.SyncTarget(
            "crm", {"tag": "abandoned", "limit": 5, "since": JUNE_23, "extra": {"a": [1, None]}}
        ),
    )
    crm = project.destinations["crm"]
    assert (crm.type, crm.options["secret"], crm.options["batch_size"]) == (
        "webhook",
        "${SECRET}",
        10,
    )
    assert spec.location == m.Location(str(tmp_path / "specs" / "s.yml"), 1, 1)


def test_spec_defaults(tmp_path: Path) -> None:
    spec = project_of(tmp_path, {"s.yml": "name: s\nwhere: {event: x}\n"}).spec("s")
    assert (spec.refresh, spec.holdout, spec.tags, spec.sync, spec.tiers, spec.upload) == (
        m.DEFAULT_REFRESH,
        None,
        (),
        (),
        (),
        None,
    )
    assert spec.checks.max_size_change_pct == m.DEFAULT_MAX_SIZE_CHANGE_PCT


def test_tiers(tmp_path: Path) -> None:
    project = project_of(
        tmp_path,
        {
            "eng.yml": """\
        name: eng
        where: {attribute: is_vip, is: true}
        tiers:
          - {name: high, where: {event: read, count: {gte: 8}}}
          - {name: mid, where: {not: {segment: eng__high}}}
          - {name: rest}
    """,
            "uses.yml": "name: uses\nwhere: {segment: eng__mid}\n",
        },
    )
    spec = project.spec("eng__mid")
    assert spec.name == "eng" and spec.where == m.AttributeCondition(
        "is_vip", m.Test("is", True, "boolean")
    )
    assert [t.name for t in spec.tiers] == ["high", "mid", "rest"]
    assert spec.tiers[1].where == m.Not(m.SegmentCondition("eng__high"))
    assert spec.tiers[2].where is None
    assert project.segment_names() == ("eng__high", "eng__mid", "eng__rest", "uses")


def test_upload_names_its_file(tmp_path: Path) -> None:
    csv = '\ufeffnote, email ,x\n1,A@B.com \n2,,\n\n3,"a@b.com"\n4,A@B.com \n5\n'
    specs = tmp_path / "specs"
    (specs / "lists").mkdir(parents=True)
    (specs / "lists" / "vip.csv").write_text(csv, encoding="utf-8")
    project = project_of(
        tmp_path,
        {
            "vip.yml": "name: vip\nupload: {file: lists/vip.csv, match_on: email}\n"
            "where: {attribute: city, is: Paris}\n",
        },
    )
    upload = project.spec("vip").upload
    assert upload is not None and upload.match_on == "email"
    assert upload.file == specs / "lists" / "vip.csv"
    assert not hasattr(upload, "keys")  # the keys are read into the warehouse, never kept for the SQL


def test_catalog(tmp_path: Path) -> None:
    catalog = project_of(tmp_path, {}).catalog
    assert catalog.users.relation == m.Relation("users", "raw")
    assert catalog.events.relation == m.Relation("events")
    assert catalog.users.attributes["lifetime_value"] == m.Column("lifetime_value", "ltv", "number")
    assert catalog.users.attributes["email"].pii
    assert (catalog.users.key, catalog.users.created_at) == ("user_id", "created_at")
    assert (catalog.events.name, catalog.events.timestamp) == ("event_name", "occurred_at")


def test_catalog_timezone(tmp_path: Path) -> None:
    """No timezone is UTC; a zone moves dates without a time to its midnight, and only those."""
    assert project_of(tmp_path / "utc", {}).catalog.timezone is None
    files = {
        "_catalog.yml": CATALOG + "timezone: Asia/Kolkata\n",
        "s.yml": "name: s\nwhere: {event: login, between: [2026-01-31, '2026-02-01T00:00:00Z']}\n",
        "t.yml": "name: t\nwhere: {event: login, after: '2026-01-31'}\n",
        "u.yml": "name: u\nwhere: {event: login, before: 2026-01-31 12:00:00}\n",
    }
    project = project_of(tmp_path / "zoned", files)
    assert project.catalog.timezone == "Asia/Kolkata"
    utc = dt.datetime
    assert project.spec("s").where.measure.filter.window == m.BetweenWindow(
        m.AbsoluteTime(utc(2026, 1, 30, 18, 30)), m.AbsoluteTime(utc(2026, 2, 1))
    )
    assert project.spec("t").where.measure.filter.window == m.AfterWindow(m.AbsoluteTime(utc(2026, 1, 30, 18, 30)))
    assert project.spec("u").where.measure.filter.window == m.BeforeWindow(m.AbsoluteTime(utc(2026, 1, 31, 12)))
    # the traits file reads the catalog's zone too
    assert project.traits["last_order_at"].measure.filter.window == m.BeforeWindow(
        m.AbsoluteTime(utc(2024, 5, 31, 18, 30))
    )


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Zulu", "GMT"])
def test_catalog_timezone_utc_is_none(tmp_path: Path, name: str) -> None:
    files = {"_catalog.yml": CATALOG + f"timezone: {name}\n"}
    assert project_of(tmp_path, files).catalog.timezone is None


def test_traits(tmp_path: Path) -> None:
    traits = project_of(tmp_path, {}).traits
    types = {name: trait.type for name, trait in traits.items()}
    assert types == {
        "orders": "number",
        "days": "number",
        "revenue": "number",
        "basket": "number",
        "smallest": "number",
        "last_paid": "timestamp",
        "first_seen": "timestamp",
        "last_order_at": "timestamp",
        "recency": "number",
    }
    assert traits["recency"] == m.QuantileTrait(
        "recency", "last_order_at", 5, location=traits["recency"].location
    )
    smallest = traits["smallest"]
    assert isinstance(smallest, m.MeasureTrait)
    assert smallest.measure == m.Measure(
        "min",
        m.EventFilter(("purchase",), m.PropertyCondition("amount", m.Test("gt", 0, "number"))),
        "amount",
    )
    last = traits["last_order_at"]
    assert isinstance(last, m.MeasureTrait)
    assert last.measure.filter.window == m.BeforeWindow(AT(dt.datetime(2024, 6, 1)))


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    project = project_of(
        tmp_path,
        {
            "s.yml": """\
        name: s
        where:
          all:
            - &recent {event: login, within: 7d}
            - {<<: *recent, within: 30d, count: {gte: 2}}
    """
        },
    )
    where = project.spec("s").where
    assert isinstance(where, m.All)
    assert where.items[1] == count(
        "login", window=m.WithinWindow(m.Duration(30, "d")), test=m.Test("gte", 2, "number")
    )


def test_yaml_extension_and_other_files(tmp_path: Path) -> None:
    project = project_of(
        tmp_path,
        {
            "b.yaml": "name: b\nwhere: {event: x}\n",
            "a.yml": "name: a\nwhere: {segment: b}\n",
            "README.md": "not a spec",
            "notes.txt": "name: x",
        },
    )
    assert [spec.name for spec in project.segments] == ["a", "b"]


def test_no_traits_or_destinations_files(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "s.yml").write_text("name: s\nwhere: {event: x}\n")
    project = load_project(specs)
    assert project.traits == {} and project.destinations == {}


# ---- reading YAML: libyaml, with the pure-Python composer's trees and messages ----------

REPO = Path(__file__).resolve().parents[1]
YAML_FILES = sorted(
    p for pattern in ("segment_specs/**/*.yml", "bench/specs/**/*.yml", "tests/golden/specs/*.yml", "dbt_project/*.yml")
    for p in REPO.glob(pattern)
)


def _tree(node) -> list[tuple]:
    """Every node's kind, tag, value and marks; a plain scalar's style as None (libyaml
    gives '')."""
    import yaml

    out = [(type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column,
            node.end_mark.line, node.end_mark.column, node.style or None if isinstance(node, yaml.ScalarNode) else None,
            node.value if isinstance(node.value, str) else None)]
    for child in node.value if isinstance(node, yaml.SequenceNode) else (c for pair in node.value for c in pair) if isinstance(node, yaml.MappingNode) else ():
        out += _tree(child)
    return out


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_compose_reads_as_the_pure_python_composer(path):
    import yaml

    from segments.spec.nodes import compose

    text = path.read_text(encoding="utf-8")
    assert _tree(compose(text)) == _tree(yaml.compose(text, Loader=yaml.SafeLoader))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("name: x\nwhere: {segment: y\n", "x.yml:3:1: invalid YAML: expected ',' or '}', but got '<stream end>'"),  # pure-Python's words
        ("name: x\nwhere: " + "[" * 50_000 + "]" * 50_000 + "\n", "invalid YAML: nesting too deep"),  # libyaml's composer would crash
    ],
    ids=["syntax", "deep"],
)
def test_bad_yaml_is_a_spec_error(tmp_path, text, error):
    """In a process of its own: a crash would take pytest down with it."""
    import subprocess
    import sys

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "x.yml").write_text(text)
    done = subprocess.run([sys.executable, "-m", "segments.cli", "validate", "--specs", str(specs)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and error in done.stderr, done.stderr[-500:]
