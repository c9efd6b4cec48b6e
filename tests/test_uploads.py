"""Uploaded lists in the warehouse (issue 14): ``segments upload`` on DuckDB and
PostgreSQL, key normalization, and the SQL phone key agreeing with phonenumbers."""

from __future__ import annotations

import doctest
import subprocess
import sys
import textwrap
from pathlib import Path

import phonenumbers
import pytest
from sqlglot import exp

from segments import engines, keys, pipeline, uploads, warehouse
from segments.cli import main
from segments.compiler import models as md
from segments.errors import SegmentsError
from segments.spec.parse import load_project

CATALOG = """\
default_country: IN
users:
  table: upraw.users
  key: user_id
  attributes:
    email: {type: string, pii: true}
    phone: {type: string, pii: true}
    city: {type: string}
events:
  table: upraw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
"""
# one person's phone as the users table has it, and as sales teams paste it
USERS = [
    ("u1", "Asha@Example.com", "+91 98765 43210"),
    ("u2", "ravi@example.com", "098765 43211"),
    ("u3", "meera@example.com", "9876543212"),
    ("u4", "john@example.com", "0091-98765-43213"),
    ("u5", "", ""),
]
PASTED = ["9876543210", "+91 98765 43211", "0091 98765 43212", "(98765) 43213", "+91 99999 00000"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    specs = tmp_path / "specs"
    write(specs / "_catalog.yml", CATALOG)
    write(specs / "callers.yml", "name: callers\nupload: {match_on: phone}\n")
    write(specs / "vips.yml", "name: vips\nupload: {match_on: email}\nwhere: {attribute: city, is: Pune}\n")
    return specs


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request, tmp_path: Path, specs: Path, monkeypatch) -> engines.base.Engine:
    """A warehouse with USERS loaded, on each engine (a schema of its own on PostgreSQL)."""
    if request.param == "postgres":
        for name, value in request.getfixturevalue("postgres_env").items():
            monkeypatch.setenv(name, value)
    engine = engines.get(request.param, tmp_path / "w.duckdb")
    if request.param == "postgres":
        engine.target_schema = f"uploads_{abs(hash(tmp_path.name)) % 10**8}"
    users = write(tmp_path / "users.csv", "user_id,email,phone,city\n" + "".join(f"{u},{e},{p},Pune\n" for u, e, p in USERS))
    events = write(tmp_path / "events.csv", "user_id,event_name,occurred_at\nu1,x,2026-01-01 00:00:00\n")
    with engine.connect() as session:
        catalog = load_project(specs).catalog
        if request.param == "postgres":  # the catalog's input schema, private to these tests
            session.execute(exp.Drop(kind="SCHEMA", this=exp.to_identifier("upraw"), exists=True, cascade=True))
        warehouse.load_inputs(session, catalog, users, events)
    return engine


def listed(engine, segment: str) -> list[str]:
    with engine.connect() as session:
        table = engine.table(md.UPLOADS_TABLE)
        query = exp.select("upload_key").from_(table).where(exp.column("segment_name").eq(exp.Literal.string(segment)))
        return sorted(str(row[0]) for row in session.rows(query.order_by("upload_key")))


def history(engine) -> list[tuple]:
    with engine.connect() as session:
        return session.rows(exp.select("*").from_(engine.table(uploads.HISTORY)).order_by("uploaded_at"))


def upload(engine, specs: Path, tmp_path: Path, segment: str, rows: list[str], mode: str = "replace", header: str = "phone"):
    path = write(tmp_path / f"{segment}-{mode}.csv", header + "\n" + "".join(f'"{r}"\n' for r in rows))
    with engine.connect() as session:
        return uploads.upload(session, load_project(specs), segment, path, mode)


