"""``segments review``: the report's numbers against membership computed here.

Each test builds a git repository in a temp dir whose specs live in a
subdirectory (``analytics/segment_specs``), commits two versions of them, and
reviews one against the other on a small DuckDB warehouse. The expected members
of every rule are computed in plain Python from the same rows, independently of
the compiler.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from segments.cli import main

AS_OF = dt.datetime(2026, 1, 15)
AS_OF_TEXT = "2026-01-15T00:00:00Z"
SPECS = Path("analytics") / "segment_specs"
CITIES = ("Mumbai", "Pune", "Delhi", "Nagpur", None)

CATALOG = """\
users:
  table: raw.users
  key: user_id
  created_at: created_at
  attributes:
    email: {type: string, pii: true}
    city: {type: string}
    plan: {type: string, values: [free, pro]}
events:
  table: raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    amount: {type: number}
"""

# ---- the data, and what each rule means over it, in plain Python ----------------------


@dataclass(frozen=True)
class User:
    user_id: str
    created_at: dt.datetime | None
    email: str
    city: str | None
    plan: str
    purchases: tuple[dt.datetime, ...]


def make_users() -> list[User]:
    users = []
    for i in range(240):
        created = None if i % 11 == 0 else AS_OF - dt.timedelta(days=400 - i)
        if i % 23 == 5:
            created = AS_OF + dt.timedelta(days=1)  # created after as_of: in no segment
        purchases = tuple(AS_OF - dt.timedelta(days=(i * 7 + k * 13) % 75, hours=k) for k in range(i % 5))
        users.append(User(f"u{i:03d}", created, f" User{i}@Example.com ", CITIES[i % 5], ("free", "pro")[i % 3 == 0], purchases))
    return users


USERS = make_users()
UNIVERSE = [u for u in USERS if u.created_at is None or u.created_at <= AS_OF]


def purchases_within(user: User, days: int) -> int:
    return sum(1 for t in user.purchases if AS_OF - dt.timedelta(days=days) < t <= AS_OF)


def members(rule: Callable[[User], bool]) -> set[str]:
    return {u.user_id for u in UNIVERSE if rule(u)}


def uploaded(emails: list[str]) -> set[str]:
    keys = {e.strip().lower() for e in emails if e.strip()}
    return members(lambda u: u.email.strip().lower() in keys)


def holdout(segment: str, ids: set[str], percent: int) -> int:
    return sum(int(hashlib.md5(f"{segment}:{i}".encode()).hexdigest()[:8], 16) % 100 < percent for i in ids)


def tiers(big: int) -> dict[str, set[str]]:
    taken: set[str] = set()
    out = {}
    for name, rule in (("big", lambda u: purchases_within(u, 30) >= big), ("small", lambda u: purchases_within(u, 30) >= 1),
                       ("none", lambda u: True)):
        out[f"tiered__{name}"] = members(rule) - taken
        taken |= out[f"tiered__{name}"]
    return out


VIP_V1 = ["user3@example.com", "USER6@example.com", "", "nobody@example.com"]
VIP_V2 = VIP_V1 + ["user9@example.com", " user12@example.com"]

EXPECTED_V1 = {
    "mumbai": members(lambda u: u.city == "Mumbai"),
    "buyers": members(lambda u: purchases_within(u, 30) >= 1),
    "heavy": members(lambda u: purchases_within(u, 30) >= 2),
    "dropped": members(lambda u: u.plan == "pro"),
    "delhi": members(lambda u: u.city == "Delhi"),
    "stable": members(lambda u: u.plan == "free"),
    "vip": uploaded(VIP_V1),
    **tiers(big=3),
}
EXPECTED_V2 = {
    "mumbai": members(lambda u: u.city in ("Mumbai", "Pune")),
    "buyers": members(lambda u: purchases_within(u, 30) >= 2),
    "heavy": members(lambda u: purchases_within(u, 60) >= 2),  # _traits.yml changed
    "delhi": members(lambda u: u.city == "Delhi"),
    "stable": members(lambda u: u.plan == "free"),
    "vip": uploaded(VIP_V2),
    "pune": members(lambda u: u.city == "Pune"),
    **tiers(big=2),
}

# ---- the two commits of specs ------------------------------------------------------------

V1 = {
    "_catalog.yml": CATALOG,
    "_traits.yml": "traits:\n  orders_recent: {event: purchase, within: 30d, count: true}\n",
    "mumbai.yml": "name: mumbai\nwhere: {attribute: city, in: [Mumbai]}\nholdout: 20\n",
    "buyers.yml": "name: buyers\nwhere: {event: purchase, within: 30d}\n",
    "heavy.yml": "name: heavy\nwhere: {trait: orders_recent, gte: 2}\n",
    "dropped.yml": "name: dropped\nwhere: {attribute: plan, is: pro}\n",
    "delhi.yml": "name: delhi\ndescription: Delhi.\nwhere: {attribute: city, is: Delhi}\n",
    "stable.yml": "name: stable\nwhere: {attribute: plan, is: free}\n",
    "vip.yml": "name: vip\nupload: {file: uploads/vip.csv, match_on: email}\n",
    "uploads/vip.csv": "email\n" + "\n".join(VIP_V1) + "\n",
    "tiered.yml": (
        "name: tiered\ntiers:\n"
        "  - {name: big, where: {event: purchase, within: 30d, count: {gte: 3}}}\n"
        "  - {name: small, where: {event: purchase, within: 30d}}\n"
        "  - {name: none}\n"
    ),
}
V2 = {
    **{k: v for k, v in V1.items() if k != "dropped.yml"},
    "_traits.yml": "traits:\n  orders_recent: {event: purchase, within: 60d, count: true}\n",
    "mumbai.yml": "name: mumbai\nwhere: {attribute: city, in: [Mumbai, Pune]}\nholdout: 20\n",
    "buyers.yml": "name: buyers\nwhere: {event: purchase, within: 30d, count: {gte: 2}}\n",
    "delhi.yml": "name: delhi\ndescription: Everyone in Delhi.\nwhere: {attribute: city, is: Delhi}\n",
    "pune.yml": "name: pune\nwhere: {attribute: city, is: Pune}\n",
    "uploads/vip.csv": "email\n" + "\n".join(VIP_V2) + "\n",
    "tiered.yml": V1["tiered.yml"].replace("gte: 3", "gte: 2"),
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
         "-c", "init.defaultBranch=main", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return done.stdout


def write_specs(repo: Path, files: dict[str, str]) -> None:
    specs = repo / SPECS
    for path in specs.rglob("*"):
        if path.is_file():
            path.unlink()
    for name, text in files.items():
        (specs / name).parent.mkdir(parents=True, exist_ok=True)
        (specs / name).write_text(text)


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    write_specs(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.users (user_id VARCHAR, created_at TIMESTAMP, email VARCHAR, city VARCHAR, plan VARCHAR)")
    con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, amount DOUBLE)")
    con.executemany("INSERT INTO raw.users VALUES (?, ?, ?, ?, ?)",
                    [(u.user_id, u.created_at, u.email, u.city, u.plan) for u in USERS])
    events = [(u.user_id, "purchase", t, 10.0) for u in USERS for t in u.purchases]
    events += [(u.user_id, "purchase", AS_OF + dt.timedelta(hours=1), 5.0) for u in USERS[:50]]  # after as_of
    events += [(u.user_id, "page_view", AS_OF - dt.timedelta(days=1), None) for u in USERS[::2]]
    con.executemany("INSERT INTO raw.events VALUES (?, ?, ?, ?)", events)
    con.close()
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with V1 then V2 committed; the work tree is at V2."""
    git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text("not specs\n")
    commit(tmp_path, V1, "v1")
    commit(tmp_path, V2, "v2")
    return tmp_path


