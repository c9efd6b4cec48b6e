"""Incremental refresh (:mod:`segments.refresh`): a ``segments build`` after a build
evaluates again only the users whose segments can have changed, without dbt, and
publishes the same membership, traits and history as a full build at the same as_of.

One warehouse is refreshed round after round; after each round a copy of it is built
in full (``--full-refresh``, through dbt) and the published tables must be equal.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest
from sqlglot import exp

from segments import demo_data, paths, pipeline, refresh
from segments.compiler import models as md

ANCHOR = dt.datetime(2026, 3, 1)
T0 = ANCHOR - dt.timedelta(days=3)
PUBLISHED = ("main.segment_membership", "main.user_traits", "main_segments_build.int_segment_flags")

# Measures in windows that slide over the rounds: an average (read again from history
# when it changes) and extremes (combined with the change; from history only when an
# event that left may have held the extreme).
SLIDING_MEASURES = {
    "basket_average": "{event: purchase, within: 2d, avg: {property: amount, gte: 60}}",
    "basket_largest": "{event: purchase, within: 3d, max: {property: amount, gte: 120}}",
    "basket_smallest": "{event: purchase, within: 3d, min: {property: amount, lte: 40}}",
    "first_view_today": "{event: page_view, within: 1d, first_occurred: {after: now - 12h}}",
}
MEASURE_PREFIXES = ("avg_", "max_", "min_", "first_occurred_")


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("specs") / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    for name, condition in SLIDING_MEASURES.items():
        (target / f"{name}.yml").write_text(f"name: {name}\ndescription: Refresh test.\nowner: growth\nwhere: {condition}\n")
    return target


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> tuple[Path, Path]:
    """A warehouse holding the events up to T0, and the events after it aside."""
    root = tmp_path_factory.mktemp("refresh")
    warehouse = root / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    demo_data.write_duckdb(demo_data.generate(users=600, seed=11, anchor=ANCHOR), con)
    con.execute("CREATE TABLE raw.later AS SELECT * FROM raw.events WHERE occurred_at > ?", [T0])
    con.execute("DELETE FROM raw.events WHERE occurred_at > ?", [T0])
    con.close()
    return warehouse, root


@pytest.fixture(autouse=True)
def work_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))


@pytest.fixture(scope="module")
def built(events, specs, tmp_path_factory) -> Path:
    """The module's warehouse after at least one build (the rounds make more)."""
    warehouse, _ = events
    con = duckdb.connect(str(warehouse), read_only=True)
    has_state = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [refresh.STATE]
    ).fetchone()[0]
    con.close()
    if not has_state:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
            pipeline.build(specs, warehouse, T0)
    return warehouse