def test_replace_append_remove(engine, specs, tmp_path):
    report = upload(engine, specs, tmp_path, "callers", PASTED + ["9876543210", "n/a"])
    assert (report.read.rows, report.read.invalid_count, report.read.invalid, report.read.duplicates) == (7, 1, [8], 1)
    assert (report.before, report.after) == (0, 5)
    assert (report.matched_users, report.unmatched_keys) == (4, 1)  # the four people, whatever the format
    assert listed(engine, "callers") == sorted(keys.normalize("phone", p, "IN") for p in PASTED)

    report = upload(engine, specs, tmp_path, "callers", ["+91 98765 00001", "98765 43210"], mode="append")
    assert (report.before, report.after) == (5, 6)
    report = upload(engine, specs, tmp_path, "callers", ["9876543210", "+91 99999 00000"], mode="remove")
    assert (report.before, report.after, report.matched_users, report.unmatched_keys) == (6, 4, 3, 1)
    report = upload(engine, specs, tmp_path, "callers", ["98765 43212"])  # replace is the default
    assert (report.before, report.after, report.matched_users) == (4, 1, 1)
    assert listed(engine, "callers") == ["+919876543212"]

    upload(engine, specs, tmp_path, "vips", ["  ASHA@example.COM ", "ravi@example.com"], header="email")
    assert listed(engine, "vips") == ["asha@example.com", "ravi@example.com"]
    assert listed(engine, "callers") == ["+919876543212"]  # another list's upload leaves it alone
    rows = history(engine)
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("callers", "replace", "upload"), ("callers", "append", "upload"), ("callers", "remove", "upload"),
        ("callers", "replace", "upload"), ("vips", "replace", "upload"),
    ]
    assert not any("@" in str(v) or "98765" in str(v) for row in rows for v in row)  # who and counts, never keys


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("phone,name\n98765 43210,a\n98765 43211\n98765 43212,c,extra\n", "on lines 3, 4; nothing was loaded"),
        ("phone\nn/a\n\n--\n", "no valid phone in 2 rows (lines 2, 4); nothing was loaded"),
        ("mobile\n98765 43210\n", "no column 'phone' in the header row (1 columns)"),
    ],
    ids=["bad_rows", "only_invalid_keys", "no_column"],
)
def test_a_bad_file_loads_nothing(engine, specs, tmp_path, content, message):
    upload(engine, specs, tmp_path, "callers", ["98765 43210"])
    path = write(tmp_path / "bad.csv", content)
    with engine.connect() as session, pytest.raises(SegmentsError) as error:
        uploads.upload(session, load_project(specs), "callers", path)
    assert message in str(error.value)
    assert "98765" not in str(error.value) and "n/a" not in str(error.value)  # lines, never values
    assert listed(engine, "callers") == ["+919876543210"]
    assert len(history(engine)) == 1


def test_cli_upload_reports_and_refuses(specs, tmp_path, capsys):
    warehouse_file = tmp_path / "cli.duckdb"
    users = write(tmp_path / "u.csv", "user_id,email,phone,city\n" + "".join(f"{u},{e},{p},Pune\n" for u, e, p in USERS))
    events = write(tmp_path / "e.csv", "user_id,event_name,occurred_at\nu1,x,2026-01-01 00:00:00\n")
    common = ["--specs", str(specs), "--warehouse", str(warehouse_file)]
    assert main(["load", "--users", str(users), "--events", str(events), *common]) == 0
    listing = write(tmp_path / "list.csv", "phone\n" + "\n".join(PASTED) + "\n")
    assert main(["upload", "callers", str(listing), *common]) == 0
    out = capsys.readouterr().out
    assert "callers: replace from 5 rows read" in out and "matched users: 4, unmatched keys: 1" in out
    assert "98765" not in out
    assert main(["upload", "nobody", str(listing), *common]) == 1
    assert "upload segments: callers, vips" in capsys.readouterr().err
    assert main(["upload", "callers", str(listing), "--append", "--remove", *common]) == 2
    assert main(["upload", "callers", str(listing), "--default-country", "XX", *common]) == 1
    assert "unknown region 'XX'" in capsys.readouterr().err
    write(tmp_path / "digits" / "_catalog.yml", CATALOG.replace("default_country: IN\n", ""))
    write(tmp_path / "digits" / "callers.yml", "name: callers\nupload: {match_on: phone}\n")
    digits = ["--specs", str(tmp_path / "digits"), "--warehouse", str(warehouse_file)]
    assert main(["upload", "callers", str(listing), "--default-country", "IN", *digits]) == 1
    assert "needs a default_country in _catalog.yml" in capsys.readouterr().err
    assert main(["preview", "callers", *common]) == 0
    out = capsys.readouterr().out
    assert "callers: 4 members" in out and "uploaded list: 4 users matched, 1 listed keys unmatched" in out


