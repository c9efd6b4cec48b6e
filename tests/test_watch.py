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
import threading
import time
from pathlib import Path

import duckdb
import pytest

from segments import cli, engines, paths
from segments.spec.parse import load_project
from sync import engine as sync_engine
from sync import watch
from sync.receiver import AudienceReceiver
from watch_fixtures import REALTIME, SECRET, T0, arrive, audiences, change_attributes, demo_warehouse, full_build_members, realtime_specs


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> Path:
    return realtime_specs(tmp_path_factory.mktemp("specs") / "segment_specs")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return demo_warehouse(tmp_path_factory.mktemp("watch") / "warehouse.duckdb")


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


ROUNDS = [  # (round, hours after T0, what happens first)
    ("first cycle: a full build, every member sent", 0, None),
    ("two hours of events", 2, arrive),
    ("more events, five minutes later", 2 + 1 / 12, arrive),
    ("a quiet period: windows expire, no event", 60, None),
    ("a changed users attribute: a full build", 61, change_attributes),
]


def test_rounds_match_a_full_build(specs, warehouse, receiver, tmp_path):
    """One watcher, as one `segments watch` process: its later cycles skip the syncs
    of segments nobody entered or left (test_unchanged_segments_skip_their_sync)."""
    seen_events = 0
    running = watcher(specs, warehouse, receiver, T0)
    for label, hours, before in ROUNDS:
        at = T0 + dt.timedelta(hours=hours)
        if before is not None:
            before(warehouse, at)
        running.clock = lambda at=at: at
        cycle = running.cycle()
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


def test_unchanged_segments_skip_their_sync(specs, warehouse, receiver):
    """After a refresh, only the pairs whose segment someone entered or left are synced,
    in this process or a new one (what the last cycle left in sync is recorded); after
    a build by another command, every pair is planned again."""
    from segments import pipeline

    at = T0 + dt.timedelta(hours=61, minutes=5)
    running = watcher(specs, warehouse, receiver, at)
    first = running.cycle()
    assert not first.problems
    requests = receiver.requests
    running.clock = lambda: at + dt.timedelta(seconds=1)
    quiet = running.cycle()
    assert quiet.reevaluated is not None and (quiet.entered, quiet.exited, quiet.sent) == (0, 0, 0)
    assert "sync" not in quiet.timings and receiver.requests == requests
    other = watcher(specs, warehouse, receiver, at + dt.timedelta(seconds=2)).cycle()  # a new process
    assert "sync" not in other.timings and other.sent == 0 and receiver.requests == requests
    pipeline.build(specs, warehouse, at + dt.timedelta(seconds=3))  # another command's build: nothing trusted
    again = watcher(specs, warehouse, receiver, at + dt.timedelta(seconds=4)).cycle()
    assert "sync" in again.timings and not again.problems


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
    cycle = restarted.cycle()
    # segments that were empty get a few members: fewer than the size check's floor,
    # so they are synced at once (tests/test_watch.py::test_size_check_floor)
    assert not cycle.problems and not cycle.waiting, cycle.line()
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


@pytest.mark.parametrize(
    ("previous", "members", "limit", "problem"),
    [
        (None, 500, 50, None),  # first publish: nothing to compare with
        (0, 3, 50, None),  # from empty to a handful: below the floor
        (0, 9, 50, None),
        (0, 10, 50, "size of s moved from empty (0 -> 10), more than the 50% allowed: not synced"),
        (4, 9, 50, None),  # 125%, but 5 members
        (100, 140, 50, None),
        (100, 160, 50, "size of s moved by 60.0% (100 -> 160), more than the 50% allowed: not synced"),
        (5000, 0, 50, "size of s moved by 100.0% (5,000 -> 0), more than the 50% allowed: not synced"),
        (12, 0, 50, "size of s moved by 100.0% (12 -> 0), more than the 50% allowed: not synced"),
        (12, 3, 50, None),
    ],
)
def test_size_check_floor(previous, members, limit, problem):
    """The size check holds a segment back only when its size moved by at least
    ``history.MIN_SIZE_CHANGE`` members: a real-time segment going from empty to a
    few members is synced in the same cycle."""
    from segments import history

    assert history.MIN_SIZE_CHANGE == 10
    size = history.BuildSize("s", T0, members, 0, members, 0, previous=previous)
    assert watch.size_check_problem(size, limit) == problem


