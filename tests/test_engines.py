"""One spec, many engines: the same data and as_of give the same membership on
DuckDB, PostgreSQL and Spark (SPEC 2.1).

The demo data (as Parquet files) is loaded with ``segments load --target T`` and every
example spec, plus a long-named tiered spec with a holdout, is built with ``segments
build --target T``: one dbt build per engine, Spark's included (it runs in this
process, so the JVM starts once for load, build and reads). Membership is then read
back with ``segments members --target T`` and compared exactly.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import datetime as dt
import io
import math
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlglot import exp

from segments import demo_data, engines, paths, warehouse
from segments.cli import main
from segments.compiler import models as md
from segments.engines.base import ReplaceTable, Session, drop
from segments.errors import SegmentsError
from segments.spec.parse import load_project

TARGETS = ("duckdb", "postgres", "spark")
BUCKET_ROWS = 400
AS_OF = "2026-01-15T00:00:00Z"
ANCHOR = dt.datetime(2026, 1, 15)
USERS = 1500

# 56 characters: with its tiers, `seg_<name>__<tier>` is over PostgreSQL's 63.
LONG = "customers_reading_whatsapp_campaigns_by_purchase_recency"
LONG_SPEC = f"""\
    name: {LONG}
    description: Long on purpose; its relations take the shortened names.
    holdout: 50
    where:
      all:
        - {{event: message_read, within: 90d}}
        - {{attribute: email, ends_with: ".COM", ignore_case: true}}
    tiers:
      - {{name: new, where: {{event: purchase, within: 30d}}}}
      - {{name: rest}}
    """


# Specs that reach every dialect rewrite and sqlglot spelling the examples may not
# (see segments/compiler/dialects.py), each with members in the demo data.
COVERAGE_SPECS = {
    # phone keys: REGEXP_REPLACE of every match; holdout: FromBase of md5 digits
    "engine_phone_list": "upload: {file: uploads/phones.csv, match_on: phone}\nholdout: 30\n",
    # STRPOS, STARTS_WITH, ENDS_WITH, LOWER; '%' and '_' are plain characters
    "engine_text_tests": """\
        where:
          any:
            - {attribute: city, contains: "ão"}
            - {attribute: email, starts_with: "AN", ignore_case: true}
            - {attribute: city, ends_with: pur}
            - {attribute: email, contains: "%_"}
        """,
    # COUNT(DISTINCT day) FILTER, SUM FILTER, intervals, a timestamp literal
    "engine_measures": """\
        holdout: 20
        where:
          all:
            - {event: page_view, within: 30d, active_days: {gte: 2}}
            - {event: purchase, after: 2025-01-01, sum: {property: amount, gte: 20}}
        """,
    # follow-ups within a window of the anchor; a property IN list; between relative times
    "engine_sequences": """\
        where:
          any:
            - {event: cart_add, within: 60d, followed_by: {event: purchase, within: 2d}}
            - {event: message_read, where: {property: channel, in: [whatsapp, email]}, between: [now - 60d, now - 1d], count: {gte: 3}}
        """,
}


def _phone_upload(data: demo_data.DemoData) -> str:
    """Every fifth user's phone, spelt differently every other time, plus keys that match nobody."""
    phones = [p for p in data.users["phone"].dropna().tolist()][::5]
    spelt = [p if i % 2 else " (" + p.replace(" ", "-") + ") " for i, p in enumerate(phones)]
    return "phone\n" + "\n".join([*spelt, "n/a", "---", '""']) + "\n"


@dataclass
class Built:
    engine: engines.Engine
    members: str  # `segments members` CSV