def test_a_build_matches_messy_phones_and_committed_files(specs, tmp_path):
    """The build reads the list from the warehouse; a spec's ``file:`` is loaded there
    first, and no key reaches the compiled SQL."""
    write(specs / "lists" / "team.csv", "email,who\n MEERA@example.com ,x\nnobody@example.com,y\n")
    write(specs / "team.yml", "name: team\nupload: {file: lists/team.csv, match_on: email}\n")
    warehouse_file = tmp_path / "b.duckdb"
    engine = engines.get("duckdb", warehouse_file)
    users = write(tmp_path / "u.csv", "user_id,email,phone,city\n" + "".join(f"{u},{e},{p},Pune\n" for u, e, p in USERS))
    events = write(tmp_path / "e.csv", "user_id,event_name,occurred_at\nu1,x,2026-01-01 00:00:00\n")
    with engine.connect() as session:
        warehouse.load_inputs(session, load_project(specs).catalog, users, events)
    upload(engine, specs, tmp_path, "callers", PASTED)
    as_of = pipeline.dt.datetime(2026, 1, 15)
    pipeline.build(specs, warehouse_file, as_of)
    with engine.connect(read_only=True) as session:
        members = {(s, u) for s, u, *_ in warehouse.members(session).rows}
    assert {u for s, u in members if s == "callers"} == {"u1", "u2", "u3", "u4"}
    assert {u for s, u in members if s == "team"} == {"u3"}
    models = pipeline.project_dir(specs, "duckdb") / "models"
    generated = "".join(p.read_text() for p in models.rglob("*") if p.is_file())
    assert "meera" not in generated.lower() and "98765" not in generated and "segment_uploads" in generated
    assert history(engine)[-1][:4] == ("team", "email", "replace", "file")
    pipeline.build(specs, warehouse_file, as_of)  # an unchanged file records nothing new
    assert [r[0] for r in history(engine)] == ["callers", "team"]


# ---- the SQL phone key agrees with phonenumbers ---------------------------------------

AGREEMENT = [
    ("IN", ["+91 98765 43210", "098765 43210", "9876543210", "0091 98765 43210", "0091-98765-43210", "919876543210",
            "+91 098765 43210", "(98765) 43210", "98765-43210", "+91-98765-43210", "91 98765 43210", "+00 91 9876543210",
            "022 2345 6789", "+1 415 555 2671", "0044 20 7946 0018", " +91.98765.43210 "]),
    ("DE", ["+49 30 1234567", "030 1234567", "0049 30 1234567", "301234567", "+49 (0)30 1234567", "49.30.1234567",
            "0151 23456789", "+49 151 23456789"]),
    ("GB", ["020 7946 0018", "+44 20 7946 0018", "07700 900123", "447700900123", "0044 7700 900123"]),
    ("US", ["(415) 555-2671", "1 415 555 2671", "+1 415-555-2671", "011 44 20 7946 0018", "415.555.2671"]),
]
CASES = [(region, number) for region, numbers in AGREEMENT for number in numbers]


def phonenumbers_e164(number: str, region: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(number, region), phonenumbers.PhoneNumberFormat.E164)


@pytest.mark.parametrize("target", ["duckdb", "postgres"])
def test_sql_phone_key_agrees_with_phonenumbers(target, tmp_path, request, monkeypatch):
    if target == "postgres":
        for name, value in request.getfixturevalue("postgres_env").items():
            monkeypatch.setenv(name, value)
    engine = engines.get(target, tmp_path / "k.duckdb")
    columns = [exp.alias_(keys.sql_key("phone", exp.Literal.string(n), region), f"k{i}") for i, (region, n) in enumerate(CASES)]
    with engine.connect() as session:
        (row,) = session.rows(exp.select(*columns))
    got = dict(zip(CASES, row))
    want = {(region, n): phonenumbers_e164(n, region) for region, n in CASES}
    assert got == want
    assert all(keys.normalize("phone", n, region) == want[(region, n)] for region, n in CASES)


def test_phones_without_a_default_country_match_on_digits():
    """SPEC 1.6 without ``default_country``: the digits alone, on both sides."""
    assert keys.normalize("phone", "+49 (31) 039-1633") == "49310391633"
    assert keys.sql_key("phone", exp.column("phone")).sql("duckdb") == "REGEXP_REPLACE(phone, '[^0-9]', '', 'g')"


def test_docstring_examples():
    for module in (keys, uploads):
        result = doctest.testmod(module)
        assert result.failed == 0
    assert doctest.testmod(keys).attempted > 0


def test_reading_a_list_does_not_import_pandas(tmp_path):
    """Every build with a file list reads it: the keys go to DuckDB as one bound list
    per batch, not through a pandas frame (importing pandas costs a third of a second)."""
    listed = tmp_path / "vip.csv"
    listed.write_text("email\nA@Example.com\na@example.com\nnot an email\nb@example.com\n")
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import duckdb
        from segments import uploads
        duck = duckdb.connect()
        read = uploads.read_keys(duck, "keys", Path({str(listed)!r}), "email", None)
        print(read.rows, read.valid, read.distinct, read.invalid_count)
        print(sorted(row[0] for row in duck.execute("SELECT upload_key FROM keys").fetchall()))
        print("pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["4 3 2 1", "['a@example.com', 'b@example.com']", "False"]