def review(capsys, repo: Path, warehouse: Path, base: str, *extra: str) -> tuple[int, str, str]:
    code = main(["review", "--base", base, "--specs", str(repo / SPECS), "--warehouse", str(warehouse),
                 "--as-of", AS_OF_TEXT, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- reading the report back --------------------------------------------------------------

ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| ([\d,—]+) \| ([\d,—]+) \| ([\d,—]+) \| ([\d,—]+) \|$", re.M)


def summary(report: str) -> dict[str, tuple[str, int | None, int | None, int | None, int | None]]:
    """The summary table: segment -> (change, before, after, enter, leave)."""

    def number(cell: str) -> int | None:
        return None if cell == "—" else int(cell.replace(",", ""))

    return {m[1]: (m[2], *(number(c) for c in m.groups()[2:])) for m in ROW.finditer(report)}


def overlap_matrix(report: str) -> dict[tuple[str, str], int]:
    """(column segment, row segment) -> shared members, from the overlap table."""
    section = report.split("### Overlap after the change", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    columns = re.findall(r"`(\w+)`", lines[0])
    out = {}
    for line in lines[2:]:  # after the header and its rule
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = re.match(r"`(\w+)`", cells[0])[1]
        for column, cell in zip(columns, cells[1:], strict=True):
            if cell != "—":
                out[(column, row)] = int(cell.split(" ")[0].replace(",", ""))
    return out


def section_of(report: str, spec: str) -> str:
    return report.split(f"### `{spec}`\n", 1)[1].split("\n### ", 1)[0]


# ---- the tests --------------------------------------------------------------------------------


def test_report_numbers_match_independent_membership(capsys, repo, warehouse):
    code, out, err = review(capsys, repo, warehouse, "HEAD~1")
    assert code == 0, err
    rows = summary(out)
    names = set(EXPECTED_V1) | set(EXPECTED_V2)
    statuses = {}
    for name in names:
        old, new = EXPECTED_V1.get(name), EXPECTED_V2.get(name)
        if old is None:
            statuses[name] = "added"
        elif new is None:
            statuses[name] = "removed"
        elif old != new:
            statuses[name] = "changed"
    statuses["delhi"] = "edited"  # description only
    # the last tier excludes the earlier ones, whose SQL changed: so did its own,
    # though its members did not
    assert EXPECTED_V1["tiered__none"] == EXPECTED_V2["tiered__none"]
    statuses["tiered__none"] = "changed"
    assert set(rows) == set(statuses), out
    for name, status in statuses.items():
        old, new = EXPECTED_V1.get(name), EXPECTED_V2.get(name)
        change, before, after, enter, leave = rows[name]
        assert change == status, name
        assert before == (None if old is None else len(old)), name
        assert after == (None if new is None else len(new)), name
        if status != "edited":
            assert enter == len((new or set()) - (old or set())), name
            assert leave == len((old or set()) - (new or set())), name
    assert "stable" not in rows  # same SQL, same file: not reported, counted
    assert "; 1 unchanged." in out


def test_examples_are_among_those_who_enter_and_leave(capsys, repo, warehouse):
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    for name, spec in (("mumbai", "mumbai"), ("buyers", "buyers"), ("tiered__big", "tiered"), ("tiered__small", "tiered")):
        text = section_of(out, spec).split(f"**`{name}`**", 1)[1].split("**`", 1)[0]
        old, new = EXPECTED_V1[name], EXPECTED_V2[name]
        for label, expected in (("enter", new - old), ("leave", old - new)):
            match = re.search(rf"^- {label}: (.*)$", text, re.M)
            if not expected:
                assert match is None, (name, label)
                continue
            ids = re.findall(r"`(\w+)`", match[1])
            assert len(ids) == min(5, len(expected)) and set(ids) <= expected, (name, label)
            if len(expected) > 5:
                assert match[1].endswith(f"and {len(expected) - 5} more")


def test_holdout_counts_match_the_hash_rule(capsys, repo, warehouse):
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    old, new = EXPECTED_V1["mumbai"], EXPECTED_V2["mumbai"]
    line = f"**`mumbai`** changed: {len(old):,} members ({holdout('mumbai', old, 20)} holdout) → "
    line += f"{len(new):,} members ({holdout('mumbai', new, 20)} holdout)"
    assert line in out


def test_overlap_matrix_matches_intersections(capsys, repo, warehouse):
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    matrix = overlap_matrix(out)
    changed = {"mumbai", "buyers", "heavy", "pune", "vip", "tiered__big", "tiered__small"}
    assert {column for column, _ in matrix} == changed
    checked = 0
    for (column, row), shared in matrix.items():
        assert shared == len(EXPECTED_V2[column] & EXPECTED_V2[row]), (column, row)
        checked += 1
    assert checked > 20
    # every non-empty intersection of a changed segment with another one is listed
    for column in changed:
        for row, ids in EXPECTED_V2.items():
            if row != column and EXPECTED_V2[column] & ids:
                assert (column, row) in matrix, (column, row)


def test_traits_change_reaches_the_segments_that_read_it(capsys, repo, warehouse):
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    assert "-  orders_recent: {event: purchase, within: 30d, count: true}" in out
    heavy = section_of(out, "heavy")
    assert "Spec file unchanged" in heavy
    assert "INTERVAL 30 DAY" in heavy and "INTERVAL 60 DAY" in heavy  # the SQL diff
    assert "`analytics/segment_specs/uploads/vip.csv`: 3 rows → 5 rows" in out
    assert "user9@example.com" not in out  # uploaded lists are never printed


def test_spec_and_sql_diffs(capsys, repo, warehouse):
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    mumbai = section_of(out, "mumbai")
    assert "--- a/analytics/segment_specs/mumbai.yml" in mumbai
    assert "-where: {attribute: city, in: [Mumbai]}" in mumbai
    assert "+where: {attribute: city, in: [Mumbai, Pune]}" in mumbai
    assert "<summary>Compiled SQL diff of <code>mumbai</code></summary>" in mumbai
    added = [line for line in mumbai.splitlines() if line.startswith("+")]
    assert any("city IN ('Mumbai', 'Pune')" in line and "AS seg_mumbai" in line for line in added), added
    dropped = section_of(out, "dropped")
    assert "+++ /dev/null" in dropped and "Compiled SQL" not in dropped
    assert "<summary>Compiled SQL of <code>pune</code></summary>" in section_of(out, "pune")
    assert "spec edited, compiled SQL unchanged" in section_of(out, "delhi")


def test_working_tree_changes_and_out_file(capsys, repo, warehouse, tmp_path):
    (repo / SPECS / "stable.yml").write_text("name: stable\nwhere: {attribute: plan, is: pro}\n")
    target = tmp_path / "review.md"
    code, out, err = review(capsys, repo, warehouse, "HEAD", "--out", str(target))
    assert code == 0 and out == "" and "wrote the review" in err
    rows = summary(target.read_text())
    free, pro = members(lambda u: u.plan == "free"), members(lambda u: u.plan == "pro")
    assert rows == {"stable": ("changed", len(free), len(pro), len(pro - free), len(free - pro))}


def test_no_changes(capsys, repo, warehouse):
    code, out, err = review(capsys, repo, warehouse, "HEAD")
    assert code == 0, err
    assert f"No segment changes: all {len(EXPECTED_V2)} segments compile to the same SQL" in out


def test_base_without_specs_directory(capsys, repo, warehouse):
    git(repo, "checkout", "-q", "-b", "before-specs")
    git(repo, "rm", "-rq", "analytics")
    git(repo, "commit", "-q", "-m", "no specs yet")
    git(repo, "checkout", "-q", "main")
    code, out, err = review(capsys, repo, warehouse, "before-specs")
    assert code == 0, err
    assert "`analytics/segment_specs/` does not exist at" in out
    rows = summary(out)
    assert {name: row[0] for name, row in rows.items()} == {name: "added" for name in EXPECTED_V2}
    assert all(rows[n][2] == len(ids) == rows[n][3] for n, ids in EXPECTED_V2.items())


def test_base_with_invalid_spec_names_the_file_at_the_revision(capsys, repo, warehouse):
    commit(repo, {**V2, "broken.yml": "name: broken\nwhere: {attribute: citty, is: Pune}\n"}, "broken")
    commit(repo, V2, "fixed")
    code, out, err = review(capsys, repo, warehouse, "HEAD~1")
    assert code == 1 and "Traceback" not in err
    assert "do not validate" in err
    assert "HEAD~1:analytics/segment_specs/broken.yml:2:20: unknown attribute 'citty'" in err


@pytest.mark.parametrize(
    ("base", "setup", "message"),
    [
        ("no-such-branch", None, "no such git revision"),
        ("--help", None, "expected a git revision"),
        ("HEAD", "missing_warehouse", "no warehouse at"),
        ("HEAD", "not_a_repository", "is not in a git repository"),
    ],
)
def test_bad_input_exits_1(capsys, repo, warehouse, tmp_path_factory, base, setup, message):
    specs, wh = repo / SPECS, warehouse
    if setup == "missing_warehouse":
        (specs / "stable.yml").write_text("name: stable\nwhere: {attribute: plan, is: pro}\n")
        wh = tmp_path_factory.mktemp("none") / "none.duckdb"
    if setup == "not_a_repository":
        specs = tmp_path_factory.mktemp("loose")
        for name in ("_catalog.yml", "stable.yml"):
            (specs / name).write_text(V2[name])
    code = main(["review", "--base", base, "--specs", str(specs), "--warehouse", str(wh), "--as-of", AS_OF_TEXT])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


def test_the_review_on_postgresql_says_what_it_says_on_duckdb(capsys, repo, warehouse, postgres_env, monkeypatch):
    """``--target postgres``: both sides run on the server (in temporary tables of the
    review's session), and the report is the DuckDB one but for where it ran."""
    from sync_fixtures import PgConnection, postgres_database

    with postgres_database(postgres_env, monkeypatch) as env, PgConnection(env) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.users (user_id VARCHAR, created_at TIMESTAMP, email VARCHAR, city VARCHAR, plan VARCHAR)")
        con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP, amount DOUBLE PRECISION)")
        with duckdb.connect(str(warehouse), read_only=True) as source:
            for table in ("raw.users", "raw.events"):
                rows = source.execute(f"SELECT * FROM {table}").fetchall()
                con.executemany(f"INSERT INTO {table} VALUES ({', '.join(['?'] * len(rows[0]))})", rows)
        on_duckdb = review(capsys, repo, warehouse, "HEAD~1")
        code = main(["review", "--base", "HEAD~1", "--specs", str(repo / SPECS), "--target", "postgres",
                     "--as-of", AS_OF_TEXT])
        on_postgres = capsys.readouterr()
    assert code == 0, on_postgres.err
    where = re.compile(r"evaluated on `[^`]+`")
    assert "evaluated on `PostgreSQL" in on_postgres.out
    assert where.sub("evaluated on `X`", on_postgres.out) == where.sub("evaluated on `X`", on_duckdb[1])


def test_an_experiments_arms_are_counted(capsys, repo, warehouse):
    """Arms of a new experiment, against md5 in Python (SPEC 2.7)."""
    spec = "name: split\nwhere: {attribute: city, is: Mumbai}\nexperiment: {name: copy, arms: {a: 50, b: 50}}\n"
    commit(repo, {**V2, "split.yml": spec}, "v3")
    out = review(capsys, repo, warehouse, "HEAD~1")[1]
    mumbai = members(lambda u: u.city == "Mumbai")
    count = {arm: 0 for arm in ("a", "b")}
    for user_id in mumbai:
        count["a" if int(hashlib.md5(f"copy:{user_id}".encode()).hexdigest()[:8], 16) % 10_000 < 5000 else "b"] += 1
    assert f"{len(mumbai):,} members (arms: a {count['a']:,}, b {count['b']:,})" in out
    assert all(count.values())
