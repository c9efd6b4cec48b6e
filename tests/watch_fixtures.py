"""What the tests of real-time segments share (``segments watch`` and the Dagster
sensor): the example specs with three real-time segments synced to a loopback webhook
receiver, demo data whose later events wait in ``raw.later``, and a full build's
membership to compare the receiver's audiences with."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb

from segments import demo_data, paths, pipeline
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


def demo_warehouse(path: Path, users: int = 500) -> Path:
    """Demo data up to T0; the events after T0 wait in raw.later."""
    con = duckdb.connect(str(path))
    demo_data.write_duckdb(demo_data.generate(users=users, seed=5, anchor=ANCHOR), con)
    con.execute("CREATE TABLE raw.later AS SELECT * FROM raw.events WHERE occurred_at > ?", [T0])
    con.execute("DELETE FROM raw.events WHERE occurred_at > ?", [T0])
    con.close()
    return path


def full_build_members(specs: Path, warehouse: Path, as_of: dt.datetime, tmp_path: Path) -> dict[str, set[str]]:
    """The real-time segments' members (holdout excepted) by a full build of a copy."""
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
    """What the receiver holds of each real-time segment."""
    return {name: set(receiver.audiences.get(name, set())) for name in REALTIME}
