"""Shared fixtures: the dbt manifest the Dagster tests need, a PostgreSQL server and a
Spark directory for the engine tests.

The server is a throwaway cluster on loopback and a spare port, started once per test
session (about a second) and stopped after; Spark runs in this process, with its
warehouse and metastore in a temporary directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from segments import dbtrun, engines, paths
from segments.engines.spark_engine import SPARK_DIR_ENV


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql (.ci/run does)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL cluster; yields the libpq variables that reach it."""
    bin_dir = _postgres_bin()
    # outside pytest's private temporary tree: the server user must reach it
    base = Path(tempfile.mkdtemp(prefix="segments-postgres-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    port = _free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"]
    _run(_as_server_user(initdb))
    options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    _run(_as_server_user([*pg_ctl, "-o", options, "-w", "start"]))
    try:
        yield {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres", "PGDATABASE": "postgres"}
    finally:
        subprocess.run(_as_server_user([*pg_ctl, "-m", "fast", "-w", "stop"]), check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def spark_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``SEGMENTS_SPARK_DIR`` for the session; the JVM is stopped at the end."""
    directory = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SPARK_DIR_ENV, str(directory))
        yield directory
        from segments import engines

        engines.get("spark").stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def dbt_manifest(tmp_path_factory) -> Path:
    """dbt_project/target/manifest.json, parsed from the committed models.

    The code location reads it when it is imported (dagster-dbt makes the assets from
    it), so the Dagster tests import ``orchestration`` only after this fixture ran.
    Parsing renders the profile but opens no connection: the warehouse path is a
    placeholder.
    """
    placeholder = tmp_path_factory.mktemp("parse") / "warehouse.duckdb"
    dbtrun.run_dbt(paths.DBT_PROJECT_DIR, ["parse"], engines.get("duckdb", placeholder))
    return paths.DBT_PROJECT_DIR / "target" / "manifest.json"
