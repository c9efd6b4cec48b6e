"""The Dagster code location: definitions, refreshes in process on demo data, gating.

The demo warehouse is generated and refreshed once, by the full refresh job; every test
that changes data works on a copy of it. Gating is shown with assets downstream of
each segment: a consumer that counts the members a campaign could reach, and sync
assets whose engine is a recorder (the sync engine is not part of this package).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import doctest
import importlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    build_schedule_context,
    define_asset_job,
)
from sqlglot import exp

from segments import demo_data, paths
from segments.compiler import models as md
from segments.spec.parse import load_project

AS_OF = dt.datetime(2026, 1, 15)
TICK = dt.datetime(2026, 1, 15, 1)  # the hourly schedule's next tick
HOURLY = "0 * * * *"
DESTINATION = "recorded"  # a test-only destination whose sync is a Recorder
SYNCED = ("vip_upload", "win_back")  # the segments given a (recorded) sync asset
# Example destinations the demo serves locally; the platforms' need accounts, so their
# sync assets fail in these tests, each saying which setting is missing.
LOCAL_DESTINATIONS = ("crm_hook", "whatsapp_hook", "exports")
MODULES = ("definitions", "assets", "checks", "gating", "realtime", "resources", "schedules", "sync_assets", "translator")


@pytest.fixture(scope="module")
def code(dbt_manifest) -> SimpleNamespace:
    """The code location's modules, imported once the manifest exists."""
    return SimpleNamespace(**{name: importlib.import_module(f"orchestration.{name}") for name in MODULES})


