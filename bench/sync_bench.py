"""Sync benchmark (issue 3): `segments sync` beside drt-core, same receiver, same data.

    .venv/bin/python bench/sync_bench.py            # 1M members, batches of 10k and 100k
    .venv/bin/python bench/sync_bench.py --members 100000 --repeats 1   # a quick look

What it does, in one run:

1. Writes a DuckDB warehouse as a build would publish it (``raw.users``,
   ``main.segment_membership``, ``main.segment_catalog``) with bulk SQL: N members
   of one segment ``bench``, and the next membership (1% leave, 1% join) beside it.
2. Starts one loopback receiver (``sync_receiver.py``) in its own process for both
   tools, and measures its ceiling with a load client that sends pre-built bodies.
3. For each batch size: runs ``segments sync`` (a subprocess: its own peak RSS)
   for an initial sync, a 1% change sync, and a SIGKILL at 40% followed by a rerun;
   then drt-core (``drt run``, in a venv of its own) for an initial run, a rerun on
   the changed membership, and a SIGKILL at 40% followed by a rerun.
4. Prints a table and writes it, with the machine, versions and date, to
   ``bench/RESULTS-sync.md``.

Both tools send the same rows, ``user_id`` and ``email`` per member, and both are
timed end to end (process start to exit, start-up included) as a user would see
them; the receiver also records the span from first to last request. Each timed
scenario is repeated ``--repeats`` times: the table shows the median rows/s and the
highest peak RSS of the repeats. The machine is shared, so the figures are noisy.

This is a script, not a test: nothing here asserts timings. It does check, and
report, that every run delivered what it should (all members, exactly the change,
nothing lost after a kill).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SEGMENT = "bench"
DRT_PACKAGE = "drt-core[duckdb]==1.2.1"  # the version the figures are for
DRT_DUCKDB = "duckdb==2.0.0"  # a DuckDB 2.0 file cannot be opened by duckdb 1.x
TARGET_RATIO = 1.5  # issue 3: at least 1.5x drt's rows/s at equal batch size
TARGET_RSS_MIB = 150.0


# ---- the data ---------------------------------------------------------------------------


def user_id_sql(i: str) -> str:
    return f"'u' || lpad(({i})::VARCHAR, 8, '0')"


def write_warehouse(path: Path, members: int, change: int) -> None:
    """Users 0..members+change; the segment holds users [0, members) now and
    [change, members+change) next: ``change`` leave and ``change`` join."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA raw")
        con.execute(f"""CREATE TABLE raw.users AS SELECT {user_id_sql('i')} AS user_id,
            {user_id_sql('i')} || '@example.com' AS email, '+91 9' || lpad(i::VARCHAR, 9, '0') AS phone,
            true AS whatsapp_opt_in FROM range({members + change}) t(i)""")
        con.execute("CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP)")
        membership = lambda lo, hi: (  # noqa: E731 - the columns SPEC 2.4 publishes
            f"SELECT '{SEGMENT}' AS segment_name, {user_id_sql('i')} AS user_id, false AS is_holdout, "
            f"TIMESTAMP '2026-01-15' AS as_of FROM range({lo}, {hi}) t(i)")
        con.execute(f"CREATE TABLE main.segment_membership AS {membership(0, members)}")
        con.execute(f"CREATE TABLE main.next_membership AS {membership(change, members + change)}")
        con.execute(f"CREATE TABLE main.segment_catalog AS SELECT '{SEGMENT}' AS segment_name")
    finally:
        con.close()


