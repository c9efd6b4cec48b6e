"""A small project and warehouse for sync tests, without a dbt build.

Sync reads only what a build publishes (SPEC 2.4: ``segment_membership`` and
``segment_catalog``) and the users table, so tests write those directly and change
membership between syncs as a build would.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from segments import engines
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


class PgConnection:
    """A PostgreSQL connection called as a DuckDB one is (``?`` parameters), so the
    fixtures below write either warehouse."""

    def __init__(self, env: Mapping[str, str]):
        import psycopg2

        self.conn = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=env["PGDATABASE"])
        self.conn.autocommit = True

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.conn.cursor()
        cursor.execute(sql.replace("?", "%s"), list(params) if params else None)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


class SyncWarehouse:
    """A sync test's warehouse on one engine: DuckDB (a file) or PostgreSQL (a fresh
    database of the session's server, named in ``env``)."""

    def __init__(self, target: str, path: Path, env: Mapping[str, str] | None = None):
        self.target, self.path, self.env = target, path, dict(env or {})

    def connect(self) -> Any:
        return duckdb.connect(str(self.path)) if self.target == "duckdb" else PgConnection(self.env)

    @property
    def engine(self) -> engines.Engine:
        return engines.get("duckdb", self.path) if self.target == "duckdb" else engines.get("postgres")

    @property
    def cli_args(self) -> list[str]:
        """``segments sync`` options reaching it (PostgreSQL: with :attr:`env` set)."""
        return ["--warehouse", str(self.path)] if self.target == "duckdb" else ["--target", "postgres"]


@contextmanager
def postgres_database(server_env: Mapping[str, str], patch: Any) -> Iterator[dict[str, str]]:
    """A fresh database on the test server, named in the libpq variables ``patch``
    sets for the test; dropped afterwards."""
    name = f"sync_{uuid.uuid4().hex[:12]}"
    with PgConnection(server_env) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    env = {**server_env, "PGDATABASE": name}
    for key, value in env.items():
        patch.setenv(key, value)
    try:
        yield env
    finally:
        with PgConnection(server_env) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def write_users(con: Any, ids: list[str], opted_out: set[str] = frozenset()) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table, columns in (("raw.users", "user_id VARCHAR, email VARCHAR, phone VARCHAR, whatsapp_opt_in BOOLEAN"),
                           ("raw.events", "user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP")):
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"CREATE TABLE {table} ({columns})")
    con.executemany(
        "INSERT INTO raw.users VALUES (?, ?, ?, ?)",
        [[u, f"{u}@example.com", f"+91 98{i:08d}", u not in opted_out] for i, u in enumerate(ids)],
    )


def publish(con: Any, membership: dict[str, dict[str, bool]]) -> None:
    """What a build publishes: ``{segment: {user_id: is_holdout}}`` (tables in the
    target schema, the default one on either engine)."""
    con.execute("DROP TABLE IF EXISTS segment_membership")
    con.execute("CREATE TABLE segment_membership (segment_name VARCHAR, user_id VARCHAR, is_holdout BOOLEAN, as_of TIMESTAMP)")
    rows = [[s, u, h, AS_OF] for s, members in membership.items() for u, h in members.items()]
    if rows:
        con.executemany("INSERT INTO segment_membership VALUES (?, ?, ?, ?)", rows)
    con.execute("DROP TABLE IF EXISTS segment_catalog")
    con.execute("CREATE TABLE segment_catalog (segment_name VARCHAR)")
    con.executemany("INSERT INTO segment_catalog VALUES (?)", [[s] for s in membership])


def state(con: Any, destination: str, segment: str) -> set[str]:
    rows = con.execute(
        "SELECT user_id FROM sync_state WHERE destination = ? AND segment_name = ?", [destination, segment]
    ).fetchall()
    return {r[0] for r in rows}