def published(warehouse: Path) -> dict[str, set[tuple]]:
    """The published tables, and the sliding measures of every user who has one (a
    refresh keeps a row for a user whose events all left; a full build has none)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = {table: set(con.execute(f"SELECT * FROM {table}").fetchall()) for table in PUBLISHED}
        measures = [name for name, *_ in con.execute(f"DESCRIBE main_segments_build.{md.MEASURES}").fetchall()
                    if name.startswith(MEASURE_PREFIXES)]
        assert len(measures) == len(SLIDING_MEASURES), measures
        some = " OR ".join(f"{name} IS NOT NULL" for name in measures)
        tables["measures"] = set(con.execute(f"SELECT user_id, {', '.join(measures)} FROM main_segments_build.{md.MEASURES} WHERE {some}").fetchall())
        return tables
    finally:
        con.close()


def full_build_of(warehouse: Path, specs: Path, as_of: dt.datetime, tmp_path: Path) -> dict[str, set[tuple]]:
    copy = tmp_path / "full.duckdb"
    shutil.copyfile(warehouse, copy)
    result = pipeline.build(specs, copy, as_of, full_refresh=True)
    assert result.refreshed is None
    return published(copy)


def execute(warehouse: Path, sql: str, *params: object) -> None:
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(sql, list(params))
    finally:
        con.close()


# Each round: what happens to the data, the as_of of the build, whether it may refresh.
ROUNDS = [
    ("the first build is a full one", None, T0, False),
    ("an hour of new events", "occurred_at <= TIMESTAMP '2026-02-26 01:00:00'", T0 + dt.timedelta(hours=1), True),
    ("a day of new events", "occurred_at <= TIMESTAMP '2026-02-27 01:00:00'", T0 + dt.timedelta(days=1, hours=1), True),
    ("the rest of the events", "TRUE", ANCHOR, True),
    ("a quiet week: windows slide, nothing arrives", None, ANCHOR + dt.timedelta(days=7), True),
]


def test_rounds_of_refreshes_publish_what_a_full_build_publishes(events, specs, tmp_path):
    warehouse, _ = events
    for label, arrive, as_of, refreshes in ROUNDS:
        if arrive is not None:
            execute(warehouse, f"INSERT INTO raw.events SELECT * FROM raw.later WHERE {arrive}")
            execute(warehouse, f"DELETE FROM raw.later WHERE {arrive}")
        result = pipeline.build(specs, warehouse, as_of)
        assert (result.refreshed is not None) == refreshes, label
        if refreshes:
            assert result.refreshed.previous_as_of < as_of
        expected = full_build_of(warehouse, specs, as_of, tmp_path)
        got = published(warehouse)
        for table in expected:
            assert got[table] == expected[table], f"{label}: {table} differs from a full build"


def test_history_of_a_refresh_records_who_entered_and_left(events, specs, tmp_path):
    warehouse, _ = events
    con = duckdb.connect(str(warehouse), read_only=True)
    last = con.execute("SELECT max(published_at) FROM main.segment_membership_history").fetchone()[0]
    con.close()
    as_of = T0 + dt.timedelta(days=12)
    copy = tmp_path / "before.duckdb"
    shutil.copyfile(warehouse, copy)
    before = published(copy)["main.segment_membership"]
    result = pipeline.build(specs, warehouse, as_of)
    assert result.refreshed is not None
    after = published(warehouse)["main.segment_membership"]
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT segment_name, user_id, change FROM main.segment_membership_history WHERE published_at > ?", [last]
    ).fetchall()
    con.close()
    old = {(s, u) for s, u, *_ in before}
    new = {(s, u) for s, u, *_ in after}
    assert {(s, u) for s, u, c in rows if c == "entered"} == new - old
    assert {(s, u) for s, u, c in rows if c == "exited"} == old - new
    assert new - old or old - new, "a 3-day slide changes some membership"


def test_a_publish_that_fails_after_a_refresh_leaves_the_warehouse_as_it_was(built, specs, tmp_path, monkeypatch):
    """The refresh and its publish are one transaction: a failed publish leaves the
    build schema where the published tables are, so the next refresh misses nothing."""
    from segments import history
    from segments.errors import SegmentsError

    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(built, warehouse)
    con = duckdb.connect(str(warehouse), read_only=True)
    last = con.execute(f"SELECT as_of FROM main_segments_build.{refresh.STATE}").fetchone()[0]
    con.close()
    before = published(warehouse)
    as_of = last + dt.timedelta(days=2)
    record = history.record
    failing = exp.select("*").from_("no_such_table")
    monkeypatch.setattr(history, "record", lambda *a, **k: [*record(*a, **k), failing])
    with pytest.raises(SegmentsError, match="the warehouse is unchanged"):
        pipeline.build(specs, warehouse, as_of)
    monkeypatch.setattr(history, "record", record)
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute(f"SELECT as_of FROM main_segments_build.{refresh.STATE}").fetchone()[0] == last
    assert con.execute("SELECT count(*) FROM main.segment_membership_history WHERE as_of = ?", [as_of]).fetchone()[0] == 0
    con.close()
    assert published(warehouse) == before
    result = pipeline.build(specs, warehouse, as_of)
    assert result.refreshed is not None and result.refreshed.previous_as_of == last
    assert published(warehouse) == full_build_of(warehouse, specs, as_of, tmp_path)


# What makes the next build a full one; each is applied to a refreshed warehouse.
FALLBACKS = [
    ("a user's attribute changed", "UPDATE raw.users SET city = 'Pune' WHERE user_id = (SELECT min(user_id) FROM raw.users)", 1),
    ("an event arrived before the last as_of", "INSERT INTO raw.events SELECT * FROM raw.events WHERE occurred_at < ? LIMIT 1", 1),
    ("an uploaded list changed", "DELETE FROM main.segment_uploads WHERE rowid = (SELECT min(rowid) FROM main.segment_uploads)", 1),
    ("as_of moved back", None, -1),
]


@pytest.mark.parametrize("label, sql, days", FALLBACKS, ids=[f[0] for f in FALLBACKS])
def test_what_a_refresh_cannot_continue_from_gets_a_full_build(built, specs, tmp_path, label, sql, days):
    source = built
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(source, warehouse)
    con = duckdb.connect(str(warehouse), read_only=True)
    last = con.execute(f"SELECT as_of FROM main_segments_build.{refresh.STATE}").fetchone()[0]
    con.close()
    if sql is not None:
        execute(warehouse, sql, *([last] if "?" in sql else []))
    as_of = last + dt.timedelta(days=days)
    result = pipeline.build(specs, warehouse, as_of)
    assert result.refreshed is None, label
    assert published(warehouse) == full_build_of(warehouse, specs, as_of, tmp_path)


def test_a_changed_spec_gets_a_full_build(built, specs, tmp_path):
    source = built
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(source, warehouse)
    changed = tmp_path / "specs"
    shutil.copytree(specs, changed)
    spec = next(p for p in changed.glob("*.yml") if not p.name.startswith("_") and "within: 48h" in p.read_text())
    spec.write_text(spec.read_text().replace("within: 48h", "within: 72h"))
    con = duckdb.connect(str(warehouse), read_only=True)
    last = con.execute(f"SELECT as_of FROM main_segments_build.{refresh.STATE}").fetchone()[0]
    con.close()
    assert pipeline.build(changed, warehouse, last + dt.timedelta(hours=1)).refreshed is None


@pytest.mark.parametrize(
    "query, edges",
    [
        ("SELECT 1 FROM t WHERE occurred_at > :as_of - INTERVAL '7' DAY AND event_name = 'a'", [("occurred_at", ("a",))]),
        ("SELECT 1 FROM t WHERE (event_name IN ('a', 'b') AND x = 1) AND occurred_at <= :as_of", [("occurred_at", ("a", "b"))]),
        ("SELECT 1 FROM t WHERE signup_at > :as_of - INTERVAL '7' DAY OR event_name = 'a'", [("signup_at", None)]),
    ],
)
def test_edges_are_read_from_the_comparisons_with_as_of(query, edges):
    tree = exp.maybe_parse(query, dialect="duckdb")
    for placeholder in tree.find_all(exp.Placeholder):
        placeholder.set("this", "as_of")
    found = refresh.edges(md.Model("m", "f", tree, ""), "t")
    assert [(e.column, e.events) for e in found] == edges


@pytest.mark.parametrize(
    "query",
    [
        "SELECT DATE_DIFF('day', signup_at, :as_of) FROM t",  # not a comparison
        "SELECT 1 FROM t WHERE signup_at + INTERVAL '1' DAY > :as_of",  # an expression of a column
    ],
)
def test_as_of_outside_a_comparison_with_a_column_needs_a_full_build(query):
    tree = exp.maybe_parse(query, dialect="duckdb")
    for placeholder in tree.find_all(exp.Placeholder):
        placeholder.set("this", "as_of")
    with pytest.raises(refresh.NotIncremental):
        refresh.edges(md.Model("m", "f", tree, ""), "t")


@pytest.mark.parametrize("values", [
    [5, 3, 3, None, 1, 9, 9, 9, 2],  # ties at a bucket edge, a missing value
    [7],  # one value: score 1
    [None, None],  # nobody has a value
    [1.5, 1.25, 1.5, 0.0, 100.0, 3.75],
    list(range(40)) + [None] * 3,
])
def test_rescoring_a_quantile_gives_the_scores_a_rank_window_gives(values):
    """The score from counted values (``rescore``, and the build's join of the values'
    scores) equals SPEC 1.5's rank formula, whatever score a row had before."""
    from segments.refresh.traits import rescore

    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id TEXT, x DOUBLE, score BIGINT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(f"u{i}", v, (i * 7) % 6 or None) for i, v in enumerate(values)])
    expected = dict(con.execute(  # SPEC 1.5, written out: users below / (users with a value - 1)
        "SELECT user_id, CASE WHEN x IS NOT NULL THEN LEAST(5, 1 + COALESCE(FLOOR("
        "(RANK() OVER (ORDER BY x) - 1) * 5 / NULLIF(COUNT(x) OVER () - 1, 0)), 0)) END FROM t").fetchall())
    scores = md.value_scores(exp.to_table("t"), "x", 5).sql("duckdb")
    built = con.execute(f"SELECT t.user_id, s.score FROM t LEFT JOIN ({scores}) AS s ON s.v = t.x").fetchall()
    assert dict(built) == expected
    quantile = md.Quantile("score", "x", 5)
    update = exp.update("t", {"score": exp.column("score", "r")}, from_=exp.From(this=exp.Subquery(
        this=rescore(exp.to_table("t"), quantile), alias=exp.TableAlias(this=exp.to_identifier("r")))),
        where=exp.column("user_id", "r").eq(exp.column("user_id", "t")))
    con.execute(update.sql("duckdb"))
    assert dict(con.execute("SELECT user_id, score FROM t").fetchall()) == expected
    assert not con.execute(rescore(exp.to_table("t"), quantile).sql("duckdb")).fetchall()  # nothing left to move


