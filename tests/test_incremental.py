"""Incremental builds: extending the daily rollup gives the membership a full build gives.

One warehouse of generated data is built the way a schedule would: a full build, then
refreshes as new events arrive and as_of moves on (at instants that fall mid-day, so
window edges cut days in two). After each refresh the same warehouse is built again
with ``full_refresh`` in a copy, and membership, traits and measures must be identical.
The rollup is rebuilt whole, and says why, when extending it would be wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest

from segments import demo_data, paths, pipeline
from segments.compiler import models as md

ANCHOR = dt.datetime(2026, 3, 1)
START = ANCHOR - dt.timedelta(days=3, hours=-7, minutes=-30)  # 2026-02-26 07:30
BUILD_SCHEMA = "main_segments_build"


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("specs") / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    return target


@pytest.fixture(autouse=True)
def work_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))


@pytest.fixture(scope="module")
def data() -> demo_data.DemoData:
    return demo_data.generate(users=1500, seed=11, anchor=ANCHOR)


def _write(data: demo_data.DemoData, warehouse: Path, until: dt.datetime) -> None:
    con = duckdb.connect(str(warehouse))
    early = dataclasses.replace(data, events=data.events[data.events["occurred_at"] <= until])
    demo_data.write_duckdb(early, con)
    con.close()


def _append(data: demo_data.DemoData, warehouse: Path, after: dt.datetime, until: dt.datetime) -> int:
    new = data.events[(data.events["occurred_at"] > after) & (data.events["occurred_at"] <= until)]
    con = duckdb.connect(str(warehouse))
    con.register("new_events", new)
    con.execute("INSERT INTO raw.events SELECT * FROM new_events ORDER BY occurred_at")
    con.close()
    return len(new)


def _snapshot(warehouse: Path) -> dict[str, set[tuple]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            "membership": set(con.execute("SELECT segment_name, user_id, is_holdout FROM main.segment_membership").fetchall()),
            "traits": set(con.execute("SELECT * FROM main.user_traits").fetchall()),
            "measures": set(con.execute(f"SELECT * FROM {BUILD_SCHEMA}.{md.MEASURES}").fetchall()),
            "rollup": set(con.execute(f"SELECT * FROM {BUILD_SCHEMA}.{md.ROLLUP}").fetchall()),
        }
    finally:
        con.close()


def _full_build_of_copy(warehouse: Path, as_of: dt.datetime, specs: Path) -> dict[str, set[tuple]]:
    copy = warehouse.with_name(f"full-{as_of:%Y%m%d%H%M}.duckdb")
    shutil.copy(warehouse, copy)
    result = pipeline.build(specs, copy, as_of, full_refresh=True)
    assert result.full_refresh
    return _snapshot(copy)


def test_refreshes_equal_full_builds(tmp_path, specs, data):
    warehouse = tmp_path / "warehouse.duckdb"
    _write(data, warehouse, START)
    first = pipeline.build(specs, warehouse, START)
    assert first.full_refresh is None  # no rollup yet: dbt creates it whole

    as_of = START
    # a day of new events; then half a day; then a quiet day (only the windows move)
    for step, new_until in ((dt.timedelta(days=1), True), (dt.timedelta(hours=13, minutes=5), True), (dt.timedelta(days=1), False)):
        later = as_of + step
        appended = _append(data, warehouse, as_of, later) if new_until else 0
        assert appended > 0 or not new_until
        refreshed = pipeline.build(specs, warehouse, later)
        assert refreshed.full_refresh is None, refreshed.full_refresh
        incremental = _snapshot(warehouse)
        full = _full_build_of_copy(warehouse, later, specs)
        for what in ("membership", "traits", "measures", "rollup"):
            assert incremental[what] == full[what], f"{what} differ at {later} after an incremental refresh"
        assert incremental["membership"], "no members: the comparison would prove nothing"
        as_of = later


def test_the_rollup_is_rebuilt_when_extending_it_would_be_wrong(tmp_path, specs, data):
    warehouse = tmp_path / "warehouse.duckdb"
    _write(data, warehouse, START)
    pipeline.build(specs, warehouse, START)

    # an event arriving late, for a day the rollup already holds
    con = duckdb.connect(str(warehouse))
    con.execute(
        "INSERT INTO raw.events SELECT event_id + 10000000, user_id, event_name, occurred_at - INTERVAL 2 DAY, "
        "path, referrer, channel, amount, utm_campaign FROM raw.events WHERE event_name = 'purchase' LIMIT 1"
    )
    con.close()
    late = pipeline.build(specs, warehouse, START + dt.timedelta(hours=1))
    assert late.full_refresh and "late or deleted events" in late.full_refresh
    # the full refresh took the late event in: the next build extends again
    assert pipeline.build(specs, warehouse, START + dt.timedelta(hours=2)).full_refresh is None

    # a spec with a new measure changes the rollup's columns
    (specs / "recent_demo_requests.yml").write_text(
        "name: recent_demo_requests\nwhere: {event: demo_request, within: 3d, where: {property: channel, is: web}}\n"
    )
    try:
        changed = pipeline.build(specs, warehouse, START + dt.timedelta(hours=3))
    finally:
        (specs / "recent_demo_requests.yml").unlink()
    assert changed.full_refresh and "measures changed" in changed.full_refresh


def test_full_refresh_on_request(tmp_path, specs, data):
    warehouse = tmp_path / "warehouse.duckdb"
    _write(data, warehouse, START)
    pipeline.build(specs, warehouse, START)
    assert pipeline.build(specs, warehouse, START, full_refresh=True).full_refresh == "asked for (--full-refresh)"
