"""One writer, short holds (issue 18, item 7): a second writer on a busy DuckDB
warehouse says so in one line and exits 1, and a sync holds the warehouse only for its
short reads and checkpoints, never while it waits on a destination."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import duckdb

from segments.cli import main
from sync.receiver import AudienceReceiver, Fault
from sync_fixtures import CATALOG, SECRET, publish, state, users, webhook_destinations, write_project, write_users

HOLD = "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n"


def test_a_build_on_a_busy_warehouse_prints_one_line_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGMENTS_WORK_DIR", str(tmp_path / "work"))
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, users(3))
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "a.yml").write_text("name: a\nwhere: {attribute: email, is_set: true}\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["build", "--specs", str(specs), "--warehouse", str(warehouse)]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is busy" in err, err


# ---- a sync holds the warehouse only for its short reads and checkpoints -------------

PROBE = (  # a build's first step: open the warehouse read-write and write to it
    "import duckdb, sys\ncon = duckdb.connect(sys.argv[1])\n"
    "con.execute('CREATE OR REPLACE TABLE main.probe AS SELECT 1 AS x')\ncon.close()\nprint('wrote', flush=True)\n"
)


def _sync_world(tmp_path, ids):
    warehouse = tmp_path / "wh.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, ids)
        publish(con, {"vip": {u: False for u in ids}})
    return warehouse


def _run_sync(specs, warehouse) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "segments.cli", "sync", "--specs", str(specs), "--warehouse", str(warehouse)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_sync_waiting_on_a_slow_destination_leaves_the_warehouse_to_others(tmp_path):
    ids = users(50)
    warehouse = _sync_world(tmp_path, ids)
    waiting, release = threading.Event(), threading.Event()

    def slow(number: int, headers: dict[str, str]) -> Fault | None:
        if number == 1:  # the sync now waits on the network, for as long as the test likes
            waiting.set()
            release.wait(60)
        return None

    with AudienceReceiver(SECRET, fault=slow) as receiver:
        specs = tmp_path / "specs"
        write_project(specs, webhook_destinations(receiver.url, batch_size=20, concurrency=1),
                      {"vip": "sync:\n  - destination: hook"})
        process = _run_sync(specs, warehouse)
        try:
            assert waiting.wait(60), process.stderr.read() if process.poll() is not None else "no request"
            start = time.monotonic()
            probe = subprocess.run([sys.executable, "-c", PROBE, str(warehouse)], capture_output=True, text=True, timeout=30)
            seconds = time.monotonic() - start
        finally:
            release.set()
        assert probe.returncode == 0 and "wrote" in probe.stdout, probe.stderr[-500:]
        assert seconds < 10
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert receiver.audiences["vip"] == set(ids)
    with duckdb.connect(str(warehouse)) as con:
        assert state(con, "hook", "vip") == set(ids)
        assert con.execute("SELECT status, added FROM main.sync_runs").fetchall() == [("succeeded", 50)]


def test_a_checkpoint_waits_for_a_build_that_briefly_holds_the_warehouse(tmp_path):
    ids = users(50)
    warehouse = _sync_world(tmp_path, ids)
    holders: list[subprocess.Popen] = []
    hold = "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(2)\n"

    def busy_at_ack(number: int, headers: dict[str, str]) -> Fault | None:
        if number == 1:  # another process takes the warehouse just before the first ack
            holder = subprocess.Popen([sys.executable, "-c", hold, str(warehouse)], stdout=subprocess.PIPE, text=True)
            holders.append(holder)
            assert holder.stdout.readline().strip() == "held"
        return None

    with AudienceReceiver(SECRET, fault=busy_at_ack) as receiver:
        specs = tmp_path / "specs"
        write_project(specs, webhook_destinations(receiver.url, batch_size=20, concurrency=1),
                      {"vip": "sync:\n  - destination: hook"})
        process = _run_sync(specs, warehouse)
        _, err = process.communicate(timeout=120)
    for holder in holders:
        holder.wait(30)
    assert holders and holders[0].returncode == 0  # it really held the warehouse, and let go
    assert process.returncode == 0, err
    assert receiver.audiences["vip"] == set(ids) and receiver.repeats == 0
    with duckdb.connect(str(warehouse)) as con:
        assert state(con, "hook", "vip") == set(ids)
        assert con.execute("SELECT status, added, batches FROM main.sync_runs").fetchall() == [("succeeded", 50, 3)]


def test_a_quick_destination_checkpoints_in_one_hold(tmp_path, monkeypatch):
    """A destination that answers within LINGER finds the warehouse still attached from
    the plans: its checkpoints share that hold (attaching for each cost more than the
    batch), which lets go at least every LINGER_FOR seconds for other commands."""
    from segments.spec.parse import load_project
    from sync import engine, scratch

    ids = users(60)
    warehouse = _sync_world(tmp_path, ids)
    attaches: list[float] = []
    attached = scratch.warehouse.attached

    def counted(*args, **kwargs):
        attaches.append(time.monotonic())
        return attached(*args, **kwargs)

    monkeypatch.setattr(scratch.warehouse, "attached", counted)
    monkeypatch.setattr(engine, "LINGER", 30.0)  # however slow this machine answers
    with AudienceReceiver(SECRET) as receiver:
        specs = tmp_path / "specs"
        write_project(specs, webhook_destinations(receiver.url, batch_size=5, concurrency=1),
                      {"vip": "sync:\n  - destination: hook"})
        started = time.monotonic()
        [outcome] = engine.sync(load_project(specs), warehouse, settings=engine.Settings(env={}))
        seconds = time.monotonic() - started
    assert (outcome.status, outcome.added) == ("succeeded", 60) and receiver.audiences["vip"] == set(ids)
    assert receiver.requests == 12
    assert 1 <= len(attaches) <= 2 + seconds / scratch.LINGER_FOR  # not one per checkpoint
    with duckdb.connect(str(warehouse)) as con:
        assert state(con, "hook", "vip") == set(ids)
        assert con.execute("SELECT status, added, batches FROM main.sync_runs").fetchall() == [("succeeded", 60, 12)]
