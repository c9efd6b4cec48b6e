"""A sync killed with SIGKILL at any point, then rerun, leaves the destination's
audience exactly equal to the membership (SPEC 4): nothing lost, and at most the
batches in flight at the kill are sent again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from sync.receiver import AudienceReceiver, Fault
from sync_fixtures import (
    SECRET, SyncWarehouse, postgres_database, publish, state, users, webhook_destinations, write_project, write_users,
)

CONCURRENCY = 2


def run_sync(specs, warehouse: SyncWarehouse) -> subprocess.Popen:
    return subprocess.Popen(  # PostgreSQL: the libpq variables the fixture set
        [sys.executable, "-m", "segments.cli", "sync", "--specs", str(specs), *warehouse.cli_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        yield SyncWarehouse("duckdb", tmp_path / "wh.duckdb")
        return
    with postgres_database(request.getfixturevalue("postgres_env"), monkeypatch) as env:
        yield SyncWarehouse("postgres", tmp_path / "unused.duckdb", env)


# (request number at which the process is killed, the receiver applied that request
# first, the membership change synced): every kind of instant around an acknowledgement.
KILLS = {
    "first request, not applied": (1, False, "initial"),
    "mid-run, not applied": (9, False, "initial"),
    "mid-run, applied but unanswered": (14, True, "initial"),
    "last request, applied": (30, True, "initial"),
    "change sync with removes": (4, True, "change"),
}


@pytest.mark.parametrize("kill_at, applied, kind", KILLS.values(), ids=KILLS.keys())
def test_sigkill_then_rerun_converges(tmp_path, warehouse, kill_at, applied, kind):
    ids = users(900)
    with AudienceReceiver(SECRET) as receiver:
        specs = tmp_path / "specs"
        write_project(specs, webhook_destinations(receiver.url, batch_size=20, concurrency=CONCURRENCY),
                      {"vip": "sync:\n  - destination: hook"})
        with warehouse.connect() as con:
            write_users(con, ids)
            publish(con, {"vip": {u: False for u in ids[:600]}})
        wanted = set(ids[:600])
        if kind == "change":
            assert run_sync(specs, warehouse).wait() == 0
            with warehouse.connect() as con:
                publish(con, {"vip": {u: False for u in ids[200:800]}})
            wanted = set(ids[200:800])
        before = receiver.requests

        def kill(number: int, headers: dict[str, str]) -> Fault | None:
            if number - before != kill_at:
                return None
            os.kill(process.pid, signal.SIGKILL)
            return Fault(drop=True, apply=applied)  # applied or not, never answered

        receiver.fault = kill  # reads `process` when called: Popen returns before any request
        process = run_sync(specs, warehouse)
        assert process.wait(timeout=120) == -signal.SIGKILL
        receiver.fault = None
        with warehouse.connect() as con:
            assert state(con, "hook", "vip") != wanted  # the kill really interrupted it

        rerun = run_sync(specs, warehouse)
        assert rerun.wait(timeout=120) == 0, rerun.stderr.read()
        assert receiver.audiences["vip"] == wanted
        with warehouse.connect() as con:
            assert state(con, "hook", "vip") == wanted
            statuses = [r[0] for r in con.execute("SELECT status FROM sync_runs ORDER BY started_at").fetchall()]
        assert statuses[-2:] == ["interrupted", "succeeded"]
        assert receiver.repeats <= CONCURRENCY
