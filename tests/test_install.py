"""An installed ``segments`` works on the repository it is run in (issue 17).

1. The package is built as a wheel and installed (not editable) into a fresh venv; a
   project made by ``segments init`` in an empty folder is validated, built, reviewed,
   listed and synced there, and nothing outside that folder is written.
2. The segments adopted into an existing dbt project (its own sources, profile and
   models folder): that project's own ``dbt build`` builds them.

The fresh venv gets the package's dependencies through a ``.pth`` line naming this
environment's site-packages (installing them again would take minutes and 800 MB);
a ``.pth`` file does not process the ``.pth`` files of the folder it adds, so this
checkout's editable install stays invisible there and ``segments`` is the wheel's.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import duckdb
import pytest

from segments import paths
from segments.cli import main

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2026-01-12"


def _snapshot(*roots: Path) -> dict[Path, tuple[int, int]]:
    found: dict[Path, tuple[int, int]] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]  # bytecode caches are Python's, not ours
            for name in files:
                path = Path(folder) / name
                try:
                    stat = path.lstat()
                except OSError:
                    continue
                found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _written(before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]) -> list[Path]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def _inputs(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    users, events = folder / "users.csv", folder / "events.csv"
    with users.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "created_at", "email", "city", "plan"])
        for i in range(20):
            writer.writerow([f"u{i:02d}", "2026-01-01 00:00:00", f"u{i}@example.com", "Pune", "free"])
    with events.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "event_name", "occurred_at"])
        for i in range(10):
            writer.writerow([f"u{i:02d}", "signup", f"2026-01-{1 + i:02d} 09:00:00"])
    return users, events


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout; its bin folder."""
    work = tmp_path_factory.mktemp("install")
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    source = work / "source"
    skipped = {".venv", ".git", ".segments", ".dagster", "build", "test-artifacts", "bench", "tests"}  # at the top only
    shutil.copytree(REPO, source, ignore=lambda folder, names: [
        n for n in names
        if n == "__pycache__" or n.endswith(".egg-info") or ".duckdb" in n or (Path(folder) == REPO and n in skipped)
    ])
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("segments-*.whl")
    venv = work / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # type: ignore[attr-defined]
    python = venv / "bin" / "python"
    # dbt-core too (no dependencies), for the `dbt` executable a real install puts beside `segments`
    constraints = REPO / "constraints.txt"
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "-c", str(constraints), str(wheel), "dbt-core"],
        check=True, capture_output=True,
    )
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    (site / "_segments_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_installed_wheel_works_in_an_empty_folder_and_writes_only_there(installed, tmp_path):
    project, home, scratch = tmp_path / "project", tmp_path / "home", tmp_path / "tmp"
    for folder in (project, home, scratch):
        folder.mkdir()
    users, events = _inputs(tmp_path / "inputs")
    env = {
        "PATH": f"{installed}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def segments(*argv: str, cwd: Path = project) -> str:
        done = subprocess.run([str(installed / "segments"), *argv], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"segments {' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def git(*argv: str) -> None:
        subprocess.run(["git", *argv], cwd=project, env=env, check=True, capture_output=True)

    imported = subprocess.run(
        [str(installed / "python"), "-c", "import segments, orchestration; print(segments.__file__)"],
        cwd=project, env=env, capture_output=True, text=True, check=True,  # not here: `-c` imports from the cwd
    ).stdout
    assert str(installed.parent) in imported  # the wheel's copy, not this checkout's
    watched = (REPO, installed.parent, home, users.parent)
    before = _snapshot(*watched)

    segments("init")
    assert "ok: 1 specs" in segments("validate", cwd=project / "segment_specs")  # found from below
    segments("load", "--users", str(users), "--events", str(events))
    assert "built 1 segments" in segments("build", "--as-of", AS_OF)
    members = segments("members", "--segment", "new_signups").splitlines()
    assert members[0] == "segment_name,user_id,is_holdout"
    assert [m.split(",")[1] for m in members[1:]] == [f"u{i:02d}" for i in range(4, 10)]  # signed up since Jan 5
    assert "new_signups" in segments("list")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "init")
    spec = project / "segment_specs" / "new_signups.yml"
    spec.write_text(spec.read_text().replace("within: 7d", "within: 3d"))
    review = segments("review", "--base", "HEAD", "--as-of", AS_OF)
    assert "new_signups" in review and "changed" in review
    assert "added 6" in segments("sync")
    exported = list((project / "exports" / "new_signups").glob("*_added.csv"))
    assert len(exported) == 1

    assert _written(before, _snapshot(*watched)) == []
    assert {p.name for p in project.iterdir()} <= {
        ".git", ".gitignore", "README.md", "pyproject.toml", "dagster.yaml", "segment_specs", "dbt_project",
        "warehouse.duckdb", "warehouse.duckdb.sync-exports.lock", "exports", ".segments",
    }
    ignored = subprocess.run(["git", "status", "--porcelain"], cwd=project, env=env, capture_output=True, text=True).stdout
    # what segments wrote beside the specs is git-ignored; only the edited spec and the models show
    assert {line[3:].split("/")[0] for line in ignored.splitlines()} <= {"segment_specs", "dbt_project"}


# --- adoption into an existing dbt project ----------------------------------------

SHOP_PROJECT = """\
name: shop
version: "1.0.0"
config-version: 2
profile: shop
model-paths: ["models"]
macro-paths: ["macros"]
"""
SHOP_PROFILES = """\
shop:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{warehouse}"
      schema: main
      threads: 1
    duckdb:
      type: duckdb
      path: "{warehouse}"
      schema: main
      threads: 1
"""
SHOP_SOURCES = """\
version: 2
sources:
  - name: shop_raw
    schema: raw
    tables:
      - name: customers
      - name: activity
"""
SHOP_MODEL = "select customer_id, city from {{ source('shop_raw', 'customers') }}\n"
SHOP_MARKER = """\
[project]
name = "shop"
version = "0.1.0"

[tool.segments]
specs = "segment_specs"
dbt_project = "."
models = "models/segments"
generate_sources = false
"""
SHOP_CATALOG = """\
users:
  table: shop_raw.customers
  key: customer_id
  created_at: signed_up_at
  attributes:
    city: {type: string}
events:
  table: shop_raw.activity
  user_key: customer_id
  name: kind
  timestamp: happened_at
"""
SHOP_SPEC = """\
name: pune_buyers
where:
  all:
    - {attribute: city, is: Pune}
    - {event: purchase, within: 30d}
"""


def test_adopted_into_an_existing_dbt_project_its_dbt_build_builds_the_segments(capsys, monkeypatch, tmp_path):
    shop = tmp_path / "shop"
    (shop / "models").mkdir(parents=True)
    (shop / "segment_specs").mkdir()
    warehouse = tmp_path / "shop.duckdb"
    (shop / "dbt_project.yml").write_text(SHOP_PROJECT)
    (shop / "profiles.yml").write_text(SHOP_PROFILES.format(warehouse=warehouse))
    (shop / "models" / "sources.yml").write_text(SHOP_SOURCES)
    (shop / "models" / "customers_clean.sql").write_text(SHOP_MODEL)
    (shop / "pyproject.toml").write_text(SHOP_MARKER)
    (shop / "segment_specs" / "_catalog.yml").write_text(SHOP_CATALOG)
    (shop / "segment_specs" / "pune_buyers.yml").write_text(SHOP_SPEC)
    con = duckdb.connect(str(warehouse))
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.customers AS SELECT * FROM (VALUES ('c1', 'Pune', TIMESTAMP '2025-01-01'), "
                "('c2', 'Pune', TIMESTAMP '2025-01-01'), ('c3', 'Delhi', TIMESTAMP '2025-01-01')) "
                "t(customer_id, city, signed_up_at)")
    con.execute("CREATE TABLE raw.activity AS SELECT * FROM (VALUES ('c1', 'purchase', TIMESTAMP '2026-01-10'), "
                "('c3', 'purchase', TIMESTAMP '2026-01-10'), ('c2', 'view', TIMESTAMP '2026-01-10')) t(customer_id, kind, happened_at)")
    con.close()
    monkeypatch.delenv(paths.PROJECT_DIR_ENV, raising=False)
    monkeypatch.chdir(shop)
    assert main(["compile"]) == 0, capsys.readouterr().err
    assert (shop / "models" / "segments" / "segments" / "seg_pune_buyers.sql").is_file()
    assert not list(shop.rglob("_sources.yml"))  # the project's own sources serve
    assert (shop / "macros" / "segments_as_of.sql").is_file()
    assert main(["compile", "--check"]) == 0
    dbt = Path(sys.executable).parent / "dbt"
    done = subprocess.run(
        [str(dbt), "build", "--project-dir", str(shop), "--profiles-dir", str(shop), "--vars", "{as_of: '2026-01-12'}"],
        cwd=shop, env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    con = duckdb.connect(str(warehouse), read_only=True)
    members = con.execute("SELECT user_id FROM main.seg_pune_buyers ORDER BY 1").fetchall()
    own = con.execute("SELECT count(*) FROM main.customers_clean").fetchone()[0]
    con.close()
    assert members == [("c1",)] and own == 3
    shutil.rmtree(shop / "target", ignore_errors=True)
