"""``segments watch`` (:mod:`sync.watch`): after every round, the loopback webhook
receiver holds exactly what a full build at the same as_of makes of the real-time
segments (holdout members excepted).

One warehouse is watched round after round: events arrive, a quiet period lets windows
expire, a user attribute changes (the refresh falls back to a full build), the watch
process is killed with SIGKILL in the middle of a cycle and started again. After each
round a copy of the warehouse is built in full (``--full-refresh``, through dbt) at the
round's as_of and compared with the receiver.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from segments import cli, demo_data, engines, paths, pipeline
from sync import watch
from segments.spec.parse import load_project
from sync import engine as sync_engine
from sync.receiver import AudienceReceiver

ANCHOR = dt.datetime(2026, 3, 1)
T0 = ANCHOR - dt.timedelta(days=3)
SECRET = "whsec_" + "d2F0Y2gtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="
REALTIME = ("abandoned_cart", "pricing_page_visitors", "welcome_journey")


def realtime_specs(target: Path) -> Path:
    """The example specs, three of them real-time, synced to crm_hook only, and with a
    size check and a mass-removal guard that let a small segment empty out (the guards
    themselves: test_guards_hold_back_a_cycle)."""
    shutil.copytree(paths.SPECS_DIR, target)
    destinations = target / "_destinations.yml"
    destinations.write_text(destinations.read_text().replace("    batch_size: 500\n", "    batch_size: 500\n    max_remove_pct: 100\n", 1))
    for name in REALTIME:
        path = target / f"{name}.yml"
        text = re.sub(r"(?m)^(refresh|checks):.*$", "", path.read_text())
        text = re.sub(r"(?ms)^sync:\n.*?(?=^\S|\Z)", "", text)
        path.write_text(f"refresh: realtime\nchecks: {{max_size_change_pct: 1000}}\nsync:\n  - destination: crm_hook\n{text}")
    return target


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    return realtime_specs(tmp_path_factory.mktemp("specs") / "segment_specs")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """Demo data up to T0; the events after T0 wait in raw.later."""
    path = tmp_path_factory.mktemp("watch") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    demo_data.write_duckdb(demo_data.generate(users=500, seed=5, anchor=ANCHOR), con)
    con.execute("CREATE TABLE raw.later AS SELECT * FROM raw.events WHERE occurred_at > ?", [T0])
    con.execute("DELETE FROM raw.events WHERE occurred_at > ?", [T0])
    con.close()
    return path


@pytest.fixture(scope="module")
def receiver():
    with AudienceReceiver(SECRET, keep_deliveries=False) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def work_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WORK_DIR_ENV, str(tmp_path_factory.mktemp("work")))
        yield


def watcher(specs: Path, warehouse: Path, receiver: AudienceReceiver, at: dt.datetime) -> watch.Watcher:
    settings = sync_engine.Settings(env={"CRM_HOOK_URL": receiver.url, "CRM_HOOK_SECRET": SECRET})
    return watch.Watcher(specs, warehouse, clock=lambda: at, sync_settings=settings)


def full_build_members(specs: Path, warehouse: Path, as_of: dt.datetime, tmp_path: Path) -> dict[str, set[str]]:
    copy = tmp_path / "full.duckdb"
    shutil.copyfile(warehouse, copy)
    assert pipeline.build(specs, copy, as_of, full_refresh=True).refreshed is None
    con = duckdb.connect(str(copy), read_only=True)
    try:
        rows = con.execute(
            "SELECT segment_name, user_id FROM main.segment_membership WHERE NOT is_holdout AND as_of = ?", [as_of]
        ).fetchall()
    finally:
        con.close()
    wanted = {name: set() for name in REALTIME}
    for segment, user in rows:
        if segment in wanted:
            wanted[segment].add(user)
    return wanted


def arrive(warehouse: Path, upto: dt.datetime) -> int:
    """Events of raw.later up to ``upto`` arrive in raw.events."""
    con = duckdb.connect(str(warehouse))
    try:
        moved = con.execute("SELECT count(*) FROM raw.later WHERE occurred_at <= ?", [upto]).fetchone()[0]
        con.execute("INSERT INTO raw.events SELECT * FROM raw.later WHERE occurred_at <= ?", [upto])
        con.execute("DELETE FROM raw.later WHERE occurred_at <= ?", [upto])
        return int(moved)
    finally:
        con.close()


def change_attributes(warehouse: Path, upto: dt.datetime) -> int:
    """Every tenth user gets a new signup_at (welcome_journey reads it)."""
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            "UPDATE raw.users SET signup_at = ? - INTERVAL 1 HOUR WHERE hash(user_id) % 10 = 0", [upto]
        )
        return int(con.execute("SELECT count(*) FROM raw.users WHERE hash(user_id) % 10 = 0").fetchone()[0])
    finally:
        con.close()


def audiences(receiver: AudienceReceiver) -> dict[str, set[str]]:
    return {name: set(receiver.audiences.get(name, set())) for name in REALTIME}


ROUNDS = [  # (round, hours after T0, what happens first)
    ("first cycle: a full build, every member sent", 0, None),
    ("two hours of events", 2, arrive),
    ("more events, five minutes later", 2 + 1 / 12, arrive),
    ("a quiet period: windows expire, no event", 60, None),
    ("a changed users attribute: a full build", 61, change_attributes),
]


def test_rounds_match_a_full_build(specs, warehouse, receiver, tmp_path):
    seen_events = 0
    for label, hours, before in ROUNDS:
        at = T0 + dt.timedelta(hours=hours)
        if before is not None:
            before(warehouse, at)
        cycle = watcher(specs, warehouse, receiver, at).cycle()
        assert cycle.as_of == at
        assert not cycle.problems, (label, cycle.problems)
        expected = full_build_members(specs, warehouse, at, tmp_path)
        assert audiences(receiver) == expected, label
        assert any(expected.values()), label  # a round that compares empty sets proves nothing
        seen_events += cycle.events_seen
        assert "@" not in cycle.line()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM main_segments_build.stg_events").fetchone()[0] == seen_events


def test_refresh_cycles_reevaluate_few_users(specs, warehouse, receiver):
    """A cycle with nothing new refreshes (no dbt) and sends nothing."""
    at = T0 + dt.timedelta(hours=61, minutes=1)
    watcher(specs, warehouse, receiver, at).cycle()  # whatever the module's earlier tests left
    at += dt.timedelta(minutes=1)
    cycle = watcher(specs, warehouse, receiver, at).cycle()
    assert cycle.reevaluated is not None and cycle.reevaluated < 500
    assert (cycle.events_seen, cycle.sent) == (0, 0)
    with engines.get("duckdb", warehouse).connect(read_only=True) as session:
        assert watch.read_mark(session).as_of == at


_CHILD = """
import datetime as dt, sys
from pathlib import Path
from sync import watch
from sync import engine
at = dt.datetime.fromisoformat(sys.argv[3])
settings = engine.Settings(env={"CRM_HOOK_URL": sys.argv[4], "CRM_HOOK_SECRET": sys.argv[5]})
print("started", flush=True)
watch.Watcher(Path(sys.argv[1]), Path(sys.argv[2]), clock=lambda: at, sync_settings=settings).cycle()
"""


def test_kill_9_and_restart(specs, warehouse, receiver, tmp_path):
    """SIGKILL in the middle of a cycle (after events arrived), then a restart: the
    receiver ends equal to a full build, and nothing already held is sent twice."""
    at = T0 + dt.timedelta(hours=62)
    assert arrive(warehouse, at) > 0
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(specs), str(warehouse), at.isoformat(), receiver.url, SECRET],
        stdout=subprocess.PIPE, env={**os.environ}, start_new_session=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == b"started"
    time.sleep(1.0)  # inside the build
    # the process and its dbt, as systemd kills a service's control group
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    restarted = watcher(specs, warehouse, receiver, at)
    first = restarted.cycle()
    # a segment that was empty fails its size check ("from empty") and waits a cycle
    assert all("not synced" in problem for problem in first.problems)
    again = restarted.cycle()
    assert not again.problems
    assert audiences(receiver) == full_build_members(specs, warehouse, at, tmp_path)
    assert receiver.repeats == 0


def test_cli_watch_runs_cycles_and_stops(specs, warehouse, receiver, capsys, monkeypatch):
    monkeypatch.setenv("CRM_HOOK_URL", receiver.url)
    monkeypatch.setenv("CRM_HOOK_SECRET", SECRET)
    monkeypatch.setattr(watch, "utc_now", lambda: T0 + dt.timedelta(hours=63))
    code = cli.main(["watch", "--specs", str(specs), "--warehouse", str(warehouse), "--interval", "1s", "--cycles", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert len([line for line in err.splitlines() if line.startswith("as_of ")]) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--interval", "soon"], 2, "invalid duration"),
        (["--interval", "0s"], 2, "longer than 0s"),
    ],
)
def test_cli_watch_bad_input(specs, warehouse, args, code, message, capsys):
    assert cli.main(["watch", "--specs", str(specs), "--warehouse", str(warehouse), *args]) == code
    assert message in capsys.readouterr().err


def test_cli_watch_needs_a_realtime_spec(warehouse, capsys):
    assert cli.main(["watch", "--specs", str(paths.SPECS_DIR), "--warehouse", str(warehouse), "--cycles", "1"]) == 1
    assert "no spec" in capsys.readouterr().err


def test_realtime_segments_of_the_specs(specs):
    assert watch.realtime_segments(load_project(specs)) == sorted(REALTIME, key=[s.name for s in load_project(specs).segments].index)


@pytest.mark.parametrize(
    ("refresh", "error"),
    [
        ("realtime", None),
        ("' realtime '", None),
        ("realtme", "abandoned_cart.yml:1:10: invalid refresh cron 'realtme' (or 'realtime')"),
        ("0 * * *", "abandoned_cart.yml:1:10: invalid refresh cron '0 * * *' (or 'realtime')"),
    ],
)
def test_refresh_realtime_parses(tmp_path, refresh, error):
    from segments.errors import SpecErrors

    specs = shutil.copytree(paths.SPECS_DIR, tmp_path / "segment_specs")
    path = specs / "abandoned_cart.yml"
    path.write_text(f"refresh: {refresh}\n" + re.sub(r"(?m)^refresh:.*$", "", path.read_text()))
    if error is None:
        assert load_project(specs).spec("abandoned_cart").realtime
        return
    with pytest.raises(SpecErrors) as raised:
        load_project(specs)
    assert any(str(e).endswith(error) or error in str(e) for e in raised.value.errors), raised.value.errors