def publish_next(path: Path) -> None:
    """What the next build publishes: the changed membership."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE OR REPLACE TABLE main.segment_membership AS SELECT * FROM main.next_membership")
    finally:
        con.close()


def copy_warehouse(source: Path, target: Path) -> Path:
    for old in (target, target.with_name(target.name + ".wal")):
        old.unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return target


# ---- the receiver -----------------------------------------------------------------------


class Receiver:
    """The receiver process, and its HTTP control routes."""

    def __init__(self, secrets_by_tool: dict[str, str]):
        args = [a for tool, secret in secrets_by_tool.items() for a in ("--secret", f"{tool}={secret}")]
        self.process = subprocess.Popen([sys.executable, str(BENCH / "sync_receiver.py"), *args],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, tool: str) -> str:
        return f"{self.base}/hook/{tool}"

    def _call(self, method: str, path: str) -> dict[str, object]:
        request = urllib.request.Request(self.base + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = answer.read()
        return json.loads(data) if data else {}

    def reset(self, tool: str) -> None:
        self._call("POST", f"/reset/{tool}")

    def arm(self, tool: str, rows: int, pid: int) -> None:
        self._call("POST", f"/arm/{tool}?rows={rows}&pid={pid}")

    def lap(self, tool: str) -> None:
        self._call("POST", f"/lap/{tool}")

    def stats(self, tool: str) -> dict[str, object]:
        return self._call("GET", f"/stats/{tool}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def load_client(url: str, secret: str, rows: int, batch: int, concurrency: int) -> None:
    """``--load-client``: send ``rows`` pre-built signed SPEC 4.1 bodies as fast as
    possible over keep-alive connections (the receiver's ceiling)."""
    sys.path.insert(0, str(BENCH))
    from sync_receiver import signature

    key = base64.b64decode(secret.removeprefix("whsec_"))
    bodies = [
        json.dumps({"segment": SEGMENT, "destination": "hook", "sync_id": "ceiling", "removed": [],
                    "added": [{"user_id": f"c{i:08d}", "email": f"c{i:08d}@example.com"}
                              for i in range(first, min(first + batch, rows))]}, separators=(",", ":")).encode()
        for first in range(0, rows, batch)
    ]
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    queue = list(enumerate(bodies))
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        while True:
            with lock:
                if not queue:
                    break
                number, body = queue.pop()
            message_id, timestamp = f"msg_ceiling_{number}", str(int(time.time()))
            connection.request("POST", "/" + path, body=body, headers={
                "Content-Type": "application/json", "webhook-id": message_id, "webhook-timestamp": timestamp,
                "webhook-signature": signature(key, message_id, timestamp, body)})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise SystemExit(f"receiver answered {answer.status}")
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---- running and measuring a tool ----------------------------------------------------------


@dataclass
class Run:
    """One measured process."""

    tool: str
    scenario: str
    batch: int
    concurrency: int
    seconds: float  # process start to exit
    cpu_seconds: float  # user + system, its own threads included
    peak_rss_mib: float
    exit_code: int
    received: dict[str, object] = field(default_factory=dict)  # the receiver's counters

    @property
    def rows(self) -> int:
        return int(self.received.get("rows", 0))  # type: ignore[call-overload]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def measure(cmd: list[str], env: dict[str, str], cwd: Path, log: Path,
            arm: tuple[Receiver, str, int] | None = None) -> tuple[float, float, float, int]:
    """Run ``cmd``; return (wall seconds, CPU seconds, peak RSS MiB, exit code). ``arm``
    (receiver, tool, rows) has the receiver SIGKILL it once that many rows arrived."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        started = time.perf_counter()
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        if arm is not None:
            receiver, tool, rows = arm
            receiver.arm(tool, rows, process.pid)
        # wait4 gives this child's own rusage: ru_maxrss is its peak RSS in KiB
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode


class Ours:
    """``segments sync`` on a project with one webhook destination."""

    tool = "ours"

    def __init__(self, work: Path, receiver: Receiver, secret: str):
        self.work, self.receiver, self.secret = work, receiver, secret
        self.exe = str(Path(sys.executable).with_name("segments"))

    def write_project(self, batch: int, concurrency: int) -> Path:
        specs = self.work / f"specs-{batch}-{concurrency}"
        specs.mkdir(parents=True, exist_ok=True)
        (specs / "_catalog.yml").write_text(
            "users:\n  table: raw.users\n  key: user_id\n  attributes:\n"
            "    email: {type: string, pii: true}\n    phone: {type: string, pii: true}\n"
            "    whatsapp_opt_in: {type: boolean}\n"
            "events:\n  table: raw.events\n  user_key: user_id\n  name: event_name\n  timestamp: occurred_at\n")
        (specs / "_destinations.yml").write_text(
            f"destinations:\n  hook:\n    type: webhook\n    url: {self.receiver.url(self.tool)}\n"
            f"    secret: ${{BENCH_HOOK_SECRET}}\n    batch_size: {batch}\n    concurrency: {concurrency}\n"
            "    fields: [email]\n")
        (specs / f"{SEGMENT}.yml").write_text(
            f"name: {SEGMENT}\nwhere: {{attribute: email, is_set: true}}\nsync:\n  - destination: hook\n")
        return specs

    def run(self, scenario: str, specs: Path, warehouse: Path, batch: int, concurrency: int,
            kill_at: int | None = None, reset: bool = True) -> Run:
        if reset:
            self.receiver.reset(self.tool)
        else:
            self.receiver.lap(self.tool)
        env = {**os.environ, "BENCH_HOOK_SECRET": self.secret}
        cmd = [self.exe, "sync", "--specs", str(specs), "--warehouse", str(warehouse)]
        arm = (self.receiver, self.tool, kill_at) if kill_at else None
        measured = measure(cmd, env, self.work, self.work / "ours.log", arm)
        return Run(self.tool, scenario, batch, concurrency, *measured, self.receiver.stats(self.tool))


class Drt:
    """``drt run`` of one rest_api sync in batch mode, from its own venv."""

    tool = "drt"

    def __init__(self, work: Path, receiver: Receiver, venv: Path):
        self.work, self.receiver, self.venv = work, receiver, venv

    @staticmethod
    def ensure_venv(venv: Path) -> str:
        """Create the venv on first use; return drt's version."""
        drt = venv / "bin" / "drt"
        if not drt.exists():
            print(f"installing {DRT_PACKAGE} into {venv} ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            constraints = venv / "constraints.txt"
            constraints.write_text(DRT_DUCKDB + "\n")
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", DRT_PACKAGE, "-c", str(constraints)],
                           check=True)
        code = "import importlib.metadata as m; print(m.version('drt-core'), m.version('duckdb'))"
        return subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True,
                              text=True).stdout.strip()

    def write_project(self, batch: int, warehouse: Path) -> Path:
        project = self.work / f"drt-{batch}"
        (project / "syncs").mkdir(parents=True, exist_ok=True)
        home = project / "home"
        (home / ".drt").mkdir(parents=True, exist_ok=True)
        (home / ".drt" / "profiles.yml").write_text(f"bench:\n  type: duckdb\n  database: {warehouse}\n")
        (project / "drt_project.yml").write_text('name: bench\nversion: "0.1"\nprofile: bench\n')
        # The same rows ours sends: the segment's members less holdout, user_id and email.
        query = ("SELECT m.user_id, u.email FROM main.segment_membership m JOIN raw.users u ON u.user_id = m.user_id "
                 f"WHERE m.segment_name = '{SEGMENT}' AND NOT m.is_holdout")
        (project / "syncs" / "members.yml").write_text(
            f'name: members\nmodel: "{query}"\n'
            "destination:\n  type: rest_api\n"
            f'  url: "{self.receiver.url(self.tool)}"\n  method: POST\n'
            '  headers:\n    Content-Type: "application/json"\n'
            "  body_mode: batch\n"
            "  batch_template: '{\"rows\": {{ rows | tojson_safe }}}'\n"
            f"sync:\n  mode: full\n  batch_size: {batch}\n"
            "  rate_limit:\n    requests_per_second: 1000000\n"  # drt paces at 10/s by default
            "  on_error: fail\n")
        return project

    def run(self, scenario: str, project: Path, batch: int, kill_at: int | None = None, reset: bool = True) -> Run:
        if reset:
            self.receiver.reset(self.tool)
        else:
            self.receiver.lap(self.tool)
        env = {**os.environ, "HOME": str(project / "home"), "DO_NOT_TRACK": "1"}
        cmd = [str(self.venv / "bin" / "drt"), "run", "--quiet"]
        arm = (self.receiver, self.tool, kill_at) if kill_at else None
        measured = measure(cmd, env, project, self.work / "drt.log", arm)
        return Run(self.tool, scenario, batch, 1, *measured, self.receiver.stats(self.tool))


