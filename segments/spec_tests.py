"""``segments test``: unit tests of segments, written beside their rules.

A spec's ``tests:`` block (or ``<spec>.tests.yml`` beside it, holding ``tests:``)
gives a few users and events inline, an ``as_of`` and the expected members::

    tests:
      - name: a cart without a purchase is recovered
        as_of: 2026-01-15T00:00:00Z
        users: [{user_id: u1}, {user_id: u2, city: Pune}]
        events:
          - {user_id: u1, event: cart_add, at: now - 3h}
          - {user_id: u2, event: cart_add, at: now - 3h}
          - {user_id: u2, event: purchase, at: now - 1h}
        expect: [u1]

Each test loads its rows into the catalog's input tables of an in-memory DuckDB and
runs the segment's compiled SQL (the same trees the dbt models are rendered from, as
``preview`` runs them): no dbt, no warehouse, a few milliseconds a test. A failing test
prints who is missing and who is unexpected, and ``segments explain``'s lines for
each of them.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml
from sqlglot import exp
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from segments import uploads
from segments.compiler import dialects, render
from segments.compiler import models as md
from segments.compiler import sqlexpr as sx
from segments.engines.base import duckdb_setting
from segments.errors import SpecError, SpecErrors
from segments.spec import grammar
from segments.spec import model as m
from segments.spec.nodes import compose
from segments.spec.parse import TESTS_SUFFIX
from segments.spec.timeparse import parse_as_of

SQL_TYPES = {"string": "VARCHAR", "number": "DOUBLE", "boolean": "BOOLEAN", "timestamp": "TIMESTAMP"}


@dataclass(frozen=True)
class SegmentTest:
    """One test of one spec, its values typed by the catalog."""

    spec: str
    name: str
    location: m.Location
    as_of: dt.datetime
    #: catalog column (warehouse name) -> value, per user and per event
    users: tuple[dict[str, object], ...]
    events: tuple[dict[str, object], ...]
    #: segment -> expected members
    expect: dict[str, frozenset[str]]


@dataclass
class Outcome:
    test: SegmentTest
    #: segment -> (missing, unexpected)
    differences: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    #: explanation lines of the users that differ
    why: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class _Reader:
    """Reads the tests of one file, collecting errors as ``file:line:col``."""

    def __init__(self, project: m.Project, spec: m.SegmentSpec, file: Path):
        self.project = project
        self.spec = spec
        self.file = file
        self.errors: list[SpecError] = []

    def error(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.errors.append(SpecError(m.Location(str(self.file), mark.line + 1, mark.column + 1), message))

    def mapping(self, node: Node, what: str, keys: tuple[str, ...] | None) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in out:
                self.error(key, f"duplicate key '{name}'")
            elif keys is not None and name not in keys:
                self.error(key, f"unknown key '{name}' in {what}; valid keys: {', '.join(keys)}")
            else:
                out[name] = (key, value)
        return out

    def items(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def text(self, node: Node, what: str) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null" or str(node.value).strip() == "":
            self.error(node, f"{what} must be a non-empty value")
            return None
        return str(node.value)

    def time(self, node: Node, what: str, as_of: dt.datetime | None) -> dt.datetime | None:
        text = self.text(node, what)
        if text is None:
            return None
        try:
            if as_of is None and text.strip().startswith("now"):
                raise ValueError("must be a date or date-time, not relative to now")
            return parse_as_of(text, as_of or dt.datetime(1970, 1, 1))
        except ValueError as error:
            self.error(node, f"{what}: {error}")
            return None

    def value(self, node: Node, column: m.Column, as_of: dt.datetime) -> object:
        """A cell typed as the catalog says; None for null."""
        what = f"'{column.name}' ({column.type})"
        if not isinstance(node, ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        if node.tag == "tag:yaml.org,2002:null":
            return None
        text = str(node.value)
        if column.type == "string":
            return text
        if column.type == "number":
            try:
                return int(text) if node.tag == "tag:yaml.org,2002:int" else float(text)
            except ValueError:
                self.error(node, f"{what} must be a number, not {text!r}")
                return None
        if column.type == "boolean":
            if text.lower() not in ("true", "false"):
                self.error(node, f"{what} must be true or false, not {text!r}")
                return None
            return text.lower() == "true"
        return self.time(node, what, as_of)

    def row(self, node: Node, what: str, fixed: dict[str, str], columns: dict[str, m.Column], as_of: dt.datetime) -> dict[str, object] | None:
        """One user or event: ``fixed`` keys (test name -> warehouse column) and columns by catalog name."""
        entries = self.mapping(node, what, None)
        if entries is None:
            return None
        out: dict[str, object] = {}
        for name, (key, value) in entries.items():
            if name in fixed:
                if name in ("at", "created_at"):
                    out[fixed[name]] = self.time(value, name, as_of)
                else:
                    out[fixed[name]] = self.text(value, name)
            elif name in columns:
                out[columns[name].column] = self.value(value, columns[name], as_of)
            else:
                known = ", ".join([*fixed, *columns])
                self.error(key, f"unknown column '{name}' in {what}; the catalog has: {known}")
        for name in fixed:
            if name != "created_at" and name not in entries:
                self.error(node, f"{what} needs '{name}'")
        return out

    def test(self, node: Node) -> SegmentTest | None:
        errors = len(self.errors)
        keys = grammar.SEGMENT_TEST.names
        entries = self.mapping(node, "a segment test", keys)
        if entries is None:
            return None
        for key in keys:
            if grammar.SEGMENT_TEST.key(key).required and key not in entries:
                self.error(node, f"a segment test needs '{key}'")
        if errors != len(self.errors):
            return None
        name = self.text(entries["name"][1], "name") or ""
        as_of = self.time(entries["as_of"][1], "as_of", None)
        if as_of is None:
            return None
        catalog = self.project.catalog
        user_fixed = {"user_id": catalog.users.key}
        if catalog.users.created_at:
            user_fixed["created_at"] = catalog.users.created_at
        attributes = {k: v for k, v in catalog.users.attributes.items() if k not in ("user_id", "created_at")}
        users = [
            self.row(item, "a test user", user_fixed, attributes, as_of)
            for item in (self.items(entries["users"][1], "users") if "users" in entries else [])
        ]
        event_fixed = {"user_id": catalog.events.user_key, "event": catalog.events.name, "at": catalog.events.timestamp}
        events = [
            self.row(item, "a test event", event_fixed, catalog.events.properties, as_of)
            for item in (self.items(entries["events"][1], "events") if "events" in entries else [])
        ]
        expect = self.expect(entries["expect"][1])
        if errors != len(self.errors) or expect is None:
            return None
        return SegmentTest(
            self.spec.name, name, m.Location(str(self.file), node.start_mark.line + 1, node.start_mark.column + 1),
            as_of, tuple(u for u in users if u is not None), tuple(e for e in events if e is not None), expect,
        )

    def expect(self, node: Node) -> dict[str, frozenset[str]] | None:
        def ids(value: Node) -> frozenset[str]:
            return frozenset(t for item in self.items(value, "expected members") if (t := self.text(item, "a user id")) is not None)

        tiers = [tier.name for tier in self.spec.tiers]
        if not tiers:
            if isinstance(node, MappingNode):
                self.error(node, f"expect: {self.spec.name} has no tiers: list the expected user ids")
                return None
            return {self.spec.name: ids(node)}
        if not isinstance(node, MappingNode):
            self.error(node, f"expect: {self.spec.name} has tiers: map each tier to its expected user ids ({', '.join(tiers)})")
            return None
        entries = self.mapping(node, "expect", tuple(tiers))
        if entries is None:
            return None
        return {f"{self.spec.name}__{tier}": ids(value) for tier, (_, value) in entries.items()}


def _tests_node(reader: _Reader, root: Node | None, beside: bool) -> list[Node]:
    if root is None or not isinstance(root, MappingNode):
        return []
    entries = {str(k.value): v for k, v in root.value}
    if beside:
        extra = [k for k, _ in root.value if str(k.value) != "tests"]
        for key in extra:
            reader.error(key, f"unknown key '{key.value}' in a tests file; valid keys: tests")
        if "tests" not in entries:
            reader.error(root, "a tests file needs 'tests'")
    return reader.items(entries["tests"], "tests") if "tests" in entries else []


def _compose(path: Path, reader: _Reader) -> Node | None:
    try:
        return compose(path.read_text(encoding="utf-8").lstrip("\ufeff"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = m.Location(str(path), mark.line + 1, mark.column + 1) if mark else m.Location(str(path), 1, 1)
        reader.errors.append(SpecError(where, f"invalid YAML: {error.problem}"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reader.errors.append(SpecError(m.Location(str(path), 1, 1), f"cannot read the tests: {error}"))
    return None


def beside(spec: m.SegmentSpec) -> Path:
    """``<spec>.tests.yml`` next to the spec file."""
    return spec.path.with_name(f"{spec.path.stem}{TESTS_SUFFIX}{spec.path.suffix}")


def read_tests(project: m.Project, only: str | None = None) -> list[SegmentTest]:
    """Every test of every spec (or of the spec ``only``), in spec order.

    Raises:
        SpecErrors: every problem of every test, as ``file:line:col: message``.
    """
    tests: list[SegmentTest] = []
    errors: list[SpecError] = []
    for spec in project.segments:
        if only is not None and only not in (spec.name, *spec.segment_names()):
            continue
        for path, is_beside in ((spec.path, False), (beside(spec), True)):
            if not path.is_file():
                continue
            reader = _Reader(project, spec, path)
            for node in _tests_node(reader, _compose(path, reader), is_beside):
                test = reader.test(node)
                if test is not None:
                    tests.append(test)
            errors += reader.errors
    if errors:
        raise SpecErrors(errors)
    return tests


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def _cell(value: object) -> exp.Expression:
    if value is None:
        return exp.null()
    if isinstance(value, dt.datetime):
        return sx.timestamp_literal(value)
    return sx.literal(value)


def _create(con: duckdb.DuckDBPyConnection, relation: m.Relation, columns: dict[str, str], rows: tuple[dict[str, object], ...]) -> None:
    table = exp.table_(relation.name, db=relation.schema)
    if relation.schema:
        con.execute(dialects.render(exp.Create(kind="SCHEMA", exists=True, this=exp.Table(this=sx.ident(relation.schema))), "duckdb"))
    schema = exp.Schema(this=table, expressions=[
        exp.ColumnDef(this=sx.ident(name), kind=exp.DataType.build(kind)) for name, kind in columns.items()
    ])
    con.execute(dialects.render(exp.Create(kind="TABLE", this=schema), "duckdb"))
    if rows:
        values = exp.values([tuple(_cell(row.get(name)) for name in columns) for row in rows])
        insert = exp.insert(values, table.copy(), columns=list(columns))
        con.execute(dialects.render(insert, "duckdb"))


def load(con: duckdb.DuckDBPyConnection, catalog: m.Catalog, test: SegmentTest) -> None:
    """The test's rows as the catalog's input tables, typed as the catalog says."""
    users = catalog.users
    user_columns = {users.key: "VARCHAR"}
    if users.created_at:
        user_columns[users.created_at] = "TIMESTAMP"
    user_columns.update({c.column: SQL_TYPES[c.type] for n, c in users.attributes.items() if n not in ("user_id", "created_at")})
    events = catalog.events
    event_columns = {events.user_key: "VARCHAR", events.name: "VARCHAR", events.timestamp: "TIMESTAMP"}
    event_columns.update({c.column: SQL_TYPES[c.type] for c in events.properties.values()})
    if users.relation == events.relation:
        raise SpecErrors([SpecError(test.location, "the catalog's users and events share one table")])
    _create(con, users.relation, user_columns, test.users)
    _create(con, events.relation, event_columns, test.events)


def membership_query(project: m.Project, test: SegmentTest) -> exp.Select:
    """(segment_name, user_id) of the segments ``test`` expects, computed from the input
    tables and the uploaded lists (``main.segment_uploads``) in one query, no dbt."""
    compiled = md.compile_project(project, only=list(test.expect))
    return render.standalone_query(compiled, md.MEMBERSHIP, test.as_of, select=exp.select("segment_name", "user_id").from_(md.MEMBERSHIP))


def compare(test: SegmentTest, rows: Iterable[tuple[object, object]]) -> Outcome:
    """The test's expected members against ``rows`` of :func:`membership_query`."""
    got: dict[str, set[str]] = {}
    for segment, user in rows:
        got.setdefault(str(segment), set()).add(str(user))
    outcome = Outcome(test)
    for segment, expected in test.expect.items():
        members = got.get(segment, set())
        if members != expected:
            outcome.differences[segment] = (sorted(expected - members), sorted(members - expected))
    return outcome


