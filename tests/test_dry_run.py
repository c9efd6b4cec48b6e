"""``segments sync --dry-run``: the API calls a plan needs and their time, checked
against what the real sync then sends to the fake platforms of ``fake_platforms``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fake_platforms import RecordingSession
from test_destinations_sync import WORLDS, fake_settings, project, publish, warehouse  # noqa: F401 - fixtures

from sync.destinations import REGISTRY
from sync.destinations.options import resolve_options
from sync.dry_run import DOCUMENTED, cost, duration, totals
from sync.engine import summary_line, sync
from sync.http import Clock


def make(type_: str, **options: object):
    base = {
        "intercom": {"token": "t", "base_url": "http://127.0.0.1:1"},
        "chatwoot": {"api_access_token": "t", "base_url": "http://127.0.0.1:1", "account_id": 3},
        "customerio": {"site_id": "s", "api_key": "k", "base_url": "http://127.0.0.1:1"},
        "braze": {"api_key": "k", "base_url": "http://127.0.0.1:1"},
        "wati": {"token": "t", "base_url": "http://127.0.0.1:1", "tenant_id": "1"},
        "webhook": {"url": "http://127.0.0.1:1/hook", "secret": "whsec_eHh4eHh4eHh4eHh4eHh4eA=="},
        "csv": {"path": "/tmp/x"},
    }[type_]
    cls = REGISTRY[type_]
    resolved = resolve_options(cls.declared_options(), {**base, **options}, "d", {})
    return cls("d", resolved, http=SimpleNamespace(clock=Clock()))  # type: ignore[arg-type]


# (type, options, adds, removes, calls by kind, seconds at the documented limit)
CASES = [
    ("intercom", {}, 250, 40, [1, 250, 3, 40, 0], 294 / (10_000 / 60)),
    ("intercom", {"batch_size": 1000}, 2500, 0, [1, 2500, 3, 0, 0], 2504 / (10_000 / 60)),
    ("chatwoot", {}, 30, 10, [1, 30, 80, 0], 30 / (100 / 60)),  # the searches' own limit dominates
    ("customerio", {}, 2500, 1, [3, 1, 0], 4 / 100),
    ("braze", {}, 150, 1, [3], None),  # no documented number in api-specs
    ("wati", {}, 7, 3, [10], 10.0),
    ("webhook", {}, 1200, 0, [3], None),
    ("csv", {}, 5000, 5, [], None),
]


@pytest.mark.parametrize(("type_", "options", "adds", "removes", "counts", "seconds"), CASES)
def test_calls_and_time_per_destination(type_, options, adds, removes, counts, seconds):
    estimate = cost(make(type_, **options), adds, removes)
    assert [c.count for c in estimate.calls] == counts
    assert estimate.total == sum(counts)
    if seconds is None:
        assert estimate.documented_seconds is None
    else:
        assert estimate.documented_seconds == pytest.approx(seconds)


# owner routing: one more call per add where the owner is a contact attribute set alone
ROUTED = [
    ("intercom", {"owners": {"sales": 1}}, [1, 250, 3, 40, 250]),
    ("chatwoot", {"owner_attribute": "segment_owner"}, [1, 250, 500, 250]),
    ("customerio", {"owner_attribute": "segment_owner"}, [1, 0, 250]),
    ("braze", {"owner_attribute": "segment_owner"}, [4]),  # in the same attribute objects (75 a call)
    ("wati", {"owner_attribute": "segment_owner"}, [290]),  # in the same customParams
]


@pytest.mark.parametrize(("type_", "options", "counts"), ROUTED)
def test_owner_routing_costs_a_call_per_add_where_it_is_one(type_, options, counts):
    removes = 40 if type_ in ("intercom", "wati", "braze") else 0
    assert [c.count for c in cost(make(type_, **options), 250, removes, "sales").calls] == counts
    assert [c.count for c in cost(make(type_, **options), 250, removes, None).calls][-1] == (counts[-1] if type_ in ("braze", "wati") else 0)


def test_nothing_to_send_costs_nothing():
    assert cost(make("intercom"), 0, 0).describe() == "API calls: 0"


def test_the_sync_pace_is_the_destinations_rate_limit_option():
    estimate = cost(make("wati", rate_limit=0.5), 10, 0)
    assert estimate.configured_seconds == pytest.approx(20.0)
    assert "20.0s at the sync pace of 0.5/s" in estimate.describe()
    assert DOCUMENTED["wati"].per_second == 1.0


def test_totals_add_up_the_pairs_of_a_destination():
    d = make("customerio")
    [line] = totals([cost(d, 1500, 0), cost(d, 10, 1000)])
    assert line.startswith("d (all 2 segment(s)): API calls: 4 (3 add_customers calls (1000 ids each), 1 remove_customers")
    assert duration(3725) == "1h02m"


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_the_dry_run_counts_what_the_sync_then_sends(name, project, warehouse, httpserver):  # noqa: F811
    world = WORLDS[name]
    world.make().install(httpserver)
    session = RecordingSession()
    settings = fake_settings(httpserver.url_for("/"), session)
    for run in (0, 1):
        publish(warehouse, run)
        [planned] = sync(project, warehouse, destination=name, dry_run=True, settings=settings)
        assert session.sent == [] or run == 1
        before = len(session.sent)
        [done] = sync(project, warehouse, destination=name, settings=settings)
        sent = len(session.sent) - before
        estimate = planned.cost.total
        assert "API calls: " in summary_line(planned)
        if name == "support_desk":
            # an estimate: a missing label costs a POST more, a member without a
            # contact its label read and write less
            assert abs(sent - estimate) <= 2, (run, sent, estimate)
        elif run == 0 or name not in ("intercom_main",):
            assert sent == estimate, (run, [f"{r.method} {r.url}" for r in session.sent[before:]])
        else:
            assert sent <= estimate  # removes use the stored contact ids
        assert done.status == "succeeded"
