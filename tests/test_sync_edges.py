"""Nothing counts as delivered that was not; URLs' secrets stay secret (issue 18, items 3-4).

A redirecting webhook, a hanging one and a Wati that answers 2xx with a page that is
not its JSON: each fails its batch, records nothing as delivered and leaves the run's
``sync_runs`` row ``failed`` with a reason that names the URL's scheme and host only.
"""

from __future__ import annotations

import socket
import threading

import duckdb
import pytest
from werkzeug import Response

from segments.cli import main
from sync import engine
from sync.destinations import REGISTRY
from sync.destinations.batches import Record
from sync.destinations.options import resolve_options
from sync.destinations.webhook import WebhookAudience
from sync.http import Clock, HttpClient, RetryPolicy, TerminalError, new_session
from sync_fixtures import publish, state, users, webhook_destinations, write_project, write_users

TOKEN = "T0KEN-in-the-path-8c1e"


def _runs(warehouse) -> list[tuple[str, str | None]]:
    with duckdb.connect(str(warehouse)) as con:
        return con.execute("SELECT status, message FROM main.sync_runs").fetchall()


def _errors(warehouse) -> list[str]:
    with duckdb.connect(str(warehouse)) as con:
        return [r[0] for r in con.execute("SELECT message FROM main.sync_errors").fetchall()]


def _world(tmp_path, url: str, members: int = 30):
    warehouse = tmp_path / "wh.duckdb"
    project = write_project(tmp_path / "specs", webhook_destinations(url, batch_size=10), {"vip": "sync:\n  - destination: hook"})
    ids = users(members)
    with duckdb.connect(str(warehouse)) as con:
        write_users(con, ids)
        publish(con, {"vip": {u: False for u in ids}})
    return project, warehouse


def _no_sleep() -> Clock:
    return Clock(sleep=lambda seconds: None)


def test_a_redirect_is_a_failed_batch_never_followed(tmp_path, httpserver):
    landing = []
    httpserver.expect_request(f"/hooks/{TOKEN}").respond_with_response(
        Response(status=302, headers={"Location": httpserver.url_for("/landing")}))
    httpserver.expect_request("/landing").respond_with_handler(lambda request: landing.append(request) or Response("ok"))
    project, warehouse = _world(tmp_path, httpserver.url_for(f"/hooks/{TOKEN}"))
    [outcome] = engine.sync(project, warehouse, settings=engine.Settings(env={}, clock=_no_sleep()))
    assert landing == []  # not followed, not even as a GET
    assert (outcome.added, outcome.failed) == (0, 30)
    with duckdb.connect(str(warehouse)) as con:
        assert state(con, "hook", "vip") == set()
    errors = _errors(warehouse)
    assert errors and all("302" in e and "redirect" in e and TOKEN not in e and "/hooks" not in e for e in errors)


def _hanging_server() -> tuple[socket.socket, list[socket.socket]]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, held


def test_a_hanging_receiver_fails_the_run_with_its_host_only(tmp_path, capsys):
    server, held = _hanging_server()
    origin = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        url = f"{origin}/hooks/{TOKEN}"
        project, warehouse = _world(tmp_path, url)
        retries: list[str] = []

        class Recorder(engine.Progress):
            def retrying(self, destination, error, wait):
                retries.append(str(error))

        settings = engine.Settings(env={}, clock=_no_sleep(), policy=RetryPolicy(attempts=2, jitter=0),
                                   timeout=(1.0, 0.3), progress=Recorder())
        [outcome] = engine.sync(project, warehouse, settings=settings)
    finally:
        server.close()
        for connection in held:
            connection.close()
    assert outcome.status == "failed" and "no answer (ReadTimeout)" in outcome.message
    assert retries
    [(status, message)] = _runs(warehouse)
    assert status == "failed" and message == outcome.message
    for text in [message, *retries]:
        assert f"POST {origin}:" in text and TOKEN not in text and "/hooks" not in text
    with duckdb.connect(str(warehouse)) as con:
        assert state(con, "hook", "vip") == set()


def test_wati_answering_2xx_without_its_json_is_a_failure(httpserver):
    httpserver.expect_request("/12345/api/v1/updateContactAttributes/919876543210").respond_with_data(
        "<html>Please sign in</html>", content_type="text/html")
    http = HttpClient(new_session(), policy=RetryPolicy(attempts=1), clock=_no_sleep())
    cls = REGISTRY["wati"]
    options = resolve_options(cls.declared_options(), {"base_url": httpserver.url_for("/"), "tenant_id": "12345", "token": "t"}, "wati", {})
    audience = cls("wati", options, http).audience("cart", {})
    with pytest.raises(TerminalError, match="without its JSON result"):
        audience.add(Record("u1", {"phone": "+91 98765 43210"}))


def test_a_run_stopped_by_anything_is_recorded_failed_never_running(tmp_path, monkeypatch, httpserver):
    httpserver.expect_request("/hook").respond_with_data("")

    def broken(self, batch):
        raise RuntimeError(f"boom at https://example.com/{TOKEN}")

    monkeypatch.setattr(WebhookAudience, "send", broken)
    project, warehouse = _world(tmp_path, httpserver.url_for("/hook"))
    with pytest.raises(RuntimeError):
        engine.sync(project, warehouse, settings=engine.Settings(env={}, clock=_no_sleep()))
    assert _runs(warehouse) == [("failed", "stopped by RuntimeError")]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "https:///no-host", "hooks.example.com/T0KEN", "http://host:99999/"])
def test_validate_refuses_destination_urls_without_echoing_them(tmp_path, capsys, url):
    specs = tmp_path / "specs"
    write_project(specs, webhook_destinations(url), {"vip": "sync:\n  - destination: hook"})
    assert main(["validate", "--specs", str(specs)]) == 1
    err = capsys.readouterr().err
    assert "option 'url' must be an http:// or https:// URL with a host" in err
    assert url not in err


def test_validate_accepts_urls_from_the_environment_and_with_a_query(tmp_path, capsys):
    for url in ["${HOOK_URL}", "https://hooks.example.com/T0KEN?sig=1"]:
        specs = tmp_path / url.strip("${}").replace("/", "_").replace(":", "").replace("?", "")
        write_project(specs, webhook_destinations(url), {"vip": "sync:\n  - destination: hook"})
        assert main(["validate", "--specs", str(specs)]) == 0, capsys.readouterr().err
