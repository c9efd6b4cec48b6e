"""The ``segments`` command line, end to end (SPEC section 3).

Fast commands run in process through ``main(argv)``; builds run dbt for real on a
small generated warehouse, once per module.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from segments import demo_data, paths
from segments.cli import main
from segments.compiler import writer

AS_OF = "2026-01-15T00:00:00Z"
ANCHOR = dt.datetime(2026, 1, 15)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def work_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
    monkeypatch.delenv(paths.WAREHOUSE_ENV, raising=False)


@pytest.fixture(scope="module")
def specs_copy(tmp_path_factory) -> Path:
    """The example specs, copied: builds from here never touch the committed models."""
    target = tmp_path_factory.mktemp("specs") / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    return target


@pytest.fixture(scope="module")
def built(tmp_path_factory, specs_copy):
    """A warehouse with demo data, built once at AS_OF."""
    warehouse = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    data = demo_data.generate(users=400, seed=3, anchor=ANCHOR)
    con = duckdb.connect(str(warehouse))
    demo_data.write_duckdb(data, con)
    con.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("buildwork")))
        assert main(["build", "--specs", str(specs_copy), "--warehouse", str(warehouse), "--as-of", AS_OF]) == 0
    return warehouse


def committed_models() -> dict[Path, bytes]:
    models = paths.DBT_PROJECT_DIR / "models"
    return {p: p.read_bytes() for p in models.rglob("*") if p.is_file()}


def test_committed_models_are_fresh(capsys):
    code, out, err = run(capsys, "compile", "--check")
    assert code == 0, out + err


def test_validate_reports_every_error_with_location(capsys, tmp_path):
    specs = tmp_path / "specs"
    shutil.copytree(paths.SPECS_DIR, specs)
    (specs / "welcome_journey.yml").write_text("name: welcome_journey\nwhere: {attribute: citty, is: Pune}\n")
    (specs / "broken_window.yml").write_text("name: broken_window\nwhere: {event: signup, within: 7days}\n")
    code, out, err = run(capsys, "validate", "--specs", str(specs))
    assert code == 1
    assert "Traceback" not in out + err
    assert f"{specs / 'welcome_journey.yml'}:2:" in err and "did you mean 'city'" in err
    assert f"{specs / 'broken_window.yml'}:2:" in err
    assert "2 error(s)" in err


def test_compile_check_fails_on_stale_models_with_a_diff(capsys, specs_copy):
    assert run(capsys, "compile", "--specs", str(specs_copy))[0] == 0
    assert run(capsys, "compile", "--specs", str(specs_copy), "--check")[0] == 0
    spec = specs_copy / "regional_offer.yml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("Nagpur", "Nashik"))
        code, out, err = run(capsys, "compile", "--specs", str(specs_copy), "--check")
        assert code == 1
        # a unified diff of each stale file, one clause per line, then the list of them:
        # every rule is a column of the flags' one pass, named after its segment
        assert "--- a/models/intermediate/int_segment_flags.sql" in out
        old, new = (f"    COALESCE(city IN ('Mumbai', 'Pune', '{c}'), FALSE) AS seg_regional_offer,\n" for c in ("Nagpur", "Nashik"))
        assert f"-{old}+{new}" in out
        assert "1 generated file(s)" in err and "stale" in err
        assert "changed  models/intermediate/int_segment_flags.sql" in err
    finally:
        spec.write_text(original)


def test_compile_is_deterministic(capsys, specs_copy):
    project_dir = paths.dbt_project_dir(specs_copy)
    run(capsys, "compile", "--specs", str(specs_copy))
    first = {p: p.read_bytes() for p in (project_dir / "models").rglob("*") if p.is_file()}
    shutil.rmtree(project_dir / "models")
    run(capsys, "compile", "--specs", str(specs_copy))
    second = {p: p.read_bytes() for p in (project_dir / "models").rglob("*") if p.is_file()}
    assert first == second and first


def test_build_from_other_specs_never_touches_committed_models(built):
    before = committed_models()
    # `built` compiled from a copy of the specs: the repository's files are as committed
    assert committed_models() == before
    assert all(b.startswith(b"-- Generated") or b.startswith(b"# Generated") for b in before.values())


def test_build_publishes_membership_and_views(built):
    con = duckdb.connect(str(built), read_only=True)
    names = {r[0] for r in con.execute("SELECT segment_name FROM segment_catalog").fetchall()}
    assert {"abandoned_cart", "engagement__high", "rfm__champions", "vip_upload"} <= names
    assert "engagement" not in names  # a tiered spec's own name is not a segment
    as_of = con.execute("SELECT DISTINCT as_of FROM segment_membership").fetchall()
    assert as_of == [(dt.datetime(2026, 1, 15),)]
    view = con.execute("SELECT COUNT(*) FROM seg_regional_offer").fetchone()[0]
    table = con.execute("SELECT COUNT(*) FROM segment_membership WHERE segment_name = 'regional_offer'").fetchone()[0]
    assert view == table > 0
    tiers = con.execute(
        "SELECT user_id, COUNT(*) FROM segment_membership WHERE segment_name LIKE 'engagement__%' GROUP BY 1 HAVING COUNT(*) > 1"
    ).fetchall()
    assert tiers == []  # tiers are mutually exclusive
    con.close()


def test_preview_matches_the_build(capsys, built, specs_copy):
    code, out, err = run(capsys, "preview", "abandoned_cart", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "3")
    assert code == 0, err
    con = duckdb.connect(str(built), read_only=True)
    size, holdout = con.execute(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE is_holdout) FROM segment_membership WHERE segment_name = 'abandoned_cart'"
    ).fetchone()
    first = [r[0] for r in con.execute("SELECT user_id FROM seg_abandoned_cart ORDER BY user_id LIMIT 3").fetchall()]
    con.close()
    assert f"abandoned_cart: {size:,} members ({holdout:,} in holdout)" in out
    assert [line.strip() for line in out.splitlines()[1:]] == first


def test_preview_prints_member_ids_as_they_are(capsys, built, specs_copy, tmp_path):
    """An id such as ``team:ok:42`` is printed as it is: rich would print an emoji code."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(built, warehouse)
    con = duckdb.connect(str(warehouse))
    member = con.execute("SELECT min(user_id) FROM seg_abandoned_cart").fetchone()[0]
    for table in ("raw.users", "raw.events"):
        con.execute(f"UPDATE {table} SET user_id = 'team:ok:42' WHERE user_id = ?", [member])
    con.close()
    code, out, err = run(capsys, "preview", "abandoned_cart", "--specs", str(specs_copy), "--warehouse", str(warehouse), "--as-of", AS_OF, "--limit", "1000")
    assert code == 0, err
    assert "team:ok:42" in out.split()