# ---- the scenarios ------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: the repeats of one scenario, summarised."""

    tool: str
    scenario: str
    batch: int
    concurrency: int
    runs: list[Run]
    check: str  # what was verified, or what went wrong
    duplicates: int | None = None
    lost: int | None = None

    @property
    def median(self) -> Run:
        ordered = sorted(self.runs, key=lambda r: r.rows_per_s)
        return ordered[(len(ordered) - 1) // 2]  # the lower median: a real run

    @property
    def rows_per_s(self) -> float:
        return statistics.median(r.rows_per_s for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(r.peak_rss_mib for r in self.runs)


def expect(ok: bool, text: str, problems: list[str]) -> str:
    if not ok:
        problems.append(text)
    return "ok" if ok else f"FAILED: {text}"


class OursCase:
    """``segments sync`` at one batch size and concurrency: its scenarios."""

    def __init__(self, ours: Ours, base: Path, batch: int, concurrency: int, members: int, change: int):
        self.ours, self.base, self.batch, self.concurrency = ours, base, batch, concurrency
        self.members, self.change = members, change
        self.specs = ours.write_project(batch, concurrency)
        self.warehouse = ours.work / f"ours-{batch}-{concurrency}.duckdb"
        self.synced = ours.work / f"ours-{batch}-{concurrency}-synced.duckdb"  # after an initial sync
        self.label = f"ours b={batch} c={concurrency}"

    def _run(self, scenario: str, kill_at: int | None = None, reset: bool = True) -> Run:
        return self.ours.run(scenario, self.specs, self.warehouse, self.batch, self.concurrency, kill_at, reset)

    def initial(self) -> Run:
        copy_warehouse(self.base, self.warehouse)
        run = self._run("initial")
        shutil.copyfile(self.warehouse, self.synced)
        return run

    def change_sync(self) -> Run:
        publish_next(copy_warehouse(self.synced, self.warehouse))
        return self._run("change")

    def kill_and_rerun(self, kill_at: int) -> tuple[Run, Run]:
        copy_warehouse(self.base, self.warehouse)
        return self._run("kill", kill_at=kill_at), self._run("rerun", reset=False)

    def initial_ok(self, run: Run) -> bool:
        return run.exit_code == 0 and run.received["added"] == self.members == run.received["distinct_added"]

    def change_ok(self, run: Run) -> bool:
        return run.exit_code == 0 and (run.received["added"], run.received["removed"]) == (self.change, self.change)

    def change_check(self) -> str:
        return f"exactly {self.change:,} adds and {self.change:,} removes"

    def in_flight(self) -> int | None:
        return self.concurrency * self.batch

    notes = {"change": "", "rerun": ""}


class DrtCase:
    """``drt run`` at one batch size: its scenarios (it keeps no state between runs)."""

    concurrency = 1

    def __init__(self, drt: Drt, base: Path, batch: int, members: int):
        self.drt, self.base, self.batch, self.members = drt, base, batch, members
        self.warehouse = drt.work / f"drt-{batch}.duckdb"
        self.project = drt.write_project(batch, self.warehouse)
        self.label = f"drt b={batch}"

    def initial(self) -> Run:
        copy_warehouse(self.base, self.warehouse)
        return self.drt.run("initial", self.project, self.batch)

    def change_sync(self) -> Run:
        publish_next(copy_warehouse(self.base, self.warehouse))
        return self.drt.run("change", self.project, self.batch)

    def kill_and_rerun(self, kill_at: int) -> tuple[Run, Run]:
        copy_warehouse(self.base, self.warehouse)
        killed = self.drt.run("kill", self.project, self.batch, kill_at=kill_at)
        return killed, self.drt.run("rerun", self.project, self.batch, reset=False)

    def initial_ok(self, run: Run) -> bool:
        return run.exit_code == 0 and run.received["added"] == self.members == run.received["distinct_added"]

    def change_ok(self, run: Run) -> bool:
        return run.exit_code == 0  # it sends every member again and removes nobody: reported, not required

    def change_check(self) -> str:
        return "sends every member, no removes"

    def in_flight(self) -> int | None:
        return None  # no bound: it resends everything

    notes = {"change": " (sends every member again, no removes)", "rerun": " (resends every member)"}


Case = OursCase | DrtCase


def bench_batch_size(cases: list[Case], members: int, repeats: int, kill_pct: float, problems: list[str]) -> list[Row]:
    """Every case's scenarios, the repeats of a scenario alternating between the
    cases, so a change in the machine's load falls on all of them alike."""
    initial: dict[str, list[Run]] = {c.label: [] for c in cases}
    changed: dict[str, list[Run]] = {c.label: [] for c in cases}
    for _ in range(repeats):
        for case in cases:
            run = case.initial()
            initial[case.label].append(run)
            print(f"  {case.label} initial: {run.rows:,} rows in {run.seconds:.1f}s "
                  f"({run.cpu_seconds:.1f}s CPU), {run.peak_rss_mib:.0f} MiB", flush=True)
    for _ in range(repeats):
        for case in cases:
            run = case.change_sync()
            changed[case.label].append(run)
            print(f"  {case.label} 1% change: {run.received['added']:,} added, {run.received['removed']:,} removed "
                  f"in {run.seconds:.1f}s, {run.peak_rss_mib:.0f} MiB", flush=True)
    rows: list[Row] = []
    kill_at = int(members * kill_pct / 100)
    for case in cases:
        tool = case.label.split()[0]
        rows.append(Row(tool, "initial", case.batch, case.concurrency, initial[case.label], expect(
            all(case.initial_ok(r) for r in initial[case.label]), f"{case.label} initial: every member once", problems)))
        rows.append(Row(tool, "1% change", case.batch, case.concurrency, changed[case.label], expect(
            all(case.change_ok(r) for r in changed[case.label]), f"{case.label} change: {case.change_check()}", problems)
            + case.notes["change"]))
        killed, rerun = case.kill_and_rerun(kill_at)
        received = rerun.received
        lost = members - int(received["distinct_added"])  # type: ignore[call-overload]
        duplicates = int(received["duplicate_rows"])  # type: ignore[call-overload]
        rerun.received = {**received, "rows": int(received["rows"]) - killed.rows}  # type: ignore[call-overload]
        bound = case.in_flight()
        print(f"  {case.label} kill at {killed.rows:,} rows, rerun: {rerun.rows:,} rows in {rerun.seconds:.1f}s; "
              f"{duplicates:,} duplicates" + (f" (in flight at most {bound:,})" if bound else "") + f", {lost:,} lost",
              flush=True)
        rows.append(Row(tool, f"kill -9 at {kill_pct:g}%", case.batch, case.concurrency, [killed], expect(
            killed.exit_code == -signal.SIGKILL, f"{case.label}: killed by SIGKILL", problems)))
        rerun_ok = rerun.exit_code == 0 and lost == 0 and (bound is None or duplicates <= bound)
        rows.append(Row(tool, "rerun after kill", case.batch, case.concurrency, [rerun], expect(
            rerun_ok, f"{case.label} rerun: nothing lost" + (", duplicates within the batches in flight" if bound else ""),
            problems) + case.notes["rerun"], duplicates=duplicates, lost=lost))
    return rows


def ceiling(receiver: Receiver, secret: str, rows: int, batch: int, concurrency: int) -> tuple[float, float]:
    """The receiver's own rate (rows/s over its first-to-last request span) and
    the load client's wall rate, for SPEC 4.1 bodies of ``batch`` rows."""
    receiver.reset("ceiling")
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--load-client", receiver.url("ceiling"), "--load-secret", secret,
                    "--members", str(rows), "--batch-sizes", str(batch), "--concurrency", str(concurrency)], check=True)
    wall = time.perf_counter() - started
    stats = receiver.stats("ceiling")
    received = int(stats["added"])  # type: ignore[call-overload]
    if received != rows:
        raise SystemExit(f"ceiling: the receiver counted {received} rows of {rows}")
    return received / float(stats["seconds"]), wall  # type: ignore[arg-type]