def cli(*argv: str) -> str:
    """Run the command line in process; its standard output, or fail with its errors."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert code == 0, f"segments {' '.join(argv)}:\n{err.getvalue()}"
    return out.getvalue()


@pytest.fixture(scope="module")
def data() -> demo_data.DemoData:
    return demo_data.generate(users=USERS, seed=7, anchor=ANCHOR)  # the VIP upload lists seed 7's users


@pytest.fixture(scope="module")
def specs(tmp_path_factory, data) -> Path:
    """The example specs, the long-named one and the coverage specs."""
    target = tmp_path_factory.mktemp("engines") / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    (target / f"{LONG}.yml").write_text(textwrap.dedent(LONG_SPEC))
    for name, body in COVERAGE_SPECS.items():
        (target / f"{name}.yml").write_text(f"name: {name}\n" + textwrap.dedent(body))
    (target / "uploads" / "phones.csv").write_text(_phone_upload(data))
    return target


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data) -> tuple[Path, Path]:
    return demo_data.write_files(data, tmp_path_factory.mktemp("inputs"), fmt="parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory, specs, inputs, postgres_env, spark_dir) -> Iterator[dict[str, Built]]:
    """Load and build on every engine, each through the command line (the variables
    stay set for the module's tests)."""
    users, events = inputs
    out: dict[str, Built] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
        for name, value in postgres_env.items():
            patch.setenv(name, value)
        patch.setenv(paths.WAREHOUSE_ENV, str(tmp_path_factory.mktemp("duckdb") / "warehouse.duckdb"))
        # DuckDB builds the flags in buckets of users (segments/compiler/buckets.py); a
        # few hundred users a bucket makes several, compared with the other engines' one table
        patch.setenv("SEGMENTS_BUCKET_ROWS", str(BUCKET_ROWS))
        for target in TARGETS:
            common = ["--target", target]
            cli("load", "--users", str(users), "--events", str(events), "--specs", str(specs), *common)
            cli("build", "--specs", str(specs), "--as-of", AS_OF, *common)
            out[target] = Built(engines.get(target), cli("members", *common))
        yield out


def segment_counts(members_csv: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for row in csv.DictReader(io.StringIO(members_csv)):
        size, held = counts.get(row["segment_name"], (0, 0))
        counts[row["segment_name"]] = (size + 1, held + (row["is_holdout"] == "true"))
    return counts


def test_the_comparison_has_something_to_compare(built, specs):
    counts = segment_counts(built["duckdb"].members)
    names = load_project(specs).segment_names()
    assert sorted(set(names) - set(counts)) == []  # every segment has members
    assert sum(held for _, held in counts.values()) > 0  # and holdouts are drawn


def test_duckdb_built_the_flags_in_buckets(built):
    con = built["duckdb"].engine
    with con.connect(read_only=True) as session:
        users = next(session.stream(exp.select("count(*)").from_(exp.table_(md.UNIVERSE, db="main_segments_build"))))[0]
    logs = list(Path(paths.work_dir()).rglob("dbt.log"))
    made = {int(n) for log in logs for n in re.findall(r"set variable segments_buckets = (\d+)", log.read_text())}
    assert users > 2 * BUCKET_ROWS and made == {math.ceil(users / BUCKET_ROWS)}


@pytest.mark.parametrize("target", ["postgres", "spark"])
def test_membership_is_identical_on_every_engine(built, target):
    assert built[target].members == built["duckdb"].members


def _traits(build: Built) -> dict[str, dict[str, object]]:
    with build.engine.connect() as opened:
        table = opened.engine.table(md.TRAITS)
        names = list(opened.columns(table.db, table.name))
        rows = opened.rows(exp.select(*names).from_(table))
    return {str(row[0]): dict(zip(names, row)) for row in rows}


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12)  # type: ignore[arg-type]
    return a == b


@pytest.mark.parametrize("target", ["postgres", "spark"])
def test_user_traits_are_identical_on_every_engine(built, target):
    expected, got = _traits(built["duckdb"]), _traits(built[target])
    assert set(got) == set(expected) and expected
    wrong = {
        (user, trait): (value, got[user][trait])
        for user, row in expected.items()
        for trait, value in row.items()
        if not _same(value, got[user][trait])
    }
    assert not wrong, dict(list(wrong.items())[:10])


@pytest.mark.parametrize("target", TARGETS)
def test_long_segment_names_are_shortened_alike(built, target):
    for tier in ("new", "rest"):
        relation = md.segment_model_name(f"{LONG}__{tier}")
        assert len(relation) == md.MAX_RELATION_NAME
        with built[target].engine.connect() as opened:
            view = opened.engine.table(relation)
            size = opened.rows(exp.select(exp.Count(this=exp.Star())).from_(view))[0][0]
        assert size == segment_counts(built[target].members)[f"{LONG}__{tier}"][0]


# a derived segment over an uploaded list; a sequence and a windowed count, whose
# preview scans only the events in their windows
PREVIEWED = ("win_back", "abandoned_cart", "pricing_page_visitors")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("segment", PREVIEWED)
def test_preview_agrees_with_the_build(built, specs, target, segment):
    out = cli("preview", segment, "--specs", str(specs), "--as-of", AS_OF, "--limit", "3", "--target", target)
    size, held = segment_counts(built[target].members)[segment]
    first = [r["user_id"] for r in csv.DictReader(io.StringIO(built[target].members)) if r["segment_name"] == segment][:3]
    assert size > 0 and f"{segment}: {size:,} members ({held:,} in holdout)" in out
    assert [line.strip() for line in out.splitlines()[1:]] == first


@pytest.mark.parametrize("target", TARGETS)
def test_experiment_arms_and_priority_lists_match_an_independent_computation(built, specs, target):
    """Arms from md5 in Python (SPEC 2.7) and priority lists from the listed segments'
    members, against what each engine published."""
    project = load_project(specs)
    with built[target].engine.connect(read_only=True) as opened:
        rows = opened.rows(exp.select("segment_name", "user_id", "arm").from_(opened.engine.table(md.MEMBERSHIP)))
    members: dict[str, set[str]] = {}
    arms: dict[tuple[str, str], str | None] = {}
    for segment, user, arm in rows:
        members.setdefault(segment, set()).add(user)
        arms[(segment, user)] = arm
    checked = 0
    for spec in project.segments:
        for name in spec.segment_names():
            expected = {u: expected_arm(spec.experiment, u) if spec.experiment else None for u in members.get(name, ())}
            assert {u: arms[(name, u)] for u in members.get(name, ())} == expected, name
        if spec.experiment is not None:
            assert len({arms[(spec.name, u)] for u in members[spec.name]}) == len(spec.experiment.arms)
            checked += 1
        if spec.priority:
            taken: set[str] = set()
            for listed in spec.priority:
                assert members.get(f"{spec.name}__{listed}", set()) == members.get(listed, set()) - taken, listed
                taken |= members.get(listed, set())
            assert sum(len(members.get(n, ())) for n in spec.segment_names()) > 0
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("target", TARGETS)
def test_members_shows_the_arm_of_segments_with_experiments(built, specs, target):
    """``segments members``: an ``arm`` column where a segment shown has an experiment,
    each member's arm as SPEC 2.7 computes it by hand; no column for other segments."""
    project = load_project(specs)
    experiment = project.spec("cart_reminder_experiment").experiment
    shown = list(csv.reader(io.StringIO(cli("members", "--segment", "cart_reminder_experiment", "--specs", str(specs),
                                            "--target", target))))
    assert shown[0] == ["segment_name", "user_id", "is_holdout", "arm"] and len(shown) > 20
    assert all(arm == expected_arm(experiment, user) for _, user, _, arm in shown[1:])
    assert {arm for *_, arm in shown[1:]} == {arm for arm, _ in experiment.arms}
    plain = cli("members", "--segment", "abandoned_cart", "--specs", str(specs), "--target", target)
    assert plain.splitlines()[0] == "segment_name,user_id,is_holdout"
    everyone = list(csv.DictReader(io.StringIO(built[target].members)))  # all segments: the column, empty elsewhere
    assert {r["arm"] for r in everyone if r["segment_name"] == "abandoned_cart"} == {""}
    assert [r for r in everyone if r["segment_name"] == "cart_reminder_experiment"] == [
        dict(zip(shown[0], row, strict=True)) for row in shown[1:]]


def expected_arm(experiment, user_id: str) -> str:
    """SPEC 2.7 by hand: md5's first 8 hex digits mod 10000 against the cumulative percents."""
    bucket = int(hashlib.md5(f"{experiment.name}:{user_id}".encode()).hexdigest()[:8], 16) % 10_000
    total = 0
    for arm, percent in experiment.arms:
        total += round(percent * 100)
        if bucket < total:
            return arm
    raise AssertionError("the arms add up to 100%")


def _published(opened: Session) -> list[tuple]:
    table = opened.engine.table(md.MEMBERSHIP)
    query = exp.select("segment_name", "user_id", "is_holdout").from_(table).order_by("segment_name", "user_id")
    return opened.rows(query)


def _rename(opened: Session, table: exp.Table, to: exp.Table, kind: str = "TABLE") -> None:
    opened.execute(exp.Alter(this=table.copy(), kind=kind, actions=[exp.AlterRename(this=to.copy())]))


@pytest.mark.parametrize("target", TARGETS)
def test_a_failed_publish_changes_nothing(built, specs, target):
    """The build's membership is emptied and its traits (a view) removed: publishing
    copies the (empty) membership, then fails on the traits. Nothing may show."""
    project = load_project(specs)
    with built[target].engine.connect() as opened:
        engine = opened.engine
        before = _published(opened)
        build = {name: engine.table(name, engine.build_schema) for name in (md.MEMBERSHIP, md.TRAITS)}
        kind = {md.MEMBERSHIP: "TABLE", md.TRAITS: "VIEW"}
        aside = {name: engine.table(f"{name}_aside", engine.build_schema) for name in build}
        for name in build:
            _rename(opened, build[name], aside[name], kind[name])
        empty = exp.select("*").from_(aside[md.MEMBERSHIP]).where(exp.false())
        opened.apply([ReplaceTable(build[md.MEMBERSHIP], empty)])
        try:
            with pytest.raises(SegmentsError, match="unchanged"):
                # forced past the mass-removal guard: this tests a publish that fails part way
                warehouse.publish(opened, project, project.segment_names(), ANCHOR, force=True)
        finally:
            opened.execute(drop("TABLE", build[md.MEMBERSHIP]))
            for name in build:
                _rename(opened, aside[name], build[name], kind[name])
        assert _published(opened) == before and before
        assert not opened.columns(engine.target_schema, md.MEMBERSHIP + "__segments_next")


@pytest.mark.parametrize("target", TARGETS)
def test_republishing_replaces_tables_and_drops_views_of_removed_segments(built, specs, target):
    project = load_project(specs)
    names = list(project.segment_names())
    with built[target].engine.connect() as opened:
        before = _published(opened)
        view = opened.engine.table(md.segment_model_name("win_back"))
        warehouse.publish(opened, project, [n for n in names if n != "win_back"], ANCHOR)
        assert not opened.columns(view.db, view.name)
        assert "win_back" not in [name for name, *_ in warehouse.segment_sizes(opened)]
        warehouse.publish(opened, project, names, ANCHOR)
        assert opened.columns(view.db, view.name)
        assert _published(opened) == before
        assert not opened.columns(opened.engine.target_schema, md.MEMBERSHIP + "__segments_next")


@pytest.mark.parametrize("target", TARGETS)
def test_local_days_of_a_catalog_timezone(target, postgres_env, spark_dir, monkeypatch):
    """``active_days``' day of a naive UTC instant in the catalog's zone, as each engine
    runs it: 2026-01-31 20:00 UTC is 2026-02-01 in Kolkata (UTC+5:30), 18:29:59 is not;
    05:00 UTC is still 2026-01-30 in Los Angeles. No zone keeps the UTC date."""
    from segments.compiler.measures import day_of
    from segments.compiler.sqlexpr import timestamp_literal

    for name, value in postgres_env.items():
        monkeypatch.setenv(name, value)
    instants = [dt.datetime(2026, 1, 31, 20), dt.datetime(2026, 1, 31, 18, 29, 59), dt.datetime(2026, 1, 31, 5)]
    at = exp.column("occurred_at")
    rows = exp.union(
        *[exp.select(exp.Literal.number(i).as_("n"), timestamp_literal(t).as_("occurred_at")) for i, t in enumerate(instants)],
        distinct=False,
    )
    query = (
        exp.select(
            "n",
            day_of(at.copy(), "Asia/Kolkata").as_("kolkata"),
            day_of(at.copy(), "America/Los_Angeles").as_("los_angeles"),
            day_of(at.copy()).as_("utc"),
        )
        .from_(rows.subquery("t"))
        .order_by("n")
    )
    with engines.get(target).connect() as opened:
        got = [tuple(str(v) for v in row[1:]) for row in opened.rows(query)]
    assert got == [
        ("2026-02-01", "2026-01-31", "2026-01-31"),
        ("2026-01-31", "2026-01-31", "2026-01-31"),
        ("2026-01-31", "2026-01-30", "2026-01-31"),
    ]


def test_a_spark_built_membership_syncs_exactly(built, specs, spark_dir):
    """``segments sync --target spark``: the membership is read from Spark page by page,
    the record kept in a DuckDB file beside the Spark warehouse; the loopback
    receiver's audiences then equal the membership exactly, and a second sync sends
    nothing."""
    from sync import engine as sync_engine
    from sync.places import sync_state_file
    from sync.receiver import AudienceReceiver
    from sync_fixtures import SECRET

    members: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(built["spark"].members)):
        if row["is_holdout"] == "false":
            members.setdefault(row["segment_name"], set()).add(row["user_id"])
    project = load_project(specs)
    spark = built["spark"].engine
    with AudienceReceiver(SECRET) as receiver:
        settings = sync_engine.Settings(env={"CRM_HOOK_URL": receiver.url, "CRM_HOOK_SECRET": SECRET})
        outcomes = sync_engine.sync(project, spark, destination="crm_hook", settings=settings)
        assert outcomes and all(o.ok for o in outcomes), [sync_engine.summary_line(o) for o in outcomes]
        synced = {o.segment for o in outcomes}
        assert receiver.audiences == {name: members[name] for name in synced if members.get(name)}
        assert sum(o.added for o in outcomes) == sum(len(members.get(name, ())) for name in synced) > 0
        again = sync_engine.sync(project, spark, destination="crm_hook", settings=settings)
        assert [(o.added, o.removed) for o in again] == [(0, 0)] * len(again)
        assert receiver.bad_signatures == 0
    assert sync_state_file(spark) == spark_dir / "sync_state.duckdb"