def _example_segments() -> list[str]:
    from segments.spec.parse import load_project

    return list(load_project(paths.SPECS_DIR).segment_names())


@pytest.mark.parametrize("segment", _example_segments())
def test_preview_of_every_example_segment_matches_the_build(capsys, built, specs_copy, segment):
    """Preview runs a query of its own (only the segment's closure; its scans read only
    the events its windows hold): the same size, holdout and first members as the build."""
    code, out, err = run(capsys, "preview", segment, "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "3")
    assert code == 0, err
    con = duckdb.connect(str(built), read_only=True)
    size, holdout = con.execute(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE is_holdout) FROM segment_membership WHERE segment_name = ?", [segment]
    ).fetchone()
    first = [r[0] for r in con.execute(
        "SELECT user_id FROM segment_membership WHERE segment_name = ? ORDER BY user_id LIMIT 3", [segment]
    ).fetchall()]
    con.close()
    lines = out.splitlines()
    assert lines[0] == f"{segment}: {size:,} members ({holdout:,} in holdout)"
    assert [line.strip() for line in lines[1:] if not line.startswith("  uploaded list:")] == first


def test_as_of_takes_the_relative_forms_of_specs(capsys, built, specs_copy):
    # measured back from the wall clock, a relative --as-of lands (a few seconds
    # late at most) on the demo data's anchor: the same members as the absolute one
    seconds = int((dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - ANCHOR).total_seconds())
    exact = run(capsys, "preview", "abandoned_cart", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF)
    relative = run(capsys, "preview", "abandoned_cart", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", f"now - {seconds}s")
    assert exact[0] == 0 and relative[0] == 0, exact[2] + relative[2]
    assert relative[1] == exact[1] and " 0 members" not in exact[1]
    future = run(capsys, "preview", "abandoned_cart", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", "now + 3650d")
    assert future[0] == 0 and "abandoned_cart: 0 members" in future[1]


def test_preview_of_a_tiered_spec_shows_each_tier(capsys, built, specs_copy):
    code, out, err = run(capsys, "preview", "engagement", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "2")
    assert code == 0, err
    con = duckdb.connect(str(built), read_only=True)
    sizes = dict(con.execute(
        "SELECT segment_name, COUNT(*) FROM segment_membership WHERE segment_name LIKE 'engagement__%' GROUP BY 1"
    ).fetchall())
    con.close()
    headers = [line for line in out.splitlines() if not line.startswith("  ")]
    tiers = ["engagement__high", "engagement__moderate", "engagement__low", "engagement__inactive"]
    assert headers == [f"{tier}: {sizes.get(tier, 0):,} members (0 in holdout)" for tier in tiers]
    assert len([line for line in out.splitlines() if line.startswith("  ")]) == sum(min(2, n) for n in sizes.values())


def test_preview_sql_is_the_segments_own_rule(capsys, built, specs_copy):
    common = ("--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "1")
    code, out, err = run(capsys, "preview", "win_back", "--sql", *common)
    assert code == 0, err
    assert "WITH" not in out and "FROM int_segment_base" in out and "stg_users" not in out
    assert "-- seg_vip_upload: the flags of the segments it reads (int_segment_flags)" in out
    assert "CAST('2026-01-15 00:00:00' AS TIMESTAMP) - INTERVAL 90 DAY" in out  # now is the as_of
    code, full, err = run(capsys, "preview", "win_back", "--sql-full", *common)
    assert code == 0, err
    assert full.startswith("WITH stg_users AS") and "int_segment_flags AS" in full
    assert full.splitlines()[-2:] == out.splitlines()[-2:]  # the same members either way


def test_preview_columns_beside_the_ids(capsys, built, specs_copy):
    code, out, err = run(capsys, "preview", "regional_offer", "--columns", "city, plan", "--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["user_id", "city", "plan"]
    rows = [line.split() for line in lines[2:]]  # tab-separated; the console expands tabs
    con = duckdb.connect(str(built), read_only=True)
    expected = con.execute(
        "SELECT user_id, city, plan FROM raw.users WHERE user_id IN (SELECT user_id FROM seg_regional_offer) ORDER BY user_id LIMIT 3"
    ).fetchall()
    con.close()
    assert [tuple(row) for row in rows] == [tuple(r) for r in expected]
    assert len(expected) == 3 and all(r[1] in ("Mumbai", "Pune", "Nagpur") for r in expected)


def test_preview_pii_columns_need_show_pii(capsys, built, specs_copy):
    common = ("--specs", str(specs_copy), "--warehouse", str(built), "--as-of", AS_OF, "--limit", "1")
    code, out, err = run(capsys, "preview", "regional_offer", "--columns", "city,email", *common)
    assert code == 1 and out == "" and "email is PII" in err and "--show-pii" in err
    code, out, err = run(capsys, "preview", "regional_offer", "--columns", "email", "--show-pii", *common)
    assert code == 0, err
    assert "@" in out.splitlines()[2]
    # --show-pii alone shows nothing more: PII only when named
    code, out, err = run(capsys, "preview", "regional_offer", "--show-pii", *common)
    assert code == 0 and "@" not in out


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ("cty", "--columns: unknown users attribute 'cty'; the attributes of _catalog.yml are: email, phone,"),
        ("city,user_id", "unknown users attribute 'user_id'"),
        (" , ", "--columns: name at least one users attribute"),
    ],
)
def test_preview_bad_columns_exit_1(capsys, specs_copy, columns, message):
    code, out, err = run(capsys, "preview", "regional_offer", "--columns", columns, "--specs", str(specs_copy))
    assert code == 1 and message in err and out == "" and "Traceback" not in err


def test_preview_unknown_segment_suggests(capsys, built, specs_copy):
    code, out, err = run(capsys, "preview", "abandoned_carts", "--specs", str(specs_copy), "--warehouse", str(built))
    assert code == 1 and "did you mean 'abandoned_cart'" in err and "Traceback" not in err


def test_members_prints_csv(capsys, built):
    code, out, err = run(capsys, "members", "--segment", "regional_offer", "--warehouse", str(built))
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["segment_name", "user_id", "is_holdout"]
    con = duckdb.connect(str(built), read_only=True)
    expected = [list(r) for r in con.execute(
        "SELECT segment_name, user_id, CASE WHEN is_holdout THEN 'true' ELSE 'false' END "
        "FROM segment_membership WHERE segment_name = 'regional_offer' ORDER BY user_id"
    ).fetchall()]
    con.close()
    assert rows[1:] == expected and expected


@pytest.mark.parametrize("specs", [False, True], ids=["published", "specs"])
def test_members_of_unknown_segment_fails_without_a_header(capsys, built, specs_copy, specs):
    argv = ["members", "--segment", "nope", "--warehouse", str(built)]
    code, out, err = run(capsys, *argv, *(["--specs", str(specs_copy)] if specs else []))
    assert code == 1 and "nope" in err and out == ""


def test_members_of_a_tiered_spec_are_its_tiers(capsys, built, specs_copy):
    code, out, err = run(capsys, "members", "--segment", "engagement", "--specs", str(specs_copy), "--warehouse", str(built))
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))[1:]
    con = duckdb.connect(str(built), read_only=True)
    expected = con.execute(
        "SELECT COUNT(*) FROM segment_membership WHERE segment_name LIKE 'engagement\\_\\_%' ESCAPE '\\'"
    ).fetchone()[0]
    con.close()
    assert {r[0] for r in rows} == {"engagement__high", "engagement__moderate", "engagement__low", "engagement__inactive"}
    assert len(rows) == expected


