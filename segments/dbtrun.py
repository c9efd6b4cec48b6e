"""Running dbt: one ``dbt build`` per segments build, never one per segment.

dbt runs in a subprocess: each invocation gets a clean adapter (dbt-duckdb keeps
connection state per process) and its JSON log lines drive the progress bar and the
error report. On Spark it runs in this process instead (dbt's programmatic runner,
the same events through a callback): dbt-spark's session method then shares the
JVM segments already started, rather than paying half a minute for its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from segments.engines.base import Engine
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


#: Where dbt's ``segments_as_of()`` macro reads the build's instant.
AS_OF_ENV = "SEGMENTS_AS_OF"


def as_of_env(as_of: dt.datetime) -> dict[str, str]:
    """The environment that tells dbt the build's ``as_of``.

    Not a ``--vars`` value: dbt parses the whole project again whenever its vars
    change, and a scheduled build has a new ``as_of`` every time. The macro reads the
    variable only while a model runs, so the partial parse stays valid.

    >>> as_of_env(dt.datetime(2026, 11, 1, 6))
    {'SEGMENTS_AS_OF': '2026-11-01 06:00:00'}
    """
    return {AS_OF_ENV: format_as_of(as_of)}


def run_dbt(
    project_dir: Path,
    args: list[str],
    engine: Engine,
    as_of: dt.datetime | None = None,
    on_node: Callable[[str, str], None] | None = None,
) -> DbtResult:
    """Run one dbt command against ``engine``'s target.

    Args:
        project_dir: the dbt project (holds profiles.yml too).
        args: the dbt command and its selection, e.g. ``["build"]``.
        engine: the warehouse; its target names the profile's output.
        as_of: the instant segments are evaluated at (:func:`as_of_env`).
        on_node: called with (node name, status) as each node finishes.

    Raises:
        SegmentsError: when dbt fails, with the errors dbt reported.
    """
    options = [
        "--log-format", "json", "--no-use-colors", *args,
        "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--target", engine.target,
    ]
    env = {
        **engine.dbt_env(),
        **(as_of_env(as_of) if as_of is not None else {}),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_LOG_PATH": str(project_dir / "logs"),
        "DBT_TARGET_PATH": str(project_dir / "target"),
    }
    result = DbtResult()
    run = _run_in_process if engine.dbt_in_process else _run_subprocess
    if not run(options, project_dir, env, lambda event: _consume(event, result, on_node)):
        details = "\n".join(result.failures or result.log_tail[-15:])
        if "Could not set lock on file" in details:
            # a second writer on a DuckDB file: one line, not dbt's pages of errors
            raise SegmentsError(f"the warehouse is busy: another segments command is using it; dbt {args[0]} did not run, the published segments are unchanged")
        raise SegmentsError(f"dbt {args[0]} failed; the published segments are unchanged.\n{details}")
    return result


def _run_subprocess(options: list[str], cwd: Path, env: dict[str, str], consume: Callable[[dict], None]) -> bool:
    process = subprocess.Popen(
        [dbt_executable(), *options], cwd=cwd, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        consume(event if isinstance(event, dict) else {"info": {"msg": line.rstrip()}})
    return process.wait() == 0


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment while the block runs."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_in_process(options: list[str], cwd: Path, env: dict[str, str], consume: Callable[[dict], None]) -> bool:
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    with environment(env):
        runner = dbtRunner(callbacks=[lambda message: consume(msg_to_dict(message))])
        outcome = runner.invoke([*options, "--log-level", "none", "--log-level-file", "debug"])
    if outcome.exception is not None:
        consume({"info": {"level": "error", "msg": f"{type(outcome.exception).__name__}: {outcome.exception}"}})
    return bool(outcome.success)


def _consume(event: dict, result: DbtResult, on_node: Callable[[str, str], None] | None) -> None:
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