# ---- the report -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sync", "segments"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({cpu})",
        "ram": f"{int(meminfo[1]) / 1024 / 1024:.1f} GiB",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "segments": commit + (" (uncommitted changes in sync/ or segments/)" if dirty else ""),
    }


def table(rows: list[Row]) -> list[str]:
    head = ["tool", "scenario", "batch", "conc.", "rows sent", "seconds", "rows/s", "receiving s", "CPU s",
            "peak RSS MiB", "duplicates", "lost", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        median = row.median
        lines.append("| " + " | ".join([
            row.tool, row.scenario, f"{row.batch:,}", str(row.concurrency), f"{median.rows:,}",
            f"{median.seconds:.2f}", f"{row.rows_per_s:,.0f}", f"{float(median.received.get('seconds', 0)):.2f}",
            f"{median.cpu_seconds:.2f}",
            f"{row.peak_rss_mib:.0f}", "" if row.duplicates is None else f"{row.duplicates:,}",
            "" if row.lost is None else f"{row.lost:,}", row.check,
        ]) + " |")
    return lines


def ratios(rows: list[Row]) -> tuple[list[str], list[str]]:
    """Lines comparing ours with drt at equal batch size, and the unmet targets."""
    lines, missed = [], []
    by = {(r.tool, r.scenario, r.batch, r.concurrency): r for r in rows}
    drt_initial = {r.batch: r for r in rows if r.tool == "drt" and r.scenario == "initial"}
    for row in rows:
        if row.tool != "ours" or row.scenario != "initial" or row.batch not in drt_initial:
            continue
        theirs = drt_initial[row.batch]
        ratio = row.rows_per_s / theirs.rows_per_s
        rss_ok = row.peak_rss_mib < TARGET_RSS_MIB
        lines.append(f"- batch {row.batch:,}, concurrency {row.concurrency}: ours/drt rows/s = "
                     f"{row.rows_per_s:,.0f} / {theirs.rows_per_s:,.0f} = **{ratio:.2f}x** "
                     f"(target {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'missed'}); peak RSS "
                     f"{row.peak_rss_mib:.0f} vs {theirs.peak_rss_mib:.0f} MiB (target < {TARGET_RSS_MIB:.0f}: "
                     f"{'met' if rss_ok else 'missed'})")
        if ratio < TARGET_RATIO:
            missed.append(f"rows/s at batch {row.batch:,}, concurrency {row.concurrency}: {ratio:.2f}x")
        if not rss_ok:
            missed.append(f"peak RSS at batch {row.batch:,}, concurrency {row.concurrency}: {row.peak_rss_mib:.0f} MiB")
    for row in rows:
        theirs = by.get(("drt", row.scenario, row.batch, 1))
        if row.tool != "ours" or theirs is None:
            continue
        if row.scenario == "1% change":
            lines.append(f"- 1% change, batch {row.batch:,}, concurrency {row.concurrency}: ours sent "
                         f"{row.median.rows:,} rows in {row.median.seconds:.1f}s, drt {theirs.median.rows:,} in "
                         f"{theirs.median.seconds:.1f}s")
        if row.scenario == "rerun after kill":
            lines.append(f"- kill -9 at 40% then rerun, batch {row.batch:,}, concurrency {row.concurrency}: ours "
                         f"{row.duplicates:,} duplicates, {row.lost:,} lost; drt {theirs.duplicates:,} duplicates, "
                         f"{theirs.lost:,} lost")
    for row in rows:
        if row.tool == "ours" and row.scenario != "initial" and row.peak_rss_mib >= TARGET_RSS_MIB:
            missed.append(f"peak RSS of {row.scenario} at batch {row.batch:,}: {row.peak_rss_mib:.0f} MiB")
    return lines, missed


def report(args: argparse.Namespace, info: dict[str, str], ceilings: dict[int, tuple[float, float]],
           rows: list[Row], problems: list[str]) -> str:
    ratio_lines, missed = ratios(rows)
    out = [
        "# Sync benchmark: `segments sync` beside drt-core",
        "",
        f"Written by `bench/sync_bench.py` on {info['date']}; run: `{' '.join(sys.argv)}`.",
        "",
        f"- machine: {info['cpus']} CPUs, {info['ram']} RAM, load average at the end {info['load']}; "
        "shared with other work, so the figures are noisy",
        f"- {info['os']}, Python {info['python']}, duckdb {info['duckdb']}",
        f"- segments at {info['segments']}; drt-core and its duckdb: {info['drt']}",
        f"- data: {args.members:,} members of one segment (users table of {args.members + args.change:,}); "
        f"the change: {args.change:,} leave, {args.change:,} join",
        f"- each timed scenario run {args.repeats} time(s): rows/s is the **median** of the repeats and seconds "
        "those of the median run; peak RSS is the **highest** of the repeats",
        "- seconds: process start to exit (start-up and planning included); receiving s: the receiver's "
        "first to last request; CPU s: the process's user + system time (less disturbed by the machine's other "
        "work than seconds); rows sent: rows the receiver counted (adds + removes)",
        "- both tools send `user_id` and `email` per member to the same receiver process; ours signs "
        "(Standard Webhooks, verified by the receiver), drt posts a `{\"rows\": [...]}` batch_template",
        "- what the figures say, what changed in `sync/` to get them and what is left: `bench/README.md`",
        "",
        "Receiver ceiling (a load client posting pre-built signed bodies, concurrency 2; the client shares the "
        "2 cores, so this is a lower bound):",
        "",
    ]
    out += [f"- batch {b:,}: {rate:,.0f} rows/s at the receiver ({args.members / wall:,.0f} rows/s load-client wall)"
            for b, (rate, wall) in ceilings.items()]
    out += ["", *table(rows), "", "Ours against drt at equal batch size:", "", *ratio_lines, ""]
    out += ["Targets of issue 3 " + ("all met." if not missed and not problems else "not all met:")]
    out += [f"- missed: {m}" for m in missed] + [f"- check failed: {p}" for p in problems]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="segments sync vs drt-core to one loopback receiver")
    parser.add_argument("--members", type=int, default=1_000_000, help="segment size (default 1M)")
    parser.add_argument("--change-pct", type=float, default=1.0, help="%% of members that leave (and as many join)")
    parser.add_argument("--batch-sizes", default="10000,100000", help="comma-separated batch sizes, for both tools")
    parser.add_argument("--concurrency", default="2,4", help="comma-separated concurrency for ours (2 is the default)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed scenario (median reported)")
    parser.add_argument("--kill-pct", type=float, default=40.0, help="SIGKILL once this %% of rows arrived")
    parser.add_argument("--skip-drt", action="store_true", help="only ours (no comparison)")
    parser.add_argument("--drt-venv", type=Path, default=BENCH / ".venv-drt")
    parser.add_argument("--work", type=Path, default=BENCH / ".work", help="scratch folder (warehouses, logs)")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS-sync.md", help="where to write the note")
    parser.add_argument("--load-client", help=argparse.SUPPRESS)
    parser.add_argument("--load-secret", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.load_client:
        load_client(args.load_client, args.load_secret, args.members, batch_sizes[0], concurrencies[0])
        return 0
    args.change = int(args.members * args.change_pct / 100)

    info = machine()
    info["drt"] = "skipped" if args.skip_drt else Drt.ensure_venv(args.drt_venv.resolve())
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = work / "base.duckdb"
    started = time.perf_counter()
    write_warehouse(base, args.members, args.change)
    print(f"wrote {args.members:,} members to {base} in {time.perf_counter() - started:.1f}s", flush=True)

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = Receiver({"ours": secret, "ceiling": secret})
    rows: list[Row] = []
    problems: list[str] = []
    ceilings: dict[int, tuple[float, float]] = {}
    try:
        for batch in batch_sizes:
            ceilings[batch] = ceiling(receiver, secret, args.members, batch, 2)
            print(f"receiver ceiling at batch {batch:,}: {ceilings[batch][0]:,.0f} rows/s", flush=True)
        ours = Ours(work, receiver, secret)
        drt = Drt(work, receiver, args.drt_venv.resolve())
        for batch in batch_sizes:
            cases: list[Case] = [OursCase(ours, base, batch, c, args.members, args.change) for c in concurrencies]
            cases += [] if args.skip_drt else [DrtCase(drt, base, batch, args.members)]
            rows += bench_batch_size(cases, args.members, args.repeats, args.kill_pct, problems)
    finally:
        receiver.close()
    note = report(args, info, ceilings, rows, problems)
    print("\n" + note)
    args.out.write_text(note)
    print(f"written to {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
