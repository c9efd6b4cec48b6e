"""``segments explain``: why a user is in or out, agreeing with the build.

The demo data is built with ``segments build`` (dbt) once per engine; then every
example segment is explained for every member and a sample of non-members, and the
verdict and holdout of each explanation must be the build's. The lines under a
verdict must be consistent with it (an ``all`` holds when each of its conditions does,
and so on), and never show a PII attribute's value.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import shutil
import textwrap
from pathlib import Path

import duckdb
import pytest

from segments import demo_data, paths
from segments.cli import main
from segments.explain import ALL, ANY, NOT, Explanation, Step, explain_users
from segments.spec.parse import load_project

AS_OF = "2026-01-15T00:00:00Z"
ANCHOR = dt.datetime(2026, 1, 15)
NON_MEMBERS = 15  # sampled per segment


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("explain") / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    return target


@pytest.fixture(scope="module")
def data() -> demo_data.DemoData:
    return demo_data.generate(users=600, seed=7, anchor=ANCHOR)  # the VIP upload lists seed 7's users


def _members(csv_text: str) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for row in csv.DictReader(io.StringIO(csv_text)):
        out.setdefault(row["segment_name"], {})[row["user_id"]] = row["is_holdout"] == "true"
    return out


@pytest.fixture(scope="module")
def duckdb_build(tmp_path_factory, specs, data) -> tuple[Path, dict[str, dict[str, bool]]]:
    warehouse = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        demo_data.write_duckdb(data, con)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
        code, _, err = cli("build", "--specs", str(specs), "--warehouse", str(warehouse), "--as-of", AS_OF)
        assert code == 0, err
        code, out, err = cli("members", "--specs", str(specs), "--warehouse", str(warehouse))
        assert code == 0, err
    return warehouse, _members(out)


def _sample(users: list[str], members: dict[str, bool]) -> list[str]:
    """Every member and NON_MEMBERS non-members spread over the users."""
    others = [u for u in users if u not in members]
    step = max(1, len(others) // NON_MEMBERS)
    return sorted(members) + others[::step][:NON_MEMBERS]


def _consistent(steps: list[Step]) -> list[str]:
    """Composite steps whose verdict is not what their conditions give."""
    wrong = []
    for index, step in enumerate(steps):
        if step.kind not in (ALL, ANY, NOT):
            continue
        children = []
        for later in steps[index + 1:]:
            if later.depth <= step.depth:
                break
            if later.depth == step.depth + 1:
                children.append(later.holds)
        expected = {ALL: all(children), ANY: any(children), NOT: not children[0] if children else None}[step.kind]
        if expected != step.holds:
            wrong.append(step.line())
    return wrong


def check_agreement(explanations: list[Explanation], built: dict[str, dict[str, bool]], pii: set[str]) -> int:
    checked = 0
    for e in explanations:
        members = built.get(e.segment, {})
        assert e.member == (e.user_id in members), "\n".join(e.lines())
        assert e.holdout == members.get(e.user_id, False), "\n".join(e.lines())
        if e.in_universe:
            # the rule is the AND of its top-level conditions
            assert e.member == all(s.holds for s in e.steps if s.depth == 1), "\n".join(e.lines())
            assert _consistent(e.steps) == [], "\n".join(e.lines())
        text = "\n".join(e.lines())
        assert not [value for value in pii if value in text]
        checked += 1
    return checked


def _pii_values(data: demo_data.DemoData, specs: Path) -> set[str]:
    attributes = load_project(specs).catalog.users.attributes
    columns = [a.column for a in attributes.values() if a.pii]
    values = {str(v) for c in columns for v in data.users[c].dropna().tolist()}
    return {v for v in values if len(v) > 3}


def test_explain_agrees_with_the_build_for_every_example_segment(duckdb_build, specs, data):
    warehouse, built = duckdb_build
    users = sorted(str(u) for u in data.users["user_id"].tolist())
    pii = _pii_values(data, specs)
    project = load_project(specs)
    checked = 0
    for spec in project.segments:
        for segment in spec.segment_names():
            wanted = _sample(users, built.get(segment, {}))
            explanations = explain_users(specs, warehouse, segment, wanted)  # as_of: the build's
            assert {e.as_of for e in explanations} == {ANCHOR}
            checked += check_agreement(explanations, built, pii)
    members = sum(len(m) for m in built.values())
    assert checked >= members + NON_MEMBERS * len(project.segment_names())
    assert members > 500  # the comparison has members to compare


def test_a_tiered_specs_name_explains_each_tier(duckdb_build, specs):
    warehouse, built = duckdb_build
    user = sorted(built["rfm__loyal"])[0]
    explanations = explain_users(specs, warehouse, "rfm", [user])
    assert [e.segment for e in explanations] == list(load_project(specs).spec("rfm").segment_names())
    assert [e.segment for e in explanations if e.member] == ["rfm__loyal"]


def test_explain_cli_prints_the_rule_line_by_line(duckdb_build, specs, monkeypatch):
    warehouse, built = duckdb_build
    monkeypatch.setenv(paths.WAREHOUSE_ENV, str(warehouse))
    user = sorted(built["abandoned_cart"])[0]
    code, out, err = cli("explain", "abandoned_cart", user, "--specs", str(specs))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"abandoned_cart: user {user} at 2026-01-15 00:00:00 UTC is in")
    assert lines[1] == "  [y] cart_add within 48h, then:"
    assert lines[2].startswith("    [y] cart_add within 48h: count ")
    assert lines[3].startswith("    [y] not followed by purchase after the last cart_add: at 2026-01-1")
    assert lines[3].endswith("follow-ups 0, needs none")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["explain", "abandoned_cat", "u1"], 1, "did you mean 'abandoned_cart'"),
        (["explain", "abandoned_cart"], 2, "Missing argument 'USER_ID'"),
        (["explain", "abandoned_cart", "u1", "--as-of", "yesterday"], 1, "--as-of:"),
    ],
)
def test_explain_bad_input(duckdb_build, specs, monkeypatch, argv, code, message):
    monkeypatch.setenv(paths.WAREHOUSE_ENV, str(duckdb_build[0]))
    got, _, err = cli(*argv, "--specs", str(specs))
    assert got == code
    assert message.lower() in err.lower()
    assert "Traceback" not in err


def test_unknown_user_and_user_created_after_as_of(duckdb_build, specs, data):
    warehouse, _ = duckdb_build
    created = data.users.sort_values("created_at")
    first = str(created["user_id"].iloc[0])
    before = dt.datetime.fromisoformat(str(created["created_at"].iloc[0])).replace(tzinfo=None) - dt.timedelta(seconds=1)
    unknown, early = explain_users(specs, warehouse, "regional_offer", ["nobody-here"]) + explain_users(
        specs, warehouse, "regional_offer", [first], as_of=before
    )
    assert unknown.lines() == [f"regional_offer: user nobody-here at {ANCHOR.isoformat(sep=' ')} UTC is out: no such user in the users table"]
    assert (unknown.known, unknown.member) == (False, False)
    assert early.known and not early.in_universe and not early.member
    assert early.lines()[0].endswith("out: created after as_of, so in no segment (SPEC 2.2)")


# ---- exact wording on hand-written rows ------------------------------------------------

CATALOG = """\
users:
  table: raw.users
  key: user_id
  attributes:
    email: {type: string, pii: true}
    city: {type: string}