def run(project: m.Project, test: SegmentTest) -> Outcome:
    """Run one test on an in-memory DuckDB; on a difference, explain who differs."""
    query = membership_query(project, test)
    with duckdb.connect(":memory:") as con:
        duckdb_setting(con, "TimeZone", "UTC")
        load(con, project.catalog, test)
        uploads.write_file_lists(con, project)
        outcome = compare(test, con.execute(dialects.render(query, "duckdb")).fetchall())
    if not outcome.ok:
        outcome.why = _explain(project, test, outcome)
    return outcome


def _explain(project: m.Project, test: SegmentTest, outcome: Outcome) -> list[str]:
    """``segments explain``'s lines for every user that differs, on a scratch file."""
    from segments.explain import explain_users

    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="segments-test-") as folder:
        warehouse = Path(folder) / "test.duckdb"
        with duckdb.connect(str(warehouse)) as con:
            load(con, project.catalog, test)
        for segment, (missing, unexpected) in outcome.differences.items():
            for explanation in explain_users(project.specs_dir, warehouse, segment, missing + unexpected, test.as_of):
                lines += explanation.lines()
    return lines


def report(outcome: Outcome) -> Iterator[str]:
    """A test's result as the command prints it."""
    test = outcome.test
    if outcome.ok:
        yield f"PASS {test.spec}: {test.name}"
        return
    yield f"FAIL {test.spec}: {test.name} ({test.location})"
    for segment, (missing, unexpected) in outcome.differences.items():
        expected = sorted(test.expect[segment])
        yield f"  {segment}: expected {len(expected)} member(s): {', '.join(expected) or '(none)'}"
        if missing:
            yield f"  - missing (expected, not a member): {', '.join(missing)}"
        if unexpected:
            yield f"  + unexpected (a member, not expected): {', '.join(unexpected)}"
    if outcome.why:
        yield "  why:"
        yield from (f"    {line}" for line in outcome.why)
