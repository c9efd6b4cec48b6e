"""The Dagster code location on PostgreSQL (``SEGMENTS_TARGET=postgres``): a full
refresh in process builds with dbt on the server, publishes, runs the data checks
there and syncs the webhook destinations from the server's membership.

The repository's committed models are DuckDB SQL, so the refresh runs in a copy of the
project whose models are compiled for PostgreSQL (``segments compile --dialect
postgres``), in a Python process of its own (tests/dagster_refresh.py): the code
location reads its project when it is imported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segments import demo_data, paths
from segments.compiler import models as md
from sync.receiver import AudienceReceiver
from sync_fixtures import SECRET, PgConnection, postgres_database

AS_OF = dt.datetime(2026, 1, 15)
HOOKS = ("crm_hook", "whatsapp_hook")  # the destinations a loopback receiver serves


def _segments(*argv: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "segments.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, postgres_env):
    """Demo data loaded into a fresh database, then the full refresh at AS_OF."""
    work = tmp_path_factory.mktemp("pg_dagster")
    project = work / "project"
    for name in ("segment_specs", "dbt_project", "schemas"):
        shutil.copytree(paths.ROOT / name, project / name, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    shutil.copy(paths.ROOT / "pyproject.toml", project / "pyproject.toml")
    users, events = demo_data.write_files(demo_data.generate(users=600, anchor=AS_OF), work / "inputs")
    with pytest.MonkeyPatch.context() as patch, AudienceReceiver(SECRET) as receiver:
        with postgres_database(postgres_env, patch) as pg:
            env = {**os.environ, **pg, paths.PROJECT_DIR_ENV: str(project), "SEGMENTS_TARGET": "postgres",
                   paths.WAREHOUSE_ENV: str(work / "unused.duckdb"), paths.WORK_DIR_ENV: str(work / "scratch"),
                   "CRM_HOOK_URL": receiver.url, "CRM_HOOK_SECRET": SECRET,
                   "SEGMENTS_EXPORT_DIR": str(work / "exports"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
            _segments("compile", "--dialect", "postgres", env=env)
            _segments("load", "--target", "postgres", "--users", str(users), "--events", str(events), env=env)
            parse = [str(Path(sys.executable).parent / "dbt"), "parse", "--target", "postgres", "--quiet"]
            done = subprocess.run(parse, cwd=project / "dbt_project", env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
            report = work / "report.json"
            script = Path(__file__).with_name("dagster_refresh.py")
            done = subprocess.run([sys.executable, str(script), AS_OF.isoformat(sep=" "), str(report)],
                                  cwd=project, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
            with PgConnection(pg) as con:
                membership = con.execute(
                    f"SELECT segment_name, user_id, is_holdout FROM public.{md.MEMBERSHIP}").fetchall()
                opted_in = {r[0] for r in con.execute("SELECT user_id FROM raw.users WHERE whatsapp_opt_in").fetchall()}
                sizes = con.execute("SELECT COUNT(*) FROM public.segment_size_history").fetchone()[0]
            yield json.loads(report.read_text()), membership, opted_in, sizes, receiver


def test_the_refresh_builds_publishes_and_checks_on_postgres(refreshed):
    report, membership, _, sizes, _ = refreshed
    names = {name for name, _, _ in membership}
    assert names and sizes >= len(names)  # published, with its history
    failures = report["failed"]
    assert all(step.startswith("sync__") and "is not set" in message for step, message in failures.items()), failures
    assert report["checks"] and all(report["checks"].values()), [k for k, ok in report["checks"].items() if not ok]
    assert {key.split(":")[1] for key in report["checks"]} >= {"input_schema", "size_change", "membership_schema"}
    for name in names:
        members = sum(1 for n, _, _ in membership if n == name)
        assert report["metadata"][md.segment_model_name(name)]["size"] == members, name


def test_the_sync_assets_push_the_servers_membership(refreshed):
    report, membership, opted_in, _, receiver = refreshed
    members: dict[str, set[str]] = {}
    for name, user_id, holdout in membership:
        if not holdout:
            members.setdefault(name, set()).add(user_id)
    synced = [key.split("/")[1:] for key in report["materialized"] if key.startswith("sync/") and key.split("/")[1] in HOOKS]
    assert synced
    for destination, segment in synced:
        wanted = members.get(segment, set()) & (opted_in if destination == "whatsapp_hook" else members.get(segment, set()))
        assert receiver.audiences.get(segment, set()) >= wanted, (destination, segment)
        assert report["metadata"][f"sync/{destination}/{segment}"]["added"] == len(wanted)
    assert receiver.bad_signatures == 0