def reachable(segment: str):
    """A consumer downstream of one segment: how many published members may be messaged."""

    def compute(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.session(read_only=True) as session:
            members = session.engine.table(md.MEMBERSHIP)
            mine = exp.and_(exp.column("segment_name").eq(exp.convert(segment)), exp.not_(exp.column("is_holdout")))
            [(count,)] = session.rows(exp.select(exp.Count(this=exp.Star())).from_(members).where(mine))
        return MaterializeResult(metadata={"reachable": count})

    return compute


class Recorder:
    """Stands in for the sync engine: records each call, reports what it was asked to push."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, context: AssetExecutionContext, segment: str, destination: str) -> dict[str, int]:
        self.calls.append((segment, destination))
        compute = reachable(segment)
        return {"added": compute(context).metadata["reachable"], "removed": 0, "failed": 0}


def gated_defs(code: SimpleNamespace, recorder: Recorder) -> Definitions:
    """The code location plus a consumer per segment and sync assets for SYNCED."""
    consumers = [
        code.gating.gated_asset(
            node, AssetKey(["reachable", node.name]), reachable(node.name),
            description="members a campaign could reach", required_resource_keys={"warehouse"},
        )
        for node in code.assets.SEGMENTS
    ]
    synced = [dataclasses.replace(n, destinations=(DESTINATION,)) for n in code.assets.SEGMENTS if n.name in SYNCED]
    consumers += code.sync_assets.sync_assets(synced, recorder)
    win_back = AssetKey(["seg_win_back"])
    checks_only = define_asset_job(  # win_back's data checks and its consumers, nothing built
        "win_back_checks",
        selection=AssetSelection.checks(*(AssetCheckKey(win_back, n) for n in ("size_change", "membership_schema")))
        | (AssetSelection.tag(code.translator.SEGMENT_TAG, "win_back") - AssetSelection.assets(win_back)),
    )
    return Definitions.merge(code.definitions.defs, Definitions(assets=consumers, jobs=[checks_only]))


def run(defs: Definitions, job: str, warehouse: Path, as_of: dt.datetime, **tags: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WAREHOUSE_ENV, str(warehouse))
        mp.setenv("SEGMENTS_TARGET", "duckdb")
        from orchestration.assets import AS_OF_TAG, format_as_of

        with DagsterInstance.ephemeral() as instance:
            return defs.resolve_job_def(job).execute_in_process(
                instance=instance, tags={AS_OF_TAG: format_as_of(as_of), **tags}, raise_on_error=False
            )


def materialized(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def check_results(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def published(warehouse: Path) -> dict[str, tuple[int, dt.datetime]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            f"SELECT segment_name, COUNT(*), MAX(as_of) FROM main.{md.MEMBERSHIP} GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    return {name: (count, as_of) for name, count, as_of in rows}


@pytest.fixture(scope="module")
def refreshed(code, tmp_path_factory):
    """Demo data refreshed in process by the full refresh job at AS_OF, the example
    webhook destinations pointed at a loopback receiver for the whole module."""
    from sync.receiver import AudienceReceiver
    from sync_fixtures import SECRET

    warehouse = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    demo_data.write_duckdb(demo_data.generate(users=1000, anchor=AS_OF), con)
    con.close()
    recorder = Recorder()
    defs = gated_defs(code, recorder)
    with AudienceReceiver(SECRET) as receiver, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_HOOK_URL", receiver.url)
        mp.setenv("CRM_HOOK_SECRET", SECRET)
        mp.setenv("SEGMENTS_EXPORT_DIR", str(tmp_path_factory.mktemp("exports")))
        result = run(defs, code.schedules.FULL_REFRESH_JOB, warehouse, AS_OF)
        yield SimpleNamespace(warehouse=warehouse, defs=defs, result=result, recorder=recorder, receiver=receiver)


def failed_steps(result) -> dict[str, str]:
    return {e.step_key: e.event_specific_data.error.message for e in result.get_step_failure_events()}


def assert_only_platform_syncs_failed(code, result) -> None:
    """Every failed step is a sync to a platform whose account settings the tests lack."""
    failures = failed_steps(result)
    platform_steps = {f"sync__{d}__{n.name}" for n in code.assets.SEGMENTS for d in n.destinations
                      if d not in LOCAL_DESTINATIONS}
    assert set(failures) <= platform_steps, set(failures) - platform_steps
    assert all("environment variable" in message and "is not set" in message for message in failures.values())


def copy_of(refreshed: SimpleNamespace, tmp_path: Path) -> Path:
    target = tmp_path / "warehouse.duckdb"
    shutil.copy(refreshed.warehouse, target)
    return target


# ---- definitions -----------------------------------------------------------------------


def test_definitions_load(code):
    Definitions.validate_loadable(code.definitions.defs)


def test_every_segment_is_an_asset_with_its_spec_sql_and_owner(code):
    project = load_project(paths.SPECS_DIR)
    graph = code.definitions.defs.resolve_asset_graph()
    for name in project.segment_names():
        spec = project.spec(name)
        node = graph.get(AssetKey([md.segment_model_name(name)]))
        sql = (paths.DBT_PROJECT_DIR / "models" / "segments" / f"{md.segment_model_name(name)}.sql").read_text()
        assert node.group_name == code.translator.slug(spec.owner), name
        assert node.owners == [f"team:{spec.owner}"]
        assert node.description.startswith(" ".join((spec.description or "").split()[:5]))
        assert node.metadata["segments/spec"].value == str(spec.path.relative_to(paths.ROOT))
        assert sql.strip() in node.metadata["segments/sql"].value
        assert node.metadata["segments/refresh"] == spec.refresh
        assert node.tags[code.translator.SEGMENT_TAG] == name


def test_each_segment_has_its_dbt_tests_and_data_checks(code):
    graph = code.definitions.defs.resolve_asset_graph()
    for node in code.assets.SEGMENTS:
        checks = {key.name for key in graph.get_check_keys_for_assets({node.key})}
        # keys are dbt-tested once, on segment_membership (every segment is a part of it)
        assert {"size_change", "membership_schema"} <= checks, node.name
    membership = {key.name for key in graph.get_check_keys_for_assets({AssetKey([md.MEMBERSHIP])})}
    assert any(name.startswith("segments_unique_together") for name in membership), membership
    inputs = {key.name for key in graph.get_check_keys_for_assets(set(code.definitions.INPUTS))}
    assert inputs == {"input_schema"}


def test_orchestration_doctests(code):
    for name in MODULES:
        failures, _ = doctest.testmod(getattr(code, name))
        assert failures == 0, name


# ---- schedules -------------------------------------------------------------------------


def test_one_schedule_per_cron_selecting_its_segments(code):
    project = load_project(paths.SPECS_DIR)
    defs = code.definitions.defs
    graph = defs.resolve_asset_graph()
    by_cron: dict[str, list[str]] = {}
    for name in project.segment_names():
        by_cron.setdefault(project.spec(name).refresh, []).append(name)
    schedules = {s.cron_schedule: s for s in defs.schedules}
    assert set(schedules) == set(by_cron)
    for cron, names in by_cron.items():
        selected = schedules[cron].job.selection.resolve(graph)
        segments = {key.path[-1] for key in selected if key.path[-1].startswith("seg_")}
        # the due ones: the membership they are views of evaluates every rule in one pass
        assert segments == {md.segment_model_name(n) for n in names}, cron
        assert AssetKey([md.MEMBERSHIP]) in selected
        assert schedules[cron].execution_timezone == "UTC"


@pytest.mark.parametrize(
    "tick, as_of",
    [
        (dt.datetime(2026, 1, 15, 6, tzinfo=dt.timezone.utc), "2026-01-15 06:00:00"),
        (dt.datetime(2026, 1, 15, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=1, minutes=30))), "2026-01-15 06:00:00"),
    ],
)
def test_a_tick_runs_at_its_own_time(code, tick, as_of):
    for schedule in code.definitions.defs.schedules:
        (request,) = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
        assert request.tags[code.assets.AS_OF_TAG] == as_of
        assert request.run_key == as_of  # the same tick twice launches one run


# ---- a full refresh ----------------------------------------------------------------------


def test_full_refresh_builds_checks_publishes_and_runs_consumers(code, refreshed):
    result = refreshed.result
    assert_only_platform_syncs_failed(code, result)
    assert len(failed_steps(result)) == sum(d not in LOCAL_DESTINATIONS for n in code.assets.SEGMENTS for d in n.destinations)
    sizes = published(refreshed.warehouse)
    names = [node.name for node in code.assets.SEGMENTS]
    assert {name: as_of for name, (_, as_of) in sizes.items()} == {name: AS_OF for name in sizes}
    outputs = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    for node in code.assets.SEGMENTS:
        assert outputs[node.key]["size"].value == sizes.get(node.name, (0,))[0], node.name
        assert outputs[node.key]["as_of"].value == "2026-01-15 00:00:00"
    assert {f"reachable/{n}" for n in names} <= materialized(result)
    assert {f"sync/{DESTINATION}/{n}" for n in SYNCED} <= materialized(result)
    outcomes = check_results(result)
    assert all(e.passed for e in outcomes.values()), [k for k, e in outcomes.items() if not e.passed]
    assert {(f"seg_{n}", "size_change") for n in names} <= set(outcomes)
    assert any(key == md.MEMBERSHIP and check.startswith("segments_unique_together") for key, check in outcomes)  # dbt's tests ran as checks


def test_sync_assets_report_counts_and_run_in_their_destinations_pool(code, refreshed):
    for name in SYNCED:
        key = code.sync_assets.sync_asset_key(name, DESTINATION)
        (event,) = [e for e in refreshed.result.get_asset_materialization_events() if e.asset_key == key]
        metadata = event.materialization.metadata
        assert {k: metadata[k].value for k in ("removed", "failed")} == {"removed": 0, "failed": 0}
        assert metadata["added"].value > 0
        assert refreshed.defs.resolve_assets_def(key).op.pool == code.sync_assets.destination_pool(DESTINATION)
    assert sorted(refreshed.recorder.calls) == [(n, DESTINATION) for n in SYNCED]


def test_sync_assets_push_each_segment_to_its_destinations(code, refreshed):
    with duckdb.connect(str(refreshed.warehouse), read_only=True) as con:
        rows = con.execute(f"SELECT segment_name, user_id FROM main.{md.MEMBERSHIP} WHERE NOT is_holdout").fetchall()
        opted_in = {r[0] for r in con.execute("SELECT user_id FROM raw.users WHERE whatsapp_opt_in").fetchall()}
    members: dict[str, set[str]] = {}
    for segment, user_id in rows:
        members.setdefault(segment, set()).add(user_id)
    hooked = {(n.name, d) for n in code.assets.SEGMENTS for d in n.destinations if d.endswith("_hook")}
    wanted = {
        name: members.get(name, set()) & (opted_in if destination == "whatsapp_hook" else members.get(name, set()))
        for name, destination in hooked
    }
    assert refreshed.receiver.audiences == {name: audience for name, audience in wanted.items() if audience}
    for name, destination in hooked:
        key = code.sync_assets.sync_asset_key(name, destination)
        (event,) = [e for e in refreshed.result.get_asset_materialization_events() if e.asset_key == key]
        assert event.materialization.metadata["added"].value == len(wanted[name])
    assert refreshed.receiver.bad_signatures == 0


def test_history_records_each_build(refreshed, tmp_path, code):
    warehouse = copy_of(refreshed, tmp_path)
    con = duckdb.connect(str(warehouse))
    con.execute("DELETE FROM raw.events WHERE event_name = 'cart_add'")
    con.close()
    result = run(refreshed.defs, code.schedules.FULL_REFRESH_JOB, warehouse, AS_OF)
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(["seg_abandoned_cart"])]
    before = published(refreshed.warehouse)["abandoned_cart"][0]
    assert event.materialization.metadata["size"].value == 0
    assert event.materialization.metadata["exited"].value == before
    con = duckdb.connect(str(warehouse), read_only=True)
    exits = con.execute(
        "SELECT COUNT(*) FROM main.segment_membership_history WHERE segment_name = 'abandoned_cart' AND change = 'exited'"
    ).fetchone()
    con.close()
    assert exits == (before,)


# ---- a scheduled refresh -------------------------------------------------------------------


def test_scheduled_refresh_rebuilds_what_is_due_at_the_tick(code, refreshed, tmp_path):
    warehouse = copy_of(refreshed, tmp_path)
    (schedule,) = [s for s in refreshed.defs.schedules if s.cron_schedule == HOURLY]
    tick = TICK.replace(tzinfo=dt.timezone.utc)
    (request,) = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
    result = run(refreshed.defs, schedule.job_name, warehouse, AS_OF, **request.tags)
    assert_only_platform_syncs_failed(code, result)
    due = {node.name for node in code.assets.SEGMENTS if node.refresh == HOURLY}
    after = published(warehouse)
    # one pass evaluates every segment at the tick; the cron says whose consumers run
    assert {name for name, (_, as_of) in after.items() if as_of == TICK} == set(after)
    ran = {name.removeprefix("reachable/") for name in materialized(result) if name.startswith("reachable/")}
    assert ran == due


# ---- gating ----------------------------------------------------------------------------


def test_a_size_jump_blocks_only_that_segments_consumers(code, refreshed, tmp_path):
    warehouse = copy_of(refreshed, tmp_path)
    vip_list = paths.SPECS_DIR / "uploads" / "vip_list.csv"
    con = duckdb.connect(str(warehouse))
    con.execute(  # the VIPs leave: the uploaded list matches nobody any more
        "DELETE FROM raw.users WHERE user_id IN (SELECT trim(user_id) FROM read_csv(?, header = true, all_varchar = true))",
        [str(vip_list)],
    )
    con.close()
    result = run(refreshed.defs, code.schedules.FULL_REFRESH_JOB, warehouse, AS_OF)
    assert not result.success
    failed = {key for key, e in check_results(result).items() if not e.passed}
    assert failed == {("seg_vip_upload", "size_change")}
    assert "syncs of vip_upload wait" in check_results(result)[("seg_vip_upload", "size_change")].description
    names = {node.name for node in code.assets.SEGMENTS}
    ran = materialized(result)
    assert {f"reachable/{n}" for n in names} & ran == {f"reachable/{n}" for n in names - {"vip_upload"}}
    assert f"sync/{DESTINATION}/vip_upload" not in ran
    assert f"sync/{DESTINATION}/win_back" in ran
    assert published(warehouse).get("vip_upload") is None  # published, not synced


BAD_INPUTS = [
    ("duplicate_key", "INSERT INTO raw.users SELECT * FROM raw.users LIMIT 1", "raw/users", "user_id: duplicate values"),
    ("missing_key", "UPDATE raw.users SET user_id = NULL WHERE user_id = (SELECT MIN(user_id) FROM raw.users)",
     "raw/users", "user_id: missing values"),
    ("text_in_number_column", "ALTER TABLE raw.users ALTER lifetime_value TYPE VARCHAR",
     "raw/users", "lifetime_value: values are not of type number"),
    ("missing_column", "ALTER TABLE raw.users DROP COLUMN city", "raw/users", "city: missing column"),
    ("future_event", "UPDATE raw.events SET occurred_at = TIMESTAMP '2999-01-01' WHERE event_id = 1",
     "raw/events", "occurred_at: timestamps after"),
    ("empty_event_name", "UPDATE raw.events SET event_name = ' ' WHERE event_id = 1", "raw/events",
     "event_name: empty event names"),
    ("event_without_time", "UPDATE raw.events SET occurred_at = NULL WHERE event_id = 1", "raw/events",
     "occurred_at: missing values"),
    ("missing_table", "DROP TABLE raw.events", "raw/events", "raw.events does not exist"),
]


@pytest.mark.parametrize("case, sql, table, problem", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_blocks_the_build_and_every_consumer(code, refreshed, tmp_path, case, sql, table, problem):
    warehouse = copy_of(refreshed, tmp_path)
    con = duckdb.connect(str(warehouse))
    con.execute(sql)
    con.close()
    result = run(refreshed.defs, code.schedules.FULL_REFRESH_JOB, warehouse, TICK)
    assert not result.success
    outcomes = check_results(result)
    failed = {key for key, e in outcomes.items() if not e.passed}
    assert failed == {(table, "input_schema")}
    assert problem in outcomes[(table, "input_schema")].description
    assert materialized(result) == set()  # nothing built, published or synced
    assert published(warehouse) == published(refreshed.warehouse)


def test_a_failing_dbt_test_publishes_nothing(code, refreshed, tmp_path):
    warehouse = copy_of(refreshed, tmp_path)
    con = duckdb.connect(str(warehouse))
    con.execute("INSERT INTO raw.users SELECT * FROM raw.users LIMIT 1")  # stg_users' key is not unique
    con.close()
    defs = Definitions.merge(refreshed.defs, Definitions(jobs=[define_asset_job(  # dbt alone, no input check
        "dbt_only", selection=AssetSelection.assets(code.assets.segments_build)
    )]))
    result = run(defs, "dbt_only", warehouse, TICK)
    assert not result.success
    failed = {key for key, e in check_results(result).items() if not e.passed}
    assert ("stg_users", "unique_stg_users_user_id") in failed
    assert materialized(result) == set()
    assert published(warehouse) == published(refreshed.warehouse)


def test_the_warehouse_path_must_be_absolute(code):
    with pytest.raises(ValueError, match="must be an absolute path"):
        code.resources.Warehouse(path="warehouse.duckdb").setup_for_execution(None)


@pytest.mark.parametrize(
    "tamper, failed, ran",
    [
        (None, [], {"reachable/win_back", f"sync/{DESTINATION}/win_back", "sync/crm_hook/win_back", "sync/exports/win_back"}),
        (f"UPDATE main.{md.MEMBERSHIP} SET is_holdout = TRUE WHERE segment_name = 'win_back'",
         ["holdout members in a segment without holdout"], set()),
        (f"INSERT INTO main.{md.MEMBERSHIP} SELECT * FROM main.{md.MEMBERSHIP} WHERE segment_name = 'win_back' LIMIT 1",
         ["user_id: duplicate values"], set()),
    ],
    ids=["untouched", "holdout_without_holdout", "duplicate_member"],
)
def test_published_membership_check_gates_its_consumers(refreshed, tmp_path, tamper, failed, ran):
    warehouse = copy_of(refreshed, tmp_path)
    if tamper:
        con = duckdb.connect(str(warehouse))
        con.execute(tamper)
        con.close()
    result = run(refreshed.defs, "win_back_checks", warehouse, AS_OF)
    outcomes = check_results(result)
    assert not outcomes[("seg_win_back", "size_change")].description.startswith("size moved")
    membership = outcomes[("seg_win_back", "membership_schema")]
    assert [p for p in failed if p in (membership.description or "")] == failed
    assert membership.passed == (not failed)
    assert materialized(result) == ran


def test_dagster_yaml_serializes_runs_and_each_destination(tmp_path):
    # storage moved out of the working directory (dagster.yaml's paths are relative to it)
    text = (paths.DAGSTER_HOME / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text(text.replace("base_dir: .dagster", f"base_dir: {tmp_path}/.dagster"))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 1
    assert config.pool_config.default_pool_limit == 1
    assert config.pool_config.pool_granularity.value == "op"