events:
  table: raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    channel: {type: string}
"""
SPEC = """\
name: cart_in_pune
holdout: 50
where:
  all:
    - {event: cart_add, within: 48h, not_followed_by: {event: purchase}}
    - {attribute: email, ends_with: "@example.com"}
    - any:
        - {attribute: city, in: [Pune, Nagpur]}
        - {event: message_read, where: {property: channel, is: whatsapp}, count: {gte: 3}}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("small")
    specs = root / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "cart_in_pune.yml").write_text(SPEC)
    warehouse = root / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.users (user_id VARCHAR, email VARCHAR, city VARCHAR)")
        con.execute("INSERT INTO raw.users VALUES ('u1', 'ana@example.com', 'Pune'), ('u2', 'bo@example.org', 'Goa')")
        con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, channel VARCHAR)")
        con.execute(
            "INSERT INTO raw.events VALUES ('u1', 'cart_add', '2026-01-14 10:00:00', NULL), "
            "('u1', 'cart_add', '2026-01-14 11:00:00', NULL), ('u2', 'cart_add', '2026-01-14 09:00:00', NULL), "
            "('u2', 'purchase', '2026-01-14 12:00:00', NULL), ('u2', 'message_read', '2026-01-10 12:00:00', 'whatsapp')"
        )
    return specs, warehouse