def test_sums_move_exactly_and_a_sum_too_large_for_its_double_is_read_again(built, specs, tmp_path):
    """Sums are decimals moved by the change; past 2**32 the old DOUBLE cannot be read
    back exactly, and the user's events are summed again. Each step equals a full build."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(built, warehouse)
    con = duckdb.connect(str(warehouse), read_only=True)
    last = con.execute(f"SELECT as_of FROM main_segments_build.{refresh.STATE}").fetchone()[0]
    buyer = con.execute(  # no purchase yet: the sums below are all the user's
        "SELECT min(user_id) FROM raw.users WHERE created_at < ? AND user_id NOT IN "
        "(SELECT user_id FROM raw.events WHERE event_name = 'purchase')", [last]).fetchone()[0]
    columns = [c[0] for c in con.execute("DESCRIBE raw.events").fetchall()]
    con.close()
    # the last round starts from 3e15 + 0.67, whose DOUBLE (steps of 0.5) reads back as
    # 3e15 + 0.5: plus 0.2 that would give 3e15 + 0.5 again, where the sum is 3e15 + 1
    rounds = [[0.1, 0.2, 0.3], [3e15, 0.07], [0.2]]
    next_id = 10**12  # beyond the demo's event ids
    for step, amounts in enumerate(rounds, start=1):
        for i, amount in enumerate(amounts):
            next_id += 1
            row = {c: None for c in columns} | {"event_id": next_id, "user_id": buyer, "event_name": "purchase",
                                                 "occurred_at": last + dt.timedelta(hours=step - 1, minutes=i + 1), "amount": amount}
            execute(warehouse, f"INSERT INTO raw.events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    *[row[c] for c in columns])
        as_of = last + dt.timedelta(hours=step)
        assert pipeline.build(specs, warehouse, as_of).refreshed is not None
        assert published(warehouse) == full_build_of(warehouse, specs, as_of, tmp_path), f"round {step}"
