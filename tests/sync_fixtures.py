"""A small project and warehouse for sync tests, without a dbt build.

Sync reads only what a build publishes (SPEC 2.4: ``segment_membership`` and
``segment_catalog``) and the users table, so tests write those directly and change
membership between syncs as a build would.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import duckdb

from segments.spec import model as m
from segments.spec.parse import load_project

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-of-some-length").decode()
AS_OF = dt.datetime(2026, 1, 15)

CATALOG = """\
users:
  table: raw.users
  key: user_id
  attributes:
    email: {type: string, pii: true}
    phone: {type: string, pii: true}
    whatsapp_opt_in: {type: boolean}
events:
  table: raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
"""


def write_project(specs: Path, destinations: str, segments: dict[str, str]) -> m.Project:
    """A specs dir with the catalog above, ``destinations`` and one spec per segment
    (``{name: "sync: [...]" yaml}``); every segment is an upload-free rule that the
    tests never build."""
    specs.mkdir(parents=True, exist_ok=True)
    (specs / "_catalog.yml").write_text(CATALOG)
    (specs / "_destinations.yml").write_text(destinations)
    for name, sync in segments.items():
        (specs / f"{name}.yml").write_text(f"name: {name}\nwhere: {{attribute: email, is_set: true}}\n{sync}\n")
    return load_project(specs)


def webhook_destinations(url: str, **options: object) -> str:
    extra = "".join(f"    {k}: {v}\n" for k, v in options.items())
    return f"destinations:\n  hook:\n    type: webhook\n    url: {url}\n    secret: {SECRET}\n{extra}"


def users(n: int) -> list[str]:
    return [f"u{i:05d}" for i in range(n)]


def write_users(con: duckdb.DuckDBPyConnection, ids: list[str], opted_out: set[str] = frozenset()) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE OR REPLACE TABLE raw.users (user_id VARCHAR, email VARCHAR, phone VARCHAR, whatsapp_opt_in BOOLEAN)")
    con.execute("CREATE OR REPLACE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP)")
    con.executemany(
        "INSERT INTO raw.users VALUES (?, ?, ?, ?)",
        [[u, f"{u}@example.com", f"+91 98{i:08d}", u not in opted_out] for i, u in enumerate(ids)],
    )


def publish(con: duckdb.DuckDBPyConnection, membership: dict[str, dict[str, bool]]) -> None:
    """What a build publishes: ``{segment: {user_id: is_holdout}}``."""
    con.execute(
        "CREATE OR REPLACE TABLE main.segment_membership "
        "(segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP)"
    )
    rows = [[s, u, h, AS_OF] for s, members in membership.items() for u, h in members.items()]
    if rows:
        con.executemany("INSERT INTO main.segment_membership VALUES (?, ?, ?, ?)", rows)
    con.execute("CREATE OR REPLACE TABLE main.segment_catalog (segment_name VARCHAR)")
    con.executemany("INSERT INTO main.segment_catalog VALUES (?)", [[s] for s in membership])


def state(con: duckdb.DuckDBPyConnection, destination: str, segment: str) -> set[str]:
    rows = con.execute(
        "SELECT user_id FROM main.sync_state WHERE destination = ? AND segment_name = ?", [destination, segment]
    ).fetchall()
    return {r[0] for r in rows}
