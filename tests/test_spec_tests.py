"""``segments test``: segment tests in the specs, run on an in-memory DuckDB.

The examples' tests pass; a wrong expectation fails with exit 1, a diff of who is
missing and who is unexpected, and the explanation of each; a broken test is a
``file:line:col`` error of ``segments test`` and of ``segments validate``. Expected
members here are worked out by hand from the rows, never from the compiler. What the
tests promise holds on PostgreSQL too: the same rows there give the same members.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import pytest

import duckdb
from sync_fixtures import postgres_database

from segments import engines, paths, spec_tests, uploads
from segments.cli import main
from segments.compiler import models as md
from segments.spec.parse import load_project
from segments.spec_tests import read_tests, run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def specs(tmp_path) -> Path:
    target = tmp_path / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, target)
    return target


def write(specs: Path, name: str, text: str) -> Path:
    path = specs / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_examples_tests_pass_in_seconds(capsys):
    started = time.monotonic()
    code, out, err = cli(capsys, "test")
    assert code == 0, err
    assert "PASS abandoned_cart:" in out and "PASS engagement:" in out
    assert out.strip().endswith("segment test(s) passed")
    assert time.monotonic() - started < 20


REGIONAL = """\
    name: regional_offer
    where:
      all:
        - {attribute: city, in: [Mumbai, Pune]}
        - {attribute: lifetime_value, gte: 100}
        - {attribute: whatsapp_opt_in, is: true}
        - {attribute: signup_at, before: now - 7d}
    tests:
      - name: typed attributes, created_at and unknown users
        as_of: 2026-01-15T06:00:00Z
        users:
          - {user_id: a, city: Pune, lifetime_value: 100, whatsapp_opt_in: true, signup_at: 2026-01-01}
          - {user_id: b, city: Pune, lifetime_value: 99.5, whatsapp_opt_in: true, signup_at: 2026-01-01}
          - {user_id: c, city: Mumbai, lifetime_value: 500, whatsapp_opt_in: false, signup_at: 2026-01-01}
          - {user_id: d, city: Mumbai, lifetime_value: 500, whatsapp_opt_in: true, signup_at: now - 6d}
          - {user_id: e, city: Mumbai, lifetime_value: 500, whatsapp_opt_in: true, signup_at: 2026-01-01, created_at: now + 1s}
          - {user_id: f, city: Mumbai, lifetime_value: 500, whatsapp_opt_in: true, signup_at: 2026-01-01, created_at: now}
          - {user_id: g}
        expect: [a, f]
    """


def test_typed_attributes_and_created_at(capsys, specs):
    write(specs, "regional_offer.yml", REGIONAL)
    code, out, err = cli(capsys, "test", "regional_offer", "--specs", str(specs))
    assert code == 0, out + err
    assert out.splitlines() == ["PASS regional_offer: typed attributes, created_at and unknown users", "1 segment test(s) passed"]


def test_a_wrong_expectation_fails_with_a_diff_and_why(capsys, specs):
    write(specs, "regional_offer.yml", REGIONAL.replace("expect: [a, f]", "expect: [a, b]"))
    code, out, err = cli(capsys, "test", "--specs", str(specs))
    assert code == 1
    assert "1 of 4 segment test(s) failed" in err
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("FAIL regional_offer")))
    assert lines[start].endswith("regional_offer.yml:9:5)")
    assert lines[start + 1:start + 5] == [
        "  regional_offer: expected 2 member(s): a, b",
        "  - missing (expected, not a member): b",
        "  + unexpected (a member, not expected): f",
        "  why:",
    ]
    why = "\n".join(lines[start + 5:])
    assert "regional_offer: user b at 2026-01-15 06:00:00 UTC is out" in why
    assert "[n] lifetime_value at least 100: 99.5" in why
    assert "regional_offer: user f at 2026-01-15 06:00:00 UTC is in" in why


def test_a_tiered_specs_tests_beside_it(capsys, specs):
    tests = (specs / "engagement.tests.yml").read_text()
    (specs / "engagement.tests.yml").write_text(tests.replace("low: [old]", "low: [old, casual]"))
    code, out, _ = cli(capsys, "test", "engagement", "--specs", str(specs))
    assert code == 1
    assert "  engagement__low: expected 2 member(s): casual, old" in out
    assert "  - missing (expected, not a member): casual" in out
    assert "engagement__moderate" not in out.split("why:")[0]  # only the tiers that differ


def test_derived_segments_and_uploads_are_computed_from_the_test_rows(specs):
    write(specs, "win_back.yml", """\
        name: win_back
        where:
          all:
            - {event: purchase, last_occurred: {before: now - 90d}}
            - not: {segment: vip_upload}
        tests:
          - name: the VIP list is excluded
            as_of: 2026-01-15
            users:
              - {user_id: old_buyer, email: old@example.com}
              - {user_id: old_vip, email: ANITA.SHAH@EXAMPLE.COM}
              - {user_id: recent, email: r@example.com}
            events:
              - {user_id: old_buyer, event: purchase, at: 2025-06-01, amount: 20}
              - {user_id: old_vip, event: purchase, at: 2025-06-01, amount: 20}
              - {user_id: recent, event: purchase, at: now - 1d, amount: 20}
            expect: [old_buyer]
        """)
    vip = (specs / "uploads" / "vip_list.csv").read_text().splitlines()[1].split(",")[0]
    # the list holds user ids: the VIP's row carries one, with spaces the match trims
    text = (specs / "win_back.yml").read_text().replace("user_id: old_vip", f"user_id: '{vip.strip()}'")
    (specs / "win_back.yml").write_text(text)
    project = load_project(specs)
    [test] = read_tests(project, "win_back")
    outcome = run(project, test)
    assert outcome.ok, outcome.differences


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("    as_of: 2026-01-15\n    expect: [u1]\n", "5:5", "a segment test needs 'name'"),
        ("    name: t\n    as_of: now - 1d\n    expect: [u1]\n", "6:12", "as_of: must be a date or date-time"),
        ("    name: t\n    as_of: 2026-01-15\n    expect: {high: [u1]}\n", "7:13", "expect: probe has no tiers: list the expected user ids"),
        ("    name: t\n    as_of: 2026-01-15\n    users: [{user_id: u1, town: X}]\n    expect: []\n",
         "7:27", "unknown column 'town' in a test user; the catalog has: user_id, created_at, email"),
        ("    name: t\n    as_of: 2026-01-15\n    users: [{user_id: u1, lifetime_value: lots}]\n    expect: []\n",
         "7:43", "'lifetime_value' (number) must be a number, not 'lots'"),
        ("    name: t\n    as_of: 2026-01-15\n    events: [{user_id: u1, event: x}]\n    expect: []\n",
         "7:14", "a test event needs 'at'"),
        ("    name: t\n    as_of: 2026-01-15\n    events: [{user_id: u1, event: x, at: yesterday}]\n    expect: []\n",
         "7:42", "at: invalid time 'yesterday'"),
        ("    name: t\n    as_of: 2026-01-15\n    expected: [u1]\n", "7:5", "unknown key 'expected' in a segment test"),
    ],
)
def test_broken_tests_are_file_line_col_errors(capsys, specs, body, where, message):
    path = write(specs, "probe.yml", "name: probe\nwhere: {attribute: city, is: Pune}\ntests:\n  -\n" + body)
    for command in ("test", "validate"):
        code, _, err = cli(capsys, command, "--specs", str(specs))
        assert code == 1
        assert f"{path}:{where}: {message}" in err, err
        assert "Traceback" not in err


def test_unknown_name_suggests_the_closest(capsys):
    code, _, err = cli(capsys, "test", "abandoned_crt")
    assert code == 1 and "did you mean 'abandoned_cart'" in err


# ---- PostgreSQL: the same rows give the same members -----------------------------------

def _tests_of(specs: Path) -> list[tuple[str, spec_tests.SegmentTest]]:
    project = load_project(specs)
    return [(f"{t.spec}: {t.name}", t) for t in read_tests(project)]


def test_the_examples_tests_and_a_hand_worked_one_hold_on_postgres(tmp_path, postgres_env, monkeypatch):
    """Every example test, and REGIONAL (worked out by hand above), loaded into a
    PostgreSQL database as `segments load` and `segments upload` bring rows
    (Session.import_tables), its members computed there by the query `segments test`
    runs on DuckDB, rendered for PostgreSQL."""
    specs = tmp_path / "segment_specs"
    shutil.copytree(paths.SPECS_DIR, specs)
    write(specs, "regional_offer.yml", REGIONAL)
    project = load_project(specs)
    cases = _tests_of(specs)
    assert len(cases) >= 4 and any(t.spec == "regional_offer" for _, t in cases)
    with postgres_database(postgres_env, monkeypatch):
        engine = engines.get("postgres")
        with engine.connect() as session:
            for label, test in cases:
                with session.staging() as rows:  # the test's rows, typed as the catalog says
                    spec_tests.load(rows, project.catalog, test)
                    uploads.write_file_lists(rows, project)
                    inputs = [project.catalog.users.relation, project.catalog.events.relation]
                    tables = {engine.table(r.name, r.schema): f"{r.schema}.{r.name}" for r in inputs}
                    tables[engine.table(md.UPLOADS_TABLE, "main")] = f"main.{md.UPLOADS_TABLE}"
                    session.import_tables(rows, tables)
                outcome = spec_tests.compare(test, session.rows(spec_tests.membership_query(project, test)))
                assert outcome.differences == {}, label