@pytest.mark.parametrize(
    ("error", "least", "most"),
    [
        ("warehouse w.duckdb is busy: another segments command is using it", 0.2, 1.0),  # tried again soon
        ("abandoned_cart.yml:3:1: unknown key 'wher'", 2.0, 10.0),  # a bad spec: the next interval
    ],
)
def test_a_failed_cycle_is_tried_again(specs, warehouse, error, least, most):
    """A cycle that found the warehouse busy (a loader writing) runs again after
    BUSY_RETRY seconds; any other failure waits for the next interval."""
    from segments.errors import SegmentsError

    failing = watch.Watcher(specs, warehouse)
    outcomes = iter([SegmentsError(error), None])
    lines: list[str] = []

    def cycle() -> watch.Cycle:
        failure = next(outcomes)
        if failure is not None:
            raise failure
        return watch.Cycle(T0)

    failing.cycle = cycle  # type: ignore[method-assign]
    started = time.monotonic()
    assert failing.run(2.0, threading.Event(), lines.append, cycles=2) == 2
    assert least <= time.monotonic() - started < most
    assert lines[0] == f"cycle failed: {error}" and lines[1].startswith("as_of ")


def test_plans_since_a_publish_equal_full_plans(specs, warehouse, receiver):
    """A pair a watcher synced in its last cycle is planned from the users who moved
    since (sync.store.Since, one read for all the destination's pairs); the plan is the
    one the whole audience gives, users who moved in another segment included."""
    from segments import pipeline
    from sync.places import open_place
    from sync.store import Store

    at = T0 + dt.timedelta(hours=64)
    arrive(warehouse, at)  # the events up to the cycle's as_of: later ones are the refresh's
    running = watcher(specs, warehouse, receiver, at)
    first = running.cycle()
    assert not first.problems, first.line()
    trusted = dict(running._in_sync)
    assert set(trusted) == {(name, "crm_hook") for name in REALTIME}
    later = at + dt.timedelta(hours=4)
    assert arrive(warehouse, later) > 0
    assert pipeline.build(specs, warehouse, later).refreshed is not None
    project = load_project(specs)
    pairs = [p for p in sync_engine.select_pairs(project) if p.segment in REALTIME]
    settings = sync_engine.Settings(env={"CRM_HOOK_URL": receiver.url, "CRM_HOOK_SECRET": SECRET})
    engine = sync_engine.Engine(project, engines.get("duckdb", warehouse), settings)
    destination = engine._destination("crm_hook", sync_engine.new_session())
    plans: dict[str, tuple[set, set]] = {}
    ordered: dict[str, list[tuple[str, str]]] = {}
    with open_place(engines.get("duckdb", warehouse)) as place, place.hold():
        store = Store(place, project.catalog)
        wanted = {p.key: engine._wanted(destination, p) for p in pairs}
        store.read_moved("crm_hook", [(wanted[key], trusted[(key, "crm_hook")]) for key in wanted])
        for key in wanted:
            for since in (None, trusted[(key, "crm_hook")]):
                summary = store.make_plan("crm_hook", wanted[key], since, "compared")
                rows = set(place.scratch.con.execute("SELECT op, user_id, remote_id FROM compared").fetchall())
                plans.setdefault(key, (set(), set()))[since is not None].update(rows)
                if since is None:
                    full_audience = summary.audience
                    ordered[key] = place.scratch.con.execute("SELECT op, user_id FROM compared ORDER BY rowid").fetchall()
                else:
                    assert summary.audience == full_audience
        # every pair at once, in one table: each pair's rows in the full plan's order
        together = store.plan_since("crm_hook", [(wanted[key], trusted[(key, "crm_hook")]) for key in wanted], "together")
        for key, (start, summary) in zip(wanted, together):
            rows = place.scratch.con.execute(
                f"SELECT op, user_id FROM together WHERE rowid BETWEEN {start} AND {start + summary.adds + summary.removes - 1} "
                "ORDER BY rowid").fetchall()
            assert rows == ordered[key], key
            assert (summary.adds, summary.removes) == (sum(op == "add" for op, _ in rows), sum(op == "remove" for op, _ in rows))
            assert summary.sample_adds == tuple(user for op, user in rows if op == "add")[:5]
            assert summary.sample_removes == tuple(user for op, user in rows if op == "remove")[:5]
    for key, (full, since) in plans.items():
        assert since == full, key
    assert any(full for full, _ in plans.values())  # comparing empty plans proves nothing