def test_list_shows_owner_tags_size_and_build_time(capsys, built, specs_copy):
    code, out, err = run(capsys, "list", "--specs", str(specs_copy), "--warehouse", str(built))
    assert code == 0, err
    con = duckdb.connect(str(built), read_only=True)
    size = con.execute("SELECT COUNT(*) FROM segment_membership WHERE segment_name = 'regional_offer'").fetchone()[0]
    con.close()
    line = next(line for line in out.splitlines() if line.startswith("regional_offer "))
    assert line.split()[:3] == ["regional_offer", "growth", "regional,maharashtra,offer"]
    assert f" {size:,} " in line and line.endswith("UTC")
    assert "engagement__inactive" in out


def test_failed_build_leaves_published_segments_unchanged(capsys, tmp_path, built, specs_copy):
    warehouse = tmp_path / "copy.duckdb"
    shutil.copy(built, warehouse)
    con = duckdb.connect(str(warehouse))
    before = con.execute("SELECT COUNT(*) FROM segment_membership").fetchone()[0]
    con.execute("ALTER TABLE raw.events RENAME COLUMN occurred_at TO happened_at")
    con.close()
    code, out, err = run(capsys, "build", "--specs", str(specs_copy), "--warehouse", str(warehouse), "--as-of", "2026-01-16")
    assert code == 1
    assert "raw.events has no column 'occurred_at'" in err and "Traceback" not in err
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT COUNT(*) FROM segment_membership").fetchone()[0] == before
    con.close()


