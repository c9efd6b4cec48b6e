"""Running dbt: one ``dbt build`` per segments build, never one per segment.

dbt runs in a subprocess: each invocation gets a clean adapter (dbt-duckdb keeps
connection state per process) and its JSON log lines drive the progress bar and the
error report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from segments import paths
from segments.errors import SegmentsError

# dbt events that finish one node (a model or a test).
_NODE_DONE = {"LogModelResult", "LogTestResult", "LogSeedResult", "LogSnapshotResult", "SkippingDetails"}


@dataclass
class DbtResult:
    nodes_done: int = 0
    failures: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)


def dbt_executable() -> str:
    beside = Path(sys.executable).parent / "dbt"
    found = str(beside) if beside.exists() else shutil.which("dbt")
    if not found:
        raise SegmentsError("dbt is not installed in this environment (pip install -e .)")
    return found


def format_as_of(as_of: dt.datetime) -> str:
    return as_of.isoformat(sep=" ", timespec="microseconds" if as_of.microsecond else "seconds")


def run_dbt(
    project_dir: Path,
    args: list[str],
    warehouse: Path,
    as_of: dt.datetime | None = None,
    target: str = "duckdb",
    on_node: Callable[[str, str], None] | None = None,
) -> DbtResult:
    """Run one dbt command against ``warehouse``.

    Args:
        project_dir: the dbt project (holds profiles.yml too).
        args: the dbt command and its selection, e.g. ``["build"]``.
        warehouse: the DuckDB file.
        as_of: passed as the ``as_of`` var.
        target: the profile's output.
        on_node: called with (node name, status) as each node finishes.

    Raises:
        SegmentsError: when dbt fails, with the errors dbt reported.
    """
    command = [
        dbt_executable(), "--log-format", "json", "--no-use-colors", *args,
        "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--target", target,
    ]
    if as_of is not None:
        command += ["--vars", json.dumps({"as_of": format_as_of(as_of)})]
    env = dict(os.environ)
    env.update({
        paths.WAREHOUSE_ENV: str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_LOG_PATH": str(project_dir / "logs"),
        "DBT_TARGET_PATH": str(project_dir / "target"),
    })
    result = DbtResult()
    process = subprocess.Popen(
        command, cwd=project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        _consume(line, result, on_node)
    if process.wait() != 0:
        details = "\n".join(result.failures or result.log_tail[-15:])
        raise SegmentsError(f"dbt {args[0]} failed; the published segments are unchanged.\n{details}")
    return result


def _consume(line: str, result: DbtResult, on_node: Callable[[str, str], None] | None) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        result.log_tail.append(line.rstrip())
        return
    info = event.get("info", {})
    name, message, level = info.get("name", ""), info.get("msg", ""), info.get("level", "")
    if message:
        result.log_tail = (result.log_tail + [message])[-50:]
    if name in _NODE_DONE:
        result.nodes_done += 1
        data = event.get("data", {})
        node = data.get("node_info", {}).get("node_name", "") or data.get("name", "")
        status = str(data.get("status", data.get("node_info", {}).get("node_status", "")))
        if on_node is not None:
            on_node(node, status)
    if level == "error" and message:
        result.failures.append(message)