def test_new_events_are_noticed_cheaply(specs, warehouse, receiver, monkeypatch):
    """Between cycles the loop looks for new events every POLL seconds: a look with the
    warehouse files unchanged opens nothing; new events are noticed and start a cycle."""
    from watch_fixtures import ANCHOR

    running = watcher(specs, warehouse, receiver, T0 + dt.timedelta(hours=69))
    running.cycle()
    running.clock = lambda: ANCHOR  # the demo data's last events are still to arrive
    running._signature = None
    assert not running._arrived()  # nothing new: the files' signature is kept
    with monkeypatch.context() as patched:
        patched.setattr(running.engine, "connect", lambda **_: pytest.fail("opened the warehouse"))
        assert not running._arrived()
    assert arrive(warehouse, ANCHOR) > 0
    assert running._arrived()


def test_new_events_start_the_next_cycle_at_once(specs, warehouse):
    """The loop starts a cycle as soon as new events are noticed, not an interval later."""
    running = watch.Watcher(specs, warehouse)
    running.cycle = lambda: watch.Cycle(T0)  # type: ignore[method-assign]
    running._mark = watch.Mark(T0, 0, None)
    looks = iter([False, False, True])
    running._arrived = lambda: next(looks)  # type: ignore[method-assign]
    lines: list[str] = []
    started = time.monotonic()
    assert running.run(60.0, threading.Event(), lines.append, cycles=2) == 2
    assert time.monotonic() - started < 5 * watch.POLL + 1.0
    assert len(lines) == 2


def test_a_busy_cycle_keeps_what_was_in_sync(specs, warehouse, receiver, monkeypatch):
    """A cycle that found the warehouse busy (a loader writing) published nothing: the
    next one still plans every pair from the users who moved, not in full."""
    from segments import pipeline
    from segments.errors import SegmentsError
    from watch_fixtures import ANCHOR

    running = watcher(specs, warehouse, receiver, ANCHOR + dt.timedelta(hours=1))
    assert not running.cycle().problems
    trusted = dict(running._in_sync)
    assert trusted

    def busy(*args, **kwargs):
        raise SegmentsError("warehouse w.duckdb is busy: another segments command is using it")

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "build", busy)
        with pytest.raises(SegmentsError):
            running.cycle()
    assert running._in_sync == trusted
    planned: list[tuple[list, dict]] = []
    run = sync_engine.Engine.run
    monkeypatch.setattr(sync_engine.Engine, "run", lambda self, pairs, **kw: planned.append((pairs, kw["since"])) or run(self, pairs, **kw))
    running.clock = lambda: ANCHOR + dt.timedelta(hours=30)  # windows slide: members leave
    cycle = running.cycle()
    assert not cycle.problems and cycle.exited > 0
    [(pairs, since)] = planned
    assert pairs and set(since) == set(pairs)