def test_exact_lines_with_measure_values_and_no_pii(small):
    specs, warehouse = small
    u1, u2 = explain_users(specs, warehouse, "cart_in_pune", ["u1", "u2"], as_of=ANCHOR)
    holdout_u1 = "in, in the 50% holdout (never synced)" if u1.holdout else "in (not in the 50% holdout)"
    assert u1.lines() == [
        f"cart_in_pune: user u1 at 2026-01-15 00:00:00 UTC is {holdout_u1}",
        "  [y] all of:",
        "    [y] cart_add within 48h, then:",
        "      [y] cart_add within 48h: count 2, needs at least 1",
        "      [y] not followed by purchase after the last cart_add: at 2026-01-14 11:00:00, follow-ups 0, needs none",
        "    [y] email ends with @example.com: (pii)",
        "    [y] any of:",
        "      [y] city is one of Pune, Nagpur: Pune",
        "      [n] message_read where channel is whatsapp: count 0, needs at least 3",
    ]
    assert u2.lines() == [
        "cart_in_pune: user u2 at 2026-01-15 00:00:00 UTC is out",
        "  [n] all of:",
        "    [n] cart_add within 48h, then:",
        "      [y] cart_add within 48h: count 1, needs at least 1",
        "      [n] not followed by purchase after the last cart_add: at 2026-01-14 09:00:00, follow-ups 1, needs none",
        "    [n] email ends with @example.com: (pii)",
        "    [n] any of:",
        "      [n] city is one of Pune, Nagpur: Goa",
        "      [n] message_read where channel is whatsapp: count 1, needs at least 3",
    ]


# ---- PostgreSQL: the same check, on a PostgreSQL build ---------------------------------


def test_explain_agrees_with_the_build_on_postgres(tmp_path_factory, specs, data, postgres_env):
    users_file, events_file = demo_data.write_files(data, tmp_path_factory.mktemp("inputs"), fmt="parquet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("pgwork")))
        for name, value in postgres_env.items():
            patch.setenv(name, value)
        common = ["--specs", str(specs), "--target", "postgres"]
        for argv in (["load", "--users", str(users_file), "--events", str(events_file)], ["build", "--as-of", AS_OF]):
            code, _, err = cli(*argv, *common)
            assert code == 0, err
        code, out, err = cli("members", "--target", "postgres")
        assert code == 0, err
        built = _members(out)
        users = sorted(str(u) for u in data.users["user_id"].tolist())
        pii = _pii_values(data, specs)
        checked = 0
        project = load_project(specs)
        for name in project.segment_names():  # every example segment: every member, a sample of the others
            wanted = _sample(users, built.get(name, {}))
            checked += check_agreement(explain_users(specs, None, name, wanted, target="postgres"), built, pii)
        members = sum(len(m) for m in built.values())
        assert checked >= members + NON_MEMBERS * len(project.segment_names()) and members > 500
