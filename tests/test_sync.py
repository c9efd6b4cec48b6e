"""The sync engine against a loopback webhook receiver (SPEC 4 and 4.1).

Faults are injected by the receiver; the client's clock is fake, so retries and rate
limits are asserted on the waits they asked for, and nothing really sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import pytest
import standardwebhooks

from segments.errors import SegmentsError
from sync import engine
from sync.http import Clock, RetryPolicy
from sync.receiver import AudienceReceiver, Fault
from sync_fixtures import (
    CATALOG, SECRET, SyncWarehouse, postgres_database, publish, state, users, webhook_destinations, write_project,
    write_users,
)


class FakeClock(Clock):
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []
        super().__init__(monotonic=lambda: self.now, wall=lambda: self.now, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def receiver():
    with AudienceReceiver(SECRET) as r:
        yield r


@pytest.fixture(params=["duckdb", "postgres"])
def target(request, tmp_path, monkeypatch) -> Iterator[SyncWarehouse]:
    """The warehouse of a test, on each engine the sync keeps its record in (Spark's
    record is a DuckDB file: tests/test_spark_sync.py)."""
    if request.param == "duckdb":
        yield SyncWarehouse("duckdb", tmp_path / "wh.duckdb")
        return
    with postgres_database(request.getfixturevalue("postgres_env"), monkeypatch) as env:
        yield SyncWarehouse("postgres", tmp_path / "unused.duckdb", env)


@pytest.fixture
def world(tmp_path, receiver, target):
    """A warehouse with 200 users, a project syncing `vip` to the receiver in
    batches of 25, and a helper to run the engine on it."""
    project = write_project(
        tmp_path / "specs", webhook_destinations(receiver.url, batch_size=25, fields="[email]"),
        {"vip": "sync:\n  - destination: hook"},
    )
    ids = users(200)
    with target.connect() as con:
        write_users(con, ids)
        publish(con, {"vip": {u: False for u in ids[:120]}})

    class World:
        clock = FakeClock()
        warehouse = target.path if target.target == "duckdb" else target.engine

        def sync(self, **kw):
            settings = engine.Settings(env={}, clock=self.clock, policy=kw.pop("policy", RetryPolicy(attempts=5)))
            return engine.sync(project, self.warehouse, settings=settings, **kw)

        def publish(self, membership, opted_out=frozenset()):
            with target.connect() as con:
                if opted_out:
                    write_users(con, ids, opted_out)
                publish(con, membership)

        def state(self, segment="vip"):
            with target.connect() as con:
                return state(con, "hook", segment)

        def query(self, sql):
            with target.connect() as con:
                return [tuple(row) for row in con.execute(sql).fetchall()]

    World.ids, World.project, World.target = ids, project, target
    return World()


def test_initial_sync_sends_every_member_once_in_batches(world, receiver):
    [outcome] = world.sync()
    assert (outcome.status, outcome.added, outcome.removed, outcome.failed) == ("succeeded", 120, 0, 0)
    assert receiver.audiences["vip"] == set(world.ids[:120])
    deliveries = sorted(receiver.deliveries, key=lambda d: d.added[0]["user_id"])  # two in flight: any order
    assert [len(d.added) for d in deliveries] == [25, 25, 25, 25, 20]
    assert deliveries[0].added[0] == {"user_id": "u00000", "email": "u00000@example.com"}
    assert world.state() == set(world.ids[:120])
    assert world.query("SELECT status, planned_adds, added, batches FROM sync_runs") == [("succeeded", 120, 120, 5)]


def test_a_change_sends_only_the_change(world, receiver):
    world.sync()
    sent = len(receiver.deliveries)
    world.publish({"vip": {u: False for u in world.ids[10:125]}})  # 10 leave, 5 join
    [outcome] = world.sync()
    assert (outcome.added, outcome.removed) == (5, 10)
    new = receiver.deliveries[sent:]
    assert sorted(r["user_id"] for d in new for r in d.added) == world.ids[120:125]
    assert sorted(u for d in new for u in d.removed) == world.ids[:10]
    assert receiver.audiences["vip"] == set(world.ids[10:125]) == world.state()
    [again] = world.sync()
    assert (again.added, again.removed, len(receiver.deliveries)) == (0, 0, sent + 1)


def test_holdout_and_missing_consent_are_never_sent_and_revoked_consent_removes(tmp_path, receiver, world):
    project = write_project(
        tmp_path / "specs2", webhook_destinations(receiver.url, requires="whatsapp_opt_in"),
        {"vip": "sync:\n  - destination: hook"},
    )
    world.project = project
    world.publish({"vip": {u: u in world.ids[:5] for u in world.ids[:20]}}, opted_out={"u00005", "u00006"})
    settings = engine.Settings(env={}, clock=world.clock)
    engine.sync(project, world.warehouse, settings=settings)
    assert receiver.audiences["vip"] == set(world.ids[7:20])  # holdout 0-4 and opted-out 5-6 left out
    world.publish({"vip": {u: u in world.ids[:5] for u in world.ids[:20]}}, opted_out={"u00005", "u00006", "u00010"})
    [outcome] = engine.sync(project, world.warehouse, settings=settings)
    assert (outcome.added, outcome.removed) == (0, 1)
    assert "u00010" not in receiver.audiences["vip"]


def test_members_someone_else_added_are_never_removed(world, receiver):
    receiver.audiences["vip"] = {"someone-elses"}
    world.sync()
    world.publish({"vip": {u: False for u in world.ids[:100]}})
    world.sync()
    assert "someone-elses" in receiver.audiences["vip"]
    assert receiver.audiences["vip"] - {"someone-elses"} == set(world.ids[:100])


def test_mass_removal_is_blocked_unless_forced(world, receiver):
    world.sync()
    sent = receiver.requests
    world.publish({"vip": {u: False for u in world.ids[:50]}})  # would remove 70 of 120
    [blocked] = world.sync()
    assert blocked.status == "blocked" and "max_remove_pct 50" in blocked.message
    assert receiver.requests == sent and world.state() == set(world.ids[:120])
    [forced] = world.sync(force=True)
    assert (forced.status, forced.removed) == ("succeeded", 70)
    assert receiver.audiences["vip"] == set(world.ids[:50])


def test_sync_memory_limit_comes_from_the_environment(world, receiver):
    settings = lambda limit: engine.Settings(env={"SEGMENTS_SYNC_MEMORY_LIMIT": limit}, clock=world.clock)  # noqa: E731
    with pytest.raises(SegmentsError, match="SEGMENTS_SYNC_MEMORY_LIMIT='plenty'"):
        engine.sync(world.project, world.warehouse, settings=settings("plenty"))
    assert receiver.requests == 0
    [outcome] = engine.sync(world.project, world.warehouse, settings=settings("32MB"))
    assert (outcome.status, outcome.added) == ("succeeded", 120)


def test_dry_run_sends_and_records_nothing(world, receiver):
    [planned] = world.sync(dry_run=True)
    assert (planned.status, planned.plan.adds, planned.plan.removes) == ("planned", 120, 0)
    assert planned.plan.sample_adds == tuple(world.ids[:5])
    assert receiver.requests == 0
    assert world.query("SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE 'sync_%'") == [(0,)]
    line = engine.summary_line(planned)
    assert "would add 120, remove 0" in line and "@" not in line  # ids only, never emails


FAULTS = {
    # name: (fault on request numbers, waits the client must have asked for at least)
    "429 with Retry-After": ({2: Fault(429, {"Retry-After": "7"})}, [7.0]),
    "429 with X-RateLimit-Reset": ({2: Fault(429, {"X-RateLimit-Reset": "1800000030"})}, [30.0]),
    "burst of 5xx": ({2: Fault(503), 3: Fault(500), 4: Fault(502)}, []),
    "connection reset": ({3: Fault(drop=True)}, []),
}


@pytest.mark.parametrize("faults, waits", FAULTS.values(), ids=FAULTS.keys())
def test_transient_faults_are_retried_and_the_audience_converges(world, receiver, faults, waits):
    receiver.fault = lambda number, headers: faults.get(number)
    [outcome] = world.sync(policy=RetryPolicy(attempts=5, initial_wait=1, max_wait=60, jitter=0))
    assert (outcome.status, outcome.added) == ("succeeded", 120)
    assert receiver.audiences["vip"] == set(world.ids[:120]) == world.state()
    assert len(world.clock.slept) >= len(faults)
    for wait in waits:
        assert max(world.clock.slept) >= wait


def test_a_retried_batch_keeps_its_webhook_id(world, receiver):
    ids_seen: list[str] = []

    def fault(number, headers):
        ids_seen.append(headers["webhook-id"])
        return Fault(500) if number == 1 else None

    receiver.fault = fault
    world.sync()
    assert ids_seen.count(ids_seen[0]) == 2 and len(ids_seen) == 6 and len(set(ids_seen)) == 5


def test_signatures_verify_with_the_standard_webhooks_library(world):
    from sync.destinations.batches import Batch, Record
    from sync.destinations.webhook import WebhookDestination, body
    from sync.http import HttpClient, new_session

    hook = WebhookDestination("hook", {"url": "http://127.0.0.1:9/", "secret": SECRET, "fields": []}, HttpClient(new_session()))
    batch = Batch("hook", "vip", "sync-1", "msg_1", (Record("u1", {"email": "a@example.com"}),), (Record("u9"),))
    payload = body(batch)
    headers = hook.headers(batch.batch_id, payload)
    assert json.loads(payload) == {"segment": "vip", "destination": "hook", "sync_id": "sync-1",
                                   "added": [{"user_id": "u1", "email": "a@example.com"}], "removed": [{"user_id": "u9"}]}
    assert headers["webhook-id"] == "msg_1" and headers["Content-Type"] == "application/json"
    verifier = standardwebhooks.Webhook(SECRET)
    assert verifier.verify(payload, headers) == json.loads(payload)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier.verify(payload.replace(b"u9", b"u8"), headers)


def test_a_permanently_refused_batch_is_logged_and_the_sync_goes_on(world, receiver):
    receiver.fault = lambda number, headers: Fault(400) if number == 2 else None
    [outcome] = world.sync()
    assert (outcome.added, outcome.failed) == (95, 25)
    errors = world.query("SELECT operation, status_code, COUNT(*) FROM sync_errors GROUP BY operation, status_code")
    assert errors == [("add", 400, 25)]
    [message] = world.query("SELECT DISTINCT message FROM sync_errors")
    assert "@" not in message[0] and SECRET not in message[0]
    receiver.fault = None
    [retry] = world.sync()
    assert (retry.added, retry.failed) == (25, 0)
    assert receiver.audiences["vip"] == set(world.ids[:120]) == world.state()


def test_a_destination_that_stays_down_stops_and_the_rerun_converges(world, receiver):
    receiver.fault = lambda number, headers: Fault(503) if number >= 3 else None
    [outcome] = world.sync(policy=RetryPolicy(attempts=3, jitter=0))
    assert outcome.status == "failed" and "503" in outcome.message
    assert world.state() == set(world.ids[:50])  # the two acknowledged batches only
    receiver.fault = None
    [rerun] = world.sync()
    assert (rerun.status, rerun.added) == ("succeeded", 70)
    assert receiver.audiences["vip"] == set(world.ids[:120])


def test_bad_configuration_sends_nothing(tmp_path, receiver, world):
    project = write_project(tmp_path / "s", webhook_destinations("${HOOK_URL}"), {"vip": "sync:\n  - destination: hook"})
    with pytest.raises(SegmentsError, match="environment variable HOOK_URL is not set"):
        engine.sync(project, world.warehouse, settings=engine.Settings(env={}))
    assert receiver.requests == 0


def test_secrets_never_appear_in_errors(tmp_path, world):
    project = write_project(tmp_path / "s", webhook_destinations("http://127.0.0.1:9/x").replace(SECRET, "${S}"),
                            {"vip": "sync:\n  - destination: hook"})
    with pytest.raises(SegmentsError) as error:
        engine.sync(project, world.warehouse, settings=engine.Settings(env={"S": "whsec_not*base64"}))
    assert "whsec_not" not in str(error.value)


def test_filters_name_something(world):
    with pytest.raises(SegmentsError, match="no destination named 'nope'"):
        world.sync(destination="nope")
    with pytest.raises(SegmentsError, match="no segment named 'nope'"):
        world.sync(segment="nope")


def test_two_syncs_of_one_destination_never_run_at_once(world):
    from sync.places import open_place

    with open_place(world.target.engine) as place, place.lock("hook"):
        with pytest.raises(SegmentsError, match="another sync of destination hook is running"):
            world.sync()
    assert world.sync()[0].status == "succeeded"  # released with its holder


def test_unbuilt_segments_are_refused(world, receiver):
    world.publish({"other": {}})
    with pytest.raises(SegmentsError, match="not in the last build: vip"):
        world.sync()
    assert receiver.requests == 0


def test_rate_limit_paces_requests(world, receiver, tmp_path):
    project = write_project(tmp_path / "r", webhook_destinations(receiver.url, batch_size=10, rate_limit=2, concurrency=1),
                            {"vip": "sync:\n  - destination: hook"})
    engine.sync(project, world.warehouse, settings=engine.Settings(env={}, clock=world.clock))
    assert receiver.requests == 12
    assert sum(world.clock.slept) == pytest.approx((12 - 1) / 2)  # 2 per second after the first


def test_csv_destination_writes_change_files(tmp_path, world):
    out = tmp_path / "out"
    project = write_project(tmp_path / "c", f"destinations:\n  files:\n    type: csv\n    path: {out}\n    fields: [email]\n",
                            {"vip": "sync:\n  - destination: files"})
    [first] = engine.sync(project, world.warehouse, settings=engine.Settings(env={}))
    world.publish({"vip": {u: False for u in world.ids[5:120]}})
    [second] = engine.sync(project, world.warehouse, settings=engine.Settings(env={}))
    added = (out / "vip" / f"{first.sync_id}_added.csv").read_text().splitlines()
    removed = (out / "vip" / f"{second.sync_id}_removed.csv").read_text().splitlines()
    assert added[:2] == ["user_id,email", "u00000,u00000@example.com"] and len(added) == 121
    assert removed == ["user_id", *world.ids[:5]]
    assert not (out / "vip" / f"{second.sync_id}_added.csv").exists()


def test_sync_tables_are_queryable(world, receiver):
    receiver.fault = lambda number, headers: Fault(422) if number == 1 else None
    world.sync()
    runs = world.query("SELECT destination, segment_name, status, added, failed FROM sync_runs")
    assert runs == [("hook", "vip", "succeeded", 95, 25)]
    assert world.query("SELECT COUNT(*) FROM sync_errors WHERE status_code = 422") == [(25,)]


def test_dry_run_plan_is_what_the_sync_then_does(world):
    world.sync()
    world.publish({"vip": {u: False for u in world.ids[3:121]}})
    [plan] = world.sync(dry_run=True)
    [done] = world.sync()
    assert (plan.plan.adds, plan.plan.removes) == (done.added, done.removed) == (1, 3)


def test_an_applied_but_unacknowledged_batch_repeats_with_its_id(world, receiver, tmp_path):
    """The receiver applies batch 3 but its answer is lost: the rerun sends it again
    with the same webhook-id, and the receiver drops the repeat."""
    project = write_project(tmp_path / "one", webhook_destinations(receiver.url, batch_size=25, concurrency=1),
                            {"vip": "sync:\n  - destination: hook"})
    run = lambda policy: engine.sync(project, world.warehouse, settings=engine.Settings(env={}, clock=world.clock, policy=policy))  # noqa: E731
    receiver.fault = lambda number, headers: Fault(503, apply=True) if number == 3 else None
    [failed] = run(RetryPolicy(attempts=1))
    assert failed.status == "failed" and world.state() == set(world.ids[:50])
    assert receiver.audiences["vip"] == set(world.ids[:75])  # applied, never acknowledged
    receiver.fault = None
    [rerun] = run(RetryPolicy())
    assert (rerun.added, receiver.repeats) == (70, 1)
    assert receiver.audiences["vip"] == set(world.ids[:120]) == world.state()


def test_cli_plans_syncs_and_exits_1_when_blocked(world, receiver, capsys):
    from segments.cli import main

    argv = ["sync", "--specs", str(world.project.specs_dir), *world.target.cli_args]
    assert main(argv + ["--dry-run"]) == 0
    assert "vip -> hook: would add 120, remove 0 (holds 0); add e.g. u00000" in capsys.readouterr().out
    assert receiver.requests == 0
    assert main(argv) == 0
    world.publish({"vip": {}})
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "vip -> hook: blocked" in captured.out and "rerun with --force" in captured.out
    assert "error: 1 of 1 sync(s) did not complete" in captured.err and "Traceback" not in captured.err
    assert main(argv + ["--force"]) == 0
    assert receiver.audiences["vip"] == set()
    assert main(argv + ["--destination", "nope"]) == 1
    assert "no destination named 'nope' (known: hook)" in capsys.readouterr().err


def test_validate_checks_destination_options_without_secrets(tmp_path, capsys):
    from segments.cli import main

    specs = tmp_path / "v"
    write_project(specs, "destinations:\n  hook:\n    type: webhook\n    secret: ${UNSET_SECRET}\n    colour: blue\n",
                  {"vip": "sync:\n  - destination: hook\n    tag: x"})
    assert main(["validate", "--specs", str(specs)]) == 1
    err = capsys.readouterr().err
    assert "destination hook (" in err and "unknown option 'colour'" in err and "option 'url' is required" in err
    assert "vip.yml: sync to hook: unknown option 'tag'" in err
    assert "UNSET_SECRET" not in err  # secrets are not needed to validate


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_the_destination_instead_of_failing_every_record(world, receiver, status):
    receiver.fault = lambda number, headers: Fault(status)
    [outcome] = world.sync()
    assert outcome.status == "failed" and f"answered {status}" in outcome.message
    assert receiver.requests <= 2  # the batches already in flight, nothing after
    assert world.query("SELECT COUNT(*) FROM sync_errors") == [(0,)]
    assert world.state() == set()


def _plan_batches(project, warehouse, fields, size, encode, state=()):
    from segments import engines
    from sync.places import open_place
    from sync.store import Store, Wanted

    with open_place(engines.get("duckdb", warehouse)) as place:
        store = Store(place, project.catalog)
        store.ensure_tables()
        with duckdb.connect(str(warehouse)) as con:
            for user in state:
                con.execute("INSERT INTO main.sync_state VALUES ('hook', 'vip', ?, ?, now(), 's0')", [user, f"r-{user}"])
        plan = store.make_plan("hook", Wanted("vip", fields))
        batches = [b for b, _, _ in store.batches("hook", "vip", "s1", fields, size, plan.adds + plan.removes, encode)]
        records = [(tuple(b.added), tuple(b.removed)) for b in batches]  # read while the plan is there
    with duckdb.connect(str(warehouse)) as con:
        con.execute("DELETE FROM sync_state")
    return batches, records


TYPED_CATALOG = CATALOG.replace(  # three more attributes, of three more column types
    "    whatsapp_opt_in: {type: boolean}\n",
    "    whatsapp_opt_in: {type: boolean}\n    age: {type: number}\n    joined: {type: timestamp}\n    score: {type: number}\n",
)


@pytest.fixture
def typed(tmp_path):
    """Users whose attributes have every kind of value a JSON encoder can trip on."""
    from segments.spec.parse import load_project

    specs = tmp_path / "specs"
    write_project(specs, webhook_destinations("http://127.0.0.1:9/"), {"vip": "sync:\n  - destination: hook"})
    (specs / "_catalog.yml").write_text(TYPED_CATALOG)
    warehouse = tmp_path / "wh.duckdb"
    ids = users(40)
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, ids)
        con.execute("ALTER TABLE raw.users ADD COLUMN age INTEGER")
        con.execute("ALTER TABLE raw.users ADD COLUMN joined DATE")
        con.execute("ALTER TABLE raw.users ADD COLUMN score DOUBLE")
        con.execute("UPDATE raw.users SET age = CAST(substr(user_id, 2) AS INTEGER) - 20, joined = DATE '2026-01-15', "
                    "score = 0.1 * CAST(substr(user_id, 2) AS INTEGER)")
        con.execute("UPDATE raw.users SET email = 'q\"b\\\\s/é€😀\n\t' || chr(1) WHERE user_id = 'u00003'")
        con.execute("UPDATE raw.users SET phone = NULL, age = NULL WHERE user_id = 'u00004'")
        publish(con, {"vip": {u: False for u in ids[:30]}})
    return load_project(specs), warehouse, ids


@pytest.mark.parametrize("encode_rows", [3, 10_000])  # a batch encoded in several queries, or in one
def test_batches_the_warehouse_encodes_are_the_bytes_python_would_send(typed, monkeypatch, encode_rows):
    from sync import store
    from sync.destinations.webhook import body

    monkeypatch.setattr(store, "ENCODE_ROWS", encode_rows)
    project, warehouse, ids = typed
    fields = ("email", "phone", "whatsapp_opt_in", "age", "joined")
    gone = ids[35:]  # in the state, not in the segment: removes
    encoded, encoded_records = _plan_batches(project, warehouse, fields, 7, encode=True, state=gone)
    python, python_records = _plan_batches(project, warehouse, fields, 7, encode=False, state=gone)
    assert all(b.encoded is not None for b in encoded) and all(b.encoded is None for b in python)
    assert [body(b) for b in encoded] == [body(b) for b in python]
    assert [b.batch_id for b in encoded] == [b.batch_id for b in python]
    assert [(len(b.added), len(b.removed)) for b in encoded] == [(len(b.added), len(b.removed)) for b in python]
    assert encoded_records == python_records  # read on demand, the same records
    added = {a["user_id"]: a for a in json.loads(body(encoded[0]))["added"]}
    assert added["u00003"]["email"].startswith('q"b\\') and added["u00003"]["email"].endswith("/é€😀\n\t\x01")
    assert added["u00004"]["phone"] is None and added["u00004"]["age"] is None and added["u00004"]["joined"] == "2026-01-15"


def test_fields_json_would_spell_differently_are_encoded_by_python(typed):
    project, warehouse, _ = typed
    batches, _ = _plan_batches(project, warehouse, ("email", "score"), 10, encode=True)
    assert batches and all(b.encoded is None for b in batches)


def test_lazy_records_are_read_on_the_planning_thread_only():
    import threading

    from sync.destinations.batches import LazyRecords, Record

    records = LazyRecords(1, lambda: (Record("u1"),))
    errors: list[Exception] = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, list, records).value))
    thread.start()
    thread.join()
    assert len(records) == 1 and "thread that planned it" in str(errors[0])
    assert list(records) == [Record("u1")]


def test_a_csv_destination_that_cannot_write_is_recorded_like_any_other(tmp_path, world, receiver):
    """A sink error without HTTP: the csv pair fails with its reason, its run is
    recorded failed (never left running), and the other destination still syncs."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the csv destination wants a folder")
    destinations = webhook_destinations(receiver.url) + f"  files:\n    type: csv\n    path: {blocked}\n"
    project = write_project(tmp_path / "both", destinations,
                            {"vip": "sync:\n  - destination: files\n  - destination: hook"})
    outcomes = engine.sync(project, world.warehouse, settings=engine.Settings(env={}, clock=world.clock))
    by_destination = {o.destination: o for o in outcomes}
    assert by_destination["files"].status == "failed" and "cannot write" in by_destination["files"].message
    assert (by_destination["hook"].status, by_destination["hook"].added) == ("succeeded", 120)
    runs = dict(world.query("SELECT destination, status FROM sync_runs"))
    assert runs == {"files": "failed", "hook": "succeeded"}
