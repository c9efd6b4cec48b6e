"""No silent mass removal at publish (issue 18, item 5): an empty specs folder, or a
build that would drop or empty most published segments, is refused unless forced."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from segments import engines, publish_guard
from segments.cli import main
from sync_fixtures import CATALOG, users, write_users

AS_OF = "2026-01-15T00:00:00"
SEGMENTS = ("alpha", "beta", "gamma")


def _specs(root: Path, rule: str, names=SEGMENTS) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for old in specs.glob("*.yml"):
        old.unlink()
    (specs / "_catalog.yml").write_text(CATALOG)
    for name in names:
        (specs / f"{name}.yml").write_text(f"name: {name}\nwhere: {rule}\n")
    return specs


def _published(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT c.segment_name, COUNT(m.user_id) FROM main.segment_catalog c "
            "LEFT JOIN main.segment_membership m USING (segment_name) GROUP BY 1"
        ).fetchall()
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND view_name LIKE 'seg_%'").fetchall()}
    assert views == {f"seg_{name}" for name, _ in rows}
    return dict(rows)


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGMENTS_WORK_DIR", str(tmp_path / "work"))
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, users(10))
    specs = _specs(tmp_path, "{attribute: email, is_set: true}")
    assert main(["build", "--specs", str(specs), "--warehouse", str(warehouse), "--as-of", AS_OF]) == 0
    assert _published(warehouse) == {name: 10 for name in SEGMENTS}
    return tmp_path, warehouse


def test_an_empty_specs_folder_is_refused_unless_forced(built, capsys):
    root, warehouse = built
    specs = _specs(root, "", names=())
    argv = ["build", "--specs", str(specs), "--warehouse", str(warehouse), "--as-of", AS_OF]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "holds no segments" in err and "--force" in err and "Traceback" not in err
    assert _published(warehouse) == {name: 10 for name in SEGMENTS}
    assert main([*argv, "--force"]) == 0
    assert _published(warehouse) == {}


def test_emptying_most_segments_is_refused_and_changes_nothing_until_forced(built, capsys):
    root, warehouse = built
    specs = _specs(root, "{attribute: email, is: nobody@example.com}")
    argv = ["build", "--specs", str(specs), "--warehouse", str(warehouse), "--as-of", AS_OF]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "would empty 3 of the 3 published segments (alpha, beta, gamma)" in err and "--force" in err
    assert _published(warehouse) == {name: 10 for name in SEGMENTS}
    assert main([*argv, "--force"]) == 0
    assert _published(warehouse) == {name: 0 for name in SEGMENTS}


def _session_with(tmp_path: Path, before: dict[str, int], after: dict[str, int]):
    engine = engines.get("duckdb", tmp_path / "guard.duckdb")
    with duckdb.connect(str(tmp_path / "guard.duckdb")) as con:
        for schema, sizes in (("main", before), (engine.build_schema, after)):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            con.execute(f"CREATE TABLE {schema}.segment_membership (segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN DEFAULT false)")
            for name, size in ((n, k) for n, k in sizes.items() if k):
                con.executemany(f"INSERT INTO {schema}.segment_membership (segment_name, user_id) VALUES (?, ?)", [[name, str(i)] for i in range(size)])
    return engine


@pytest.mark.parametrize(
    ("before", "after", "segments", "refused"),
    [
        ({"a": 5, "b": 5, "c": 5}, {"a": 5}, ["a"], "would drop 2 of the 3"),
        ({"a": 5, "b": 5, "c": 5}, {"a": 5, "b": 5}, ["a", "b"], None),  # one of three dropped: a normal edit
        ({"a": 5, "b": 5, "c": 5}, {"a": 5}, ["a", "b"], "would drop 1 and empty 1 of the 3"),
        ({"a": 0, "b": 5}, {}, ["a", "b"], None),  # a was empty already: only b emptied, half
        ({"a": 5}, {"z": 5}, ["z"], "would drop 1 of the 1"),
        ({}, {"a": 5}, ["a"], None),  # nothing published yet
    ],
)
def test_refusal_counts_dropped_and_emptied_segments(tmp_path, before, after, segments, refused):
    engine = _session_with(tmp_path, before, after)
    with engine.connect(read_only=True) as session:
        got = publish_guard.refusal(session, list(before), segments)
    assert (got is None) if refused is None else (refused in got), got