def test_load_casts_to_catalog_types(capsys, tmp_path, specs_copy):
    data = demo_data.generate(users=50, seed=1, anchor=ANCHOR)
    users_file, events_file = demo_data.write_files(data, tmp_path, fmt="csv")
    warehouse = tmp_path / "loaded.duckdb"
    code, out, err = run(capsys, "load", "--users", str(users_file), "--events", str(events_file), "--specs", str(specs_copy), "--warehouse", str(warehouse))
    assert code == 0, err
    con = duckdb.connect(str(warehouse), read_only=True)
    types = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'users'"
    ).fetchall())
    count = con.execute("SELECT COUNT(*) FROM raw.events").fetchone()[0]
    con.close()
    assert types["signup_at"] == "TIMESTAMP" and types["is_vip"] == "BOOLEAN" and types["lifetime_value"] == "DOUBLE"
    assert types["phone"] == "VARCHAR"
    assert count == len(data.events)


def test_load_honours_offsets_and_is_all_or_nothing(capsys, tmp_path, specs_copy):
    users = tmp_path / "users.csv"
    users.write_text(
        "user_id,created_at,signup_at,lifetime_value\n"
        "u1,2026-01-01 12:00:00+02:00,2026-01-01T10:00:00Z,10.5\n"
    )
    events = tmp_path / "events.csv"
    events.write_text("user_id,event_name,occurred_at,amount\nu1,purchase,2026-01-02 00:00:00,abc\n")
    narrow = tmp_path / "specs"
    narrow.mkdir()
    (narrow / "_catalog.yml").write_text(
        "users:\n  table: raw.users\n  key: user_id\n  created_at: created_at\n  attributes:\n"
        "    signup_at: {type: timestamp}\n    lifetime_value: {type: number}\n"
        "events:\n  table: raw.events\n  user_key: user_id\n  name: event_name\n  timestamp: occurred_at\n"
        "  properties:\n    amount: {type: number}\n"
    )
    warehouse = tmp_path / "w.duckdb"
    code, _, err = run(capsys, "load", "--users", str(users), "--events", str(events), "--specs", str(narrow), "--warehouse", str(warehouse))
    assert code == 1 and "nothing was written" in err
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'raw'").fetchone()[0] == 0
    con.close()
    events.write_text("user_id,event_name,occurred_at,amount\nu1,purchase,2026-01-02 00:00:00,3\n")
    assert run(capsys, "load", "--users", str(users), "--events", str(events), "--specs", str(narrow), "--warehouse", str(warehouse))[0] == 0
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT created_at FROM raw.users").fetchone()[0] == dt.datetime(2026, 1, 1, 10)
    con.close()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["build", "--as-of", "yesterday-ish"], "--as-of"),
        (["build", "--as-of", "now - 7days"], "--as-of: invalid time 'now - 7days': the offset after 'now -' must be"),
        (["preview", "x", "--as-of", "now -"], "--as-of: invalid time"),
        (["review", "--base", "HEAD", "--as-of", "2026-02-30"], "--as-of: invalid time '2026-02-30'"),
        (["build", "--target", "oracle"], "--target 'oracle'"),
        (["compile", "--dialect", "cobol"], "--dialect 'cobol'"),
        (["validate", "--specs", "/nonexistent/specs"], "no such specs directory"),
        (["members", "--warehouse", "/nonexistent/w.duckdb"], "no warehouse"),
        (["load", "--users", "/nonexistent/u.csv"], "no such file"),
    ],
)
def test_bad_input_exits_1_without_traceback(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in out + err


def test_a_build_never_creates_a_warehouse(capsys, tmp_path):
    """A build opens the warehouse read-write from its first step: it still refuses a
    file that does not exist, as a read-only check of the inputs did, and creates none."""
    missing = tmp_path / "missing.duckdb"
    code, _, err = run(capsys, "build", "--warehouse", str(missing))
    assert code == 1 and f"no warehouse at {missing}" in err and "Traceback" not in err
    assert not missing.exists()


@pytest.mark.parametrize("dialect", ["postgres", "spark", "snowflake", "bigquery", "trino"])
def test_compile_for_a_dialect_writes_its_own_models(capsys, specs_copy, dialect):
    code, out, err = run(capsys, "compile", "--specs", str(specs_copy), "--dialect", dialect)
    assert code == 0, err
    project_dir = paths.dbt_project_dir(specs_copy, dialect, committed=False)
    assert f"compiled for {dialect}" in out and project_dir != paths.dbt_project_dir(specs_copy)
    first = (project_dir / "models" / "segments" / "seg_abandoned_cart.sql").read_text().splitlines()[0]
    assert first.endswith(f"run `segments compile --dialect {dialect}`.")
    assert writer.dialect_of(project_dir) == dialect
    assert run(capsys, "compile", "--specs", str(specs_copy), "--dialect", dialect, "--check")[0] == 0


def test_other_targets_take_no_warehouse_file(capsys, tmp_path):
    code, _, err = run(capsys, "members", "--target", "postgres", "--warehouse", str(tmp_path / "w.duckdb"))
    assert code == 1 and "--warehouse names a DuckDB file" in err and "Traceback" not in err


def test_unreachable_postgres_is_a_clear_error(capsys, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(port))
    monkeypatch.delenv("PGUSER", raising=False)
    monkeypatch.delenv("PGDATABASE", raising=False)
    code, _, err = run(capsys, "members", "--target", "postgres")
    assert code == 1 and f"cannot connect to PostgreSQL postgres@127.0.0.1:{port}/postgres" in err
    assert "Traceback" not in err


def test_demo_runs_on_a_fresh_warehouse(capsys, tmp_path):
    warehouse = tmp_path / "demo.duckdb"
    code, out, err = run(capsys, "demo", "--users", "300", "--warehouse", str(warehouse))
    assert code == 0, err
    assert "abandoned_cart" in out and "built 30 segments" in out


#: What a command of the core never imports at start: pandas (a third of a second),
#: dbt, the sync engine and its HTTP; the plugins' commands and click (typer has its
#: own copy); jinja (a profile's plain env_var() needs none), rich's progress bars,
#: phonenumbers (read by the commands that read phones)
NOT_AT_START = ("pandas", "dbt", "requests", "sync", "click", "jinja2", "rich.progress", "phonenumbers")


def test_the_command_line_starts_without_what_few_commands_need():
    check = f"import sys, segments.cli; print(sorted(m for m in {NOT_AT_START!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_preview_runs_without_what_it_does_not_need(built, specs_copy):
    """``segments preview`` of a segment without an uploaded list, as a user runs it:
    none of :data:`NOT_AT_START` gets imported on the way (but phonenumbers: the
    example catalog names a default_country, which it checks)."""
    unused = tuple(m for m in NOT_AT_START if m != "phonenumbers")
    check = (
        "import sys; from segments.cli import main; "
        f"code = main(['preview', 'pricing_page_visitors', '--specs', {str(specs_copy)!r}, '--warehouse', {str(built)!r}, '--as-of', {AS_OF!r}]); "
        f"print(code, sorted(m for m in {unused!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=paths.ROOT)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout + result.stderr
