"""Build benchmark (issue 7): `segments build` of 30 segments beside a one-pass floor
and 30 hand-written queries, compile and preview latency, and an incremental refresh.

    .venv/bin/python bench/build_bench.py                   # 1M users, about 21M events
    .venv/bin/python bench/build_bench.py --users 20000     # a quick look (a minute or two)

What it does, in one run on the same data:

0. Generates demo data (``segments.demo_data.generate``) with its anchor one day after
   ``--as-of`` T, and writes a DuckDB warehouse with every user and the events up to T
   (in time order); the events of (T, T+1d] go to a Parquet file for part 6.
1. floor: ``SELECT user_id, count(*) FROM raw.events GROUP BY user_id`` as
   ``CREATE TEMP TABLE AS``, timed inside one DuckDB connection with every core
   (median of ``--repeats``): the least any build reading the events must pay.
2. build: ``segments build --specs bench/specs --warehouse W --as-of T`` as a
   subprocess (30 segments: ``bench/specs``): wall time, CPU, peak RSS (of the largest
   process and of the whole process tree, sampled from /proc), and the
   SQL-only time from dbt's ``run_results.json``: the sum of the models' and of the
   tests' ``execution_time``, and dbt's ``elapsed_time``.
3. handwritten: ``bench/handwritten/<segment>.sql``, one standalone query per
   segment over ``raw.users`` / ``raw.events`` as a team without this project would
   write it, run one after another (``CREATE TEMP TABLE AS``, one connection, every
   core), then each member set is compared with the build's ``main.segment_membership``
   (holdout included). A difference is a failure: the script says so loudly and exits 1.
4. compile: 200 spec files (variants of the bench specs with other windows and
   thresholds) timed with ``pipeline.compile_specs`` in-process (median of
   ``--repeats``) and ``segments compile --specs DIR`` as a subprocess.
5. preview: ``segments preview NAME`` as a subprocess and ``pipeline.preview``
   in-process for a window count, a sequence and a derived segment (median of
   ``--repeats``); each size is checked against the build.
6. incremental: appends the events of (T, T+1d] to ``raw.events`` and runs
   ``segments build --as-of T+1d`` on the warehouse built at T, then a full refresh at
   T+1d on the same warehouse (``--full-refresh``). Both are timed as in 2, and their
   memberships must be identical (segment_name, user_id, is_holdout).
7. Reads the sync benchmark's figures from ``bench/RESULTS-sync.md`` (not rerun).

It prints the figures and ratios next to the targets of issue 7 and writes them, with
the machine, versions, date and command line, to ``bench/RESULTS.md``.

Every timed build starts without dbt's partial-parse file, as a scheduled build does
(its ``as_of`` var changes, and dbt parses everything again when vars change). The
build's dbt project and scratch files go under ``--workdir`` (``SEGMENTS_WORK_DIR`` is
set to a folder there), which is emptied first. This is a script, not a test: it
asserts no timings, only that the memberships agree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SPECS = BENCH / "specs"
HANDWRITTEN = BENCH / "handwritten"
SYNC_RESULTS = BENCH / "RESULTS-sync.md"
sys.path.insert(0, str(BENCH))
from sync_bench import machine  # noqa: E402 - the sync benchmark's machine description

from segments import demo_data, paths, pipeline  # noqa: E402

PARTS = ("floor", "build", "handwritten", "compile", "preview", "incremental")
DEFAULT_AS_OF = "2026-11-01T00:00:00"
PREVIEWS = {"window count": "pricing_page_visitors", "sequence": "abandoned_cart", "derived": "loyal_newcomers"}
COMPILE_SPECS = 200
EVENT_NODES = re.compile("measures|rollup|events")  # the models that read the events
# Targets of issue 7
TARGET_BUILD_OVER_FLOOR = 2.0  # build at most 2x the floor
TARGET_HANDWRITTEN_OVER_BUILD = 3.0  # at least 3x faster than the hand-written queries
TARGET_INCREMENTAL_SHARE = 0.20  # an incremental refresh at most 20% of a full build
TARGET_RSS_MIB = 500.0  # "within a few hundred MB"
RSS_SAMPLE_S = 0.2  # a sample costs about 4 ms of CPU


# ---- measuring a process -----------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack += children.get(pid, [])
    return tree


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: its resident memory now and at its peak."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(values.get("VmRSS", 0)), int(values.get("VmHWM", 0))


class TreeSampler(threading.Thread):
    """Samples a process tree's memory until stopped.

    wait4's ``ru_maxrss`` cannot be used: Linux counts the parent's resident memory at
    fork in the child's peak, so a child of this (large) process would report our size.
    Each process's ``VmHWM`` (its own peak since exec, never decreasing) read while it
    runs, and the sum of ``VmRSS`` over the tree at each sample, are what is kept.
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.tree_peak_kib, self.process_peak_kib = 0, 0

    def run(self) -> None:
        while not self.done.is_set():
            memory = [memory_kib(pid) for pid in process_tree(self.pid)]
            self.tree_peak_kib = max(self.tree_peak_kib, sum(rss for rss, _ in memory))
            self.process_peak_kib = max([self.process_peak_kib, *(hwm for _, hwm in memory)])
            self.done.wait(RSS_SAMPLE_S)


@dataclass
class Proc:
    """One measured subprocess."""

    seconds: float  # start to exit
    cpu_seconds: float  # user + system, its children included
    peak_rss_mib: float  # the largest process of the tree: its VmHWM (sampled while it runs)
    tree_rss_mib: float  # the whole tree at once: the largest sum of VmRSS sampled
    exit_code: int


def run_measured(cmd: list[str], log: Path) -> Proc:
    """Run ``cmd`` with its output appended to ``log``; time it and watch its memory."""
    with log.open("a") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # CPU times of the child and its children
        seconds = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return Proc(seconds, usage.ru_utime + usage.ru_stime, sampler.process_peak_kib / 1024,
                sampler.tree_peak_kib / 1024, process.returncode)


def run_checked(cmd: list[str], log: Path) -> Proc:
    proc = run_measured(cmd, log)
    if proc.exit_code != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise SystemExit(f"FAILED ({proc.exit_code}): {shlex.join(cmd)}\n{tail}")
    return proc


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def median_run(procs: list[Proc]) -> Proc:
    """The lower median of the runs by wall time: a real run."""
    return sorted(procs, key=lambda p: p.seconds)[(len(procs) - 1) // 2]


def segments_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("segments")), *args]


def sql_time(as_of: dt.datetime) -> str:
    return f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"


# ---- the data ----------------------------------------------------------------------------


@dataclass
class Data:
    users: int
    events: int  # loaded, up to as_of
    next_day_events: int  # in (as_of, as_of + 1 day], for part 6
    seconds: float


def write_data(warehouse: Path, next_day: Path, users: int, seed: int, as_of: dt.datetime) -> Data:
    """Every user and the events up to ``as_of`` into ``warehouse``, in time order; the
    events of the following day (the data's anchor is ``as_of`` + 1 day) to ``next_day``."""
    started = time.perf_counter()
    data = demo_data.generate(users, seed, as_of + dt.timedelta(days=1))
    con = duckdb.connect(str(warehouse))
    try:
        demo_data.write_duckdb(data, con, events_table="bench_load.events")
        del data
        cut = sql_time(as_of)
        con.execute(f"CREATE TABLE raw.events AS SELECT * FROM bench_load.events WHERE occurred_at <= {cut}")
        con.execute(f"COPY (SELECT * FROM bench_load.events WHERE occurred_at > {cut} ORDER BY occurred_at, event_id) "
                    f"TO '{next_day}' (FORMAT parquet)")
        con.execute("DROP SCHEMA bench_load CASCADE")
        con.execute("CHECKPOINT")
        counts = [con.execute(q).fetchone()[0] for q in (  # type: ignore[index]
            "SELECT count(*) FROM raw.users", "SELECT count(*) FROM raw.events",
            f"SELECT count(*) FROM read_parquet('{next_day}')")]
    finally:
        con.close()
    return Data(*counts, time.perf_counter() - started)


def connect(warehouse: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(warehouse), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {os.cpu_count()}")
    return con


# ---- 1. the floor ------------------------------------------------------------------------


@dataclass
class Floor:
    seconds: float  # median
    runs: list[float]


def measure_floor(warehouse: Path, repeats: int) -> Floor:
    """One GROUP BY pass over the events, in one connection (the first run is the coldest)."""
    con = connect(warehouse)
    try:
        query = "CREATE OR REPLACE TEMP TABLE floor AS SELECT user_id, count(*) AS n FROM raw.events GROUP BY user_id"
        runs = [timed(lambda: con.execute(query)) for _ in range(repeats)]
    finally:
        con.close()
    return Floor(statistics.median(runs), runs)


# ---- 2. our build ------------------------------------------------------------------------


@dataclass
class DbtTimes:
    """What dbt's run_results.json says about one build."""

    models: float  # sum of the models' execution_time
    tests: float  # sum of the tests' execution_time
    elapsed: float  # dbt's elapsed_time (2 threads: less than models + tests)
    nodes: dict[str, float]  # "model name" or "test name" -> execution_time

    def model_time(self, pattern: re.Pattern[str]) -> float:
        return sum(t for node, t in self.nodes.items() if node.startswith("model ") and pattern.search(node))


@dataclass
class Build:
    label: str
    as_of: dt.datetime
    proc: Proc
    dbt: DbtTimes


def dbt_project() -> Path:
    return pipeline.project_dir(SPECS, "duckdb")


def read_run_results(project: Path) -> DbtTimes:
    results = json.loads((project / "target" / "run_results.json").read_text())
    nodes: dict[str, float] = {}
    for node in results["results"]:
        kind, _, name = node["unique_id"].split(".", 2)
        nodes[f"{kind} {name}"] = float(node["execution_time"])
    total = {kind: sum(t for n, t in nodes.items() if n.startswith(kind + " ")) for kind in ("model", "test")}
    return DbtTimes(total["model"], total["test"], float(results["elapsed_time"]), nodes)


def measure_build(label: str, warehouse: Path, as_of: dt.datetime, log: Path, *flags: str) -> Build:
    """``segments build`` of the bench specs as a subprocess, parsing from scratch."""
    project = dbt_project()
    for stale in (project / "target" / "partial_parse.msgpack", project / "target" / "run_results.json"):
        stale.unlink(missing_ok=True)
    cmd = segments_cmd("build", "--specs", str(SPECS), "--warehouse", str(warehouse), "--as-of", as_of.isoformat(),
                       *flags)
    proc = run_checked(cmd, log)
    build = Build(label, as_of, proc, read_run_results(project))
    print(f"  {label}: {proc.seconds:.1f}s wall, dbt {build.dbt.elapsed:.1f}s (models {build.dbt.models:.1f}s, "
          f"tests {build.dbt.tests:.1f}s), peak RSS {proc.peak_rss_mib:.0f} MiB (tree {proc.tree_rss_mib:.0f})",
          flush=True)
    return build


# ---- 3. hand-written queries -------------------------------------------------------------


@dataclass
class Query:
    segment: str
    seconds: float
    members: int
    built: int  # members in the build
    only_handwritten: int
    only_build: int
    examples: list[str]  # a few differing user ids

    @property
    def ok(self) -> bool:
        return self.only_handwritten == self.only_build == 0


def handwritten_sql(segment: str, as_of: dt.datetime) -> str:
    text = (HANDWRITTEN / f"{segment}.sql").read_text()
    uploads = str(SPECS / "uploads").replace("'", "''")
    return text.replace("{as_of}", sql_time(as_of)).replace("{uploads}", uploads)


def compare_with_build(con: duckdb.DuckDBPyConnection, table: str, segment: str) -> tuple[int, int, list[str]]:
    """Members only in ``table``, only in the build's membership, and a few of each."""
    built = f"SELECT user_id FROM main.segment_membership WHERE segment_name = '{segment}'"
    ours = f"SELECT user_id FROM {table}"
    counts, examples = [], []
    for left, right, tag in ((ours, built, "+"), (built, ours, "-")):
        only = f"({left} EXCEPT {right})"
        counts.append(con.execute(f"SELECT count(*) FROM {only}").fetchone()[0])  # type: ignore[index]
        examples += [tag + r[0] for r in con.execute(f"SELECT user_id FROM {only} ORDER BY 1 LIMIT 3").fetchall()]
    return counts[0], counts[1], examples


def run_handwritten(warehouse: Path, as_of: dt.datetime, segments: list[str]) -> list[Query]:
    """All queries one after another, timed; then each compared with the build."""
    con = connect(warehouse)
    try:
        seconds = {}
        for i, segment in enumerate(segments):
            sql = handwritten_sql(segment, as_of)
            seconds[segment] = timed(lambda: con.execute(f"CREATE TEMP TABLE hand_{i} AS {sql}"))
        queries = []
        for i, segment in enumerate(segments):
            members = con.execute(f"SELECT count(DISTINCT user_id) FROM hand_{i}").fetchone()[0]  # type: ignore[index]
            built = con.execute("SELECT count(*) FROM main.segment_membership WHERE segment_name = ?",
                                [segment]).fetchone()[0]  # type: ignore[index]
            queries.append(Query(segment, seconds[segment], members, built, *compare_with_build(con, f"hand_{i}", segment)))
    finally:
        con.close()
    return queries


def built_segments(warehouse: Path) -> list[str]:
    con = connect(warehouse)
    try:
        return [r[0] for r in con.execute("SELECT DISTINCT segment_name FROM main.segment_catalog ORDER BY 1").fetchall()]
    finally:
        con.close()


# ---- 4. compile time ---------------------------------------------------------------------


@dataclass
class Compile:
    specs: int
    segments: int
    in_process: float  # median of compile_specs
    cli: Proc  # the median run of `segments compile`
    runs: list[float] = field(default_factory=list)


def spec_variant(text: str, name: str, variant: int) -> str:
    """The spec renamed ``<name>_v<variant>`` with other windows and thresholds (its
    references to other segments keep pointing at the originals)."""
    shift = variant % 11
    text = re.sub(r"^name: \S+", f"name: {name}_v{variant}", text, count=1, flags=re.M)
    text = re.sub(r"(within: |now - )(\d+)([smhdw])", lambda m: f"{m[1]}{int(m[2]) + shift}{m[3]}", text)
    return re.sub(r"\b(gte|lte|gt|lt): (\d+)\b", lambda m: f"{m[1]}: {int(m[2]) * (1 + shift % 4)}", text)


def write_variants(target: Path, count: int) -> None:
    """``count`` spec files: the bench specs, then renamed variants of them."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(SPECS, target)
    originals = sorted(p for p in SPECS.glob("*.yml") if not p.name.startswith("_"))
    for n in range(count - len(originals)):
        source = originals[n % len(originals)]
        variant = n // len(originals) + 1
        (target / f"{source.stem}_v{variant}.yml").write_text(spec_variant(source.read_text(), source.stem, variant))


def measure_compile(work: Path, repeats: int, log: Path) -> Compile:
    specs = work / "compile-specs"
    write_variants(specs, COMPILE_SPECS)
    compiled = pipeline.compile_specs(specs, "duckdb")  # also a warm-up
    runs = [timed(lambda: pipeline.compile_specs(specs, "duckdb")) for _ in range(repeats)]
    procs = []
    for _ in range(repeats):
        shutil.rmtree(pipeline.project_dir(specs, "duckdb").parent, ignore_errors=True)  # every model written
        procs.append(run_checked(segments_cmd("compile", "--specs", str(specs)), log))
    spec_files = len([p for p in specs.glob("*.yml") if not p.name.startswith("_")])
    return Compile(spec_files, len(compiled.compiled.segments), statistics.median(runs), median_run(procs), runs)


# ---- 5. preview --------------------------------------------------------------------------


@dataclass
class PreviewRun:
    kind: str
    segment: str
    cli: Proc  # the median run of `segments preview`
    in_process: float  # median
    size: int
    built: int | None  # the build's size, when it ran


def measure_preview(warehouse: Path, as_of: dt.datetime, repeats: int, log: Path,
                    built: dict[str, int] | None) -> list[PreviewRun]:
    runs = []
    for kind, segment in PREVIEWS.items():
        cmd = segments_cmd("preview", segment, "--specs", str(SPECS), "--warehouse", str(warehouse),
                           "--as-of", as_of.isoformat())
        procs = [run_checked(cmd, log) for _ in range(repeats)]
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            size = pipeline.preview(SPECS, warehouse, segment, as_of).size
            seconds.append(time.perf_counter() - started)
        runs.append(PreviewRun(kind, segment, median_run(procs), statistics.median(seconds), size,
                               None if built is None else built.get(segment, 0)))
    return runs


def segment_sizes(warehouse: Path) -> dict[str, int]:
    con = connect(warehouse)
    try:
        return dict(con.execute("SELECT segment_name, count(*) FROM main.segment_membership GROUP BY 1").fetchall())
    finally:
        con.close()


# ---- 6. incremental refresh --------------------------------------------------------------


@dataclass
class Incremental:
    appended: int
    incremental: Build
    full: Build
    full_refresh: str  # how the full refresh was made
    only_incremental: int
    only_full: int
    differing_segments: list[tuple[str, int]]

    @property
    def ok(self) -> bool:
        return self.only_incremental == self.only_full == 0


def append_events(warehouse: Path, parquet: Path) -> int:
    """The next day's events, appended in time order, as a loader would."""
    con = connect(warehouse, read_only=False)
    try:
        con.execute(f"INSERT INTO raw.events SELECT * FROM read_parquet('{parquet}') ORDER BY occurred_at, event_id")
        con.execute("CHECKPOINT")
        return con.execute(f"SELECT count(*) FROM read_parquet('{parquet}')").fetchone()[0]  # type: ignore[index]
    finally:
        con.close()


MEMBERSHIP_COLUMNS = "segment_name, user_id, is_holdout"


def snapshot_membership(warehouse: Path, parquet: Path) -> None:
    con = connect(warehouse)
    try:
        con.execute(f"COPY (SELECT {MEMBERSHIP_COLUMNS} FROM main.segment_membership) TO '{parquet}' (FORMAT parquet)")
    finally:
        con.close()


def compare_snapshot(warehouse: Path, parquet: Path) -> tuple[int, int, list[tuple[str, int]]]:
    """Rows only in the snapshot, only in the current membership, and per segment."""
    con = connect(warehouse)
    try:
        current = f"SELECT {MEMBERSHIP_COLUMNS} FROM main.segment_membership"
        snapshot = f"SELECT {MEMBERSHIP_COLUMNS} FROM read_parquet('{parquet}')"
        diff = f"(({snapshot} EXCEPT ALL {current}) UNION ALL ({current} EXCEPT ALL {snapshot}))"
        only_snapshot = con.execute(f"SELECT count(*) FROM ({snapshot} EXCEPT ALL {current})").fetchone()[0]  # type: ignore[index]
        only_current = con.execute(f"SELECT count(*) FROM ({current} EXCEPT ALL {snapshot})").fetchone()[0]  # type: ignore[index]
        per_segment = con.execute(f"SELECT segment_name, count(*) FROM {diff} GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    return only_snapshot, only_current, per_segment


def measure_incremental(warehouse: Path, next_day: Path, as_of: dt.datetime, work: Path, log: Path) -> Incremental:
    """On the warehouse built at ``as_of``: one more day of events, an incremental build
    and a full refresh at ``as_of`` + 1 day, and their memberships compared."""
    later = as_of + dt.timedelta(days=1)
    appended = append_events(warehouse, next_day)
    print(f"  appended {appended:,} events of ({as_of}, {later}]", flush=True)
    incremental = measure_build("incremental", warehouse, later, log)
    snapshot = work / "incremental-membership.parquet"
    snapshot_membership(warehouse, snapshot)
    how = "`segments build --full-refresh`"
    full = measure_build("full refresh", warehouse, later, log, "--full-refresh")
    only_incremental, only_full, per_segment = compare_snapshot(warehouse, snapshot)
    return Incremental(appended, incremental, full, how, only_incremental, only_full, per_segment)


# ---- the report --------------------------------------------------------------------------


@dataclass
class Results:
    data: Data | None = None
    floor: Floor | None = None
    build: Build | None = None
    build_reported: bool = True
    handwritten: list[Query] | None = None
    compile: Compile | None = None
    previews: list[PreviewRun] | None = None
    incremental: Incremental | None = None
    problems: list[str] = field(default_factory=list)


def machine_info() -> dict[str, str]:
    info = machine()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    info["cpus"] = f"{os.cpu_count()} ({model[1].strip() if model else info['cpus']})"
    for package in ("dbt-core", "dbt-duckdb", "sqlglot"):
        info[package] = importlib.metadata.version(package)
    return info


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def ratio_lines(r: Results) -> list[str]:
    """The ratios of issue 7, each with its target."""
    lines: list[str] = []
    build = r.build if r.build_reported else None
    if build and r.floor:
        f = r.floor.seconds
        for what, seconds in (("wall", build.proc.seconds), ("SQL-only (sum of models)", build.dbt.models),
                              ("dbt elapsed", build.dbt.elapsed)):
            ratio = seconds / f
            lines.append(f"- build / floor, {what}: {seconds:.2f} / {f:.2f} s = **{ratio:.1f}x** "
                         f"(target <= {TARGET_BUILD_OVER_FLOOR:g}x: {verdict(ratio <= TARGET_BUILD_OVER_FLOOR)})")
    if build and r.handwritten:
        hand = sum(q.seconds for q in r.handwritten)
        for what, seconds in (("wall", build.proc.seconds), ("SQL-only (sum of models)", build.dbt.models)):
            ratio = hand / seconds
            lines.append(f"- hand-written / build, {what}: {hand:.2f} / {seconds:.2f} s = **{ratio:.2f}x** "
                         f"(target >= {TARGET_HANDWRITTEN_OVER_BUILD:g}x: {verdict(ratio >= TARGET_HANDWRITTEN_OVER_BUILD)})")
    if build:
        rss = build.proc.tree_rss_mib
        lines.append(f"- build peak RSS, whole process tree: {rss:.0f} MiB (largest process {build.proc.peak_rss_mib:.0f}"
                     f" MiB; target a few hundred MB, <= {TARGET_RSS_MIB:.0f} MiB: {verdict(rss <= TARGET_RSS_MIB)})")
    if r.incremental:
        inc, full = r.incremental.incremental, r.incremental.full
        pairs = (("wall", inc.proc.seconds, full.proc.seconds),
                 ("models reading the events (measures|rollup|events)",
                  inc.dbt.model_time(EVENT_NODES), full.dbt.model_time(EVENT_NODES)),
                 ("all models", inc.dbt.models, full.dbt.models))
        for what, a, b in pairs:
            ratio = a / b if b else float("nan")
            lines.append(f"- incremental / full, {what}: {a:.2f} / {b:.2f} s = **{ratio:.0%}** "
                         f"(target <= {TARGET_INCREMENTAL_SHARE:.0%}: {verdict(ratio <= TARGET_INCREMENTAL_SHARE)})")
    return lines


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(row) + " |" for row in rows)]


def proc_cells(proc: Proc) -> list[str]:
    return [f"{proc.seconds:.2f}", f"{proc.cpu_seconds:.2f}", f"{proc.peak_rss_mib:.0f}", f"{proc.tree_rss_mib:.0f}"]


def build_rows(builds: list[Build]) -> list[str]:
    rows = [[b.label, str(b.as_of), *proc_cells(b.proc), f"{b.dbt.elapsed:.2f}", f"{b.dbt.models:.2f}",
             f"{b.dbt.tests:.2f}", f"{b.proc.seconds - b.dbt.elapsed:.2f}"] for b in builds]
    return table(["build", "as_of", "wall s", "CPU s", "peak RSS MiB (largest process)", "peak RSS MiB (tree)",
                  "dbt elapsed s", "models s", "tests s", "outside dbt's run s"], rows)


def node_rows(builds: list[Build]) -> list[str]:
    names = sorted({n for b in builds for n in b.dbt.nodes}, key=lambda n: (not n.startswith("model "), n))
    rows = [[n, *(f"{b.dbt.nodes[n]:.3f}" if n in b.dbt.nodes else "" for b in builds)] for n in names]
    return table(["node", *(f"{b.label} s" for b in builds)], rows)


def sync_section() -> list[str]:
    """The sync benchmark's figures, read from its results file (not rerun here)."""
    if not SYNC_RESULTS.exists():
        return [f"`{SYNC_RESULTS.relative_to(ROOT)}` is missing: run `make bench-sync`."]
    text = SYNC_RESULTS.read_text().splitlines()
    written = next((line for line in text if line.startswith("Written by")), "")
    figures = [line for line in text if line.startswith("|")]
    headline = [line for line in text if line.startswith("- batch") and "ours/drt" in line]
    return [f"Not rerun here: the figures of [`RESULTS-sync.md`](RESULTS-sync.md) ({written.rstrip('.')}).", "",
            "Headline (ours against drt-core at equal batch size, 1M members):", "", *headline, "", *figures]


def report(args: argparse.Namespace, info: dict[str, str], r: Results) -> str:
    out = [
        "# Build benchmark: `segments build` of 30 segments",
        "",
        f"Written by `bench/build_bench.py` on {info['date']}; run: `{shlex.join(['python', *sys.argv])}`.",
        "",
        f"- machine: {info['cpus']} CPUs, {info['ram']} RAM, load average at the end {info['load']}; "
        "shared with other work, so the figures are noisy",
        f"- {info['os']}, Python {info['python']}, duckdb {info['duckdb']}, dbt-core {info['dbt-core']}, "
        f"dbt-duckdb {info['dbt-duckdb']}, sqlglot {info['sqlglot']}",
        f"- segments at {info['segments']}",
        f"- as_of {args.as_of}, seed {args.seed}, repeats {args.repeats}; skipped: {', '.join(args.skip) or 'nothing'}",
        "- how each figure is made: the docstring of `bench/build_bench.py` and `bench/README.md`",
    ]
    if r.data:
        d = r.data
        out.append(f"- data: {d.users:,} users, {d.events:,} events up to as_of (and {d.next_day_events:,} the day "
                   f"after, for the incremental refresh); generated and written in {d.seconds:.0f} s")
    out += ["", "## Ratios and targets (issue 7)", "", *(ratio_lines(r) or ["- (nothing to compare: parts skipped)"])]
    if r.problems:
        out += ["", "## FAILED checks", "", *(f"- {p}" for p in r.problems)]
    out += figures_section(r)
    out += ["", "## Sync (issue 3)", "", *sync_section()]
    return "\n".join(out) + "\n"


def figures_section(r: Results) -> list[str]:
    out = ["", "## Figures", ""]
    if r.floor:
        runs = ", ".join(f"{s:.3f}" for s in r.floor.runs)
        out.append(f"- floor, one `GROUP BY user_id` pass over raw.events ({os.cpu_count()} threads): "
                   f"**{r.floor.seconds:.3f} s** (median; runs {runs})")
    if r.handwritten:
        total = sum(q.seconds for q in r.handwritten)
        bad = sum(not q.ok for q in r.handwritten)
        out.append(f"- hand-written queries, 30 one after another: **{total:.2f} s**; membership "
                   + ("identical to the build's for every segment" if not bad else f"**DIFFERS for {bad} segments**"))
    if r.compile:
        c = r.compile
        out.append(f"- compile of {c.specs} spec files ({c.segments} segments): `compile_specs` in-process "
                   f"**{c.in_process:.2f} s** (median of {', '.join(f'{s:.2f}' for s in c.runs)}); "
                   f"`segments compile` **{c.cli.seconds:.2f} s** wall, {c.cli.tree_rss_mib:.0f} MiB")
    builds = [b for b in (r.build if r.build_reported else None,) if b]
    if r.incremental:
        builds += [r.incremental.incremental, r.incremental.full]
        inc = r.incremental
        out.append(f"- incremental refresh: {inc.appended:,} events appended; full refresh by {inc.full_refresh}; "
                   + ("memberships identical" if inc.ok else
                      f"**memberships DIFFER**: {inc.only_incremental:,} rows only in the incremental build, "
                      f"{inc.only_full:,} only in the full refresh"))
    if builds:
        out += ["", "### Builds", "", *build_rows(builds)]
    if r.previews:
        rows = [[p.kind, p.segment, *proc_cells(p.cli), f"{p.in_process:.3f}", f"{p.size:,}",
                 "" if p.built is None else ("ok" if p.size == p.built else f"FAILED: build has {p.built:,}")]
                for p in r.previews]
        out += ["", "### Preview", "", *table(["kind", "segment", "wall s", "CPU s", "peak RSS MiB (largest process)",
                                               "peak RSS MiB (tree)", "in-process s", "size", "size = build's"], rows)]
    if r.handwritten:
        rows = [[q.segment, f"{q.seconds:.3f}", f"{q.members:,}", f"{q.built:,}",
                 "ok" if q.ok else f"FAILED: +{q.only_handwritten:,} -{q.only_build:,} e.g. {' '.join(q.examples)}"]
                for q in r.handwritten]
        out += ["", "### Hand-written queries (`bench/handwritten/`)", "",
                *table(["segment", "seconds", "members", "build's members", "same members"], rows)]
    if builds:
        out += ["", "### dbt nodes (execution_time from run_results.json)", "", *node_rows(builds)]
    return out


# ---- the run -----------------------------------------------------------------------------


def check(ok: bool, problem: str, r: Results) -> None:
    if not ok:
        r.problems.append(problem)
        print(f"\n!!!!! FAILED: {problem}\n", flush=True)


def bench_handwritten(r: Results, warehouse: Path, as_of: dt.datetime) -> None:
    segments = built_segments(warehouse)
    files = sorted(p.stem for p in HANDWRITTEN.glob("*.sql"))
    check(files == segments, f"hand-written queries {files} are not the built segments {segments}", r)
    r.handwritten = run_handwritten(warehouse, as_of, [s for s in segments if s in files])
    for q in r.handwritten:
        check(q.ok, f"hand-written {q.segment}: {q.only_handwritten:,} users only in the hand-written query, "
                    f"{q.only_build:,} only in the build (e.g. {' '.join(q.examples)})", r)
    print(f"  hand-written: {sum(q.seconds for q in r.handwritten):.2f}s for {len(r.handwritten)} queries", flush=True)


def run_parts(args: argparse.Namespace, work: Path, r: Results) -> None:
    parts = [p for p in PARTS if p not in args.skip]
    warehouse, next_day, log = work / "warehouse.duckdb", work / "next-day-events.parquet", work / "build_bench.log"
    as_of = dt.datetime.fromisoformat(args.as_of)
    if set(parts) - {"compile"}:
        r.data = write_data(warehouse, next_day, args.users, args.seed, as_of)
        print(f"data: {r.data.users:,} users, {r.data.events:,} events (+{r.data.next_day_events:,} the next day) "
              f"in {r.data.seconds:.0f}s", flush=True)
    if "floor" in parts:
        r.floor = measure_floor(warehouse, args.repeats)
        print(f"  floor: {r.floor.seconds:.3f}s", flush=True)
    if set(parts) & {"build", "handwritten", "incremental"}:
        r.build_reported = "build" in parts  # the other parts need the build even when it is not reported
        r.build = measure_build("full build", warehouse, as_of, log)
    if "handwritten" in parts:
        bench_handwritten(r, warehouse, as_of)
    if "compile" in parts:
        r.compile = measure_compile(work, args.repeats, log)
        print(f"  compile of {r.compile.specs} specs: {r.compile.in_process:.2f}s in-process, "
              f"{r.compile.cli.seconds:.2f}s `segments compile`", flush=True)
    if "preview" in parts:
        r.previews = measure_preview(warehouse, as_of, args.repeats, log, segment_sizes(warehouse) if r.build else None)
        for p in r.previews:
            print(f"  preview {p.segment}: {p.cli.seconds:.2f}s, in-process {p.in_process:.3f}s", flush=True)
            check(p.built is None or p.size == p.built, f"preview {p.segment}: {p.size:,} members, build {p.built}", r)
    if "incremental" in parts:
        r.incremental = measure_incremental(warehouse, next_day, as_of, work, log)
        check(r.incremental.ok, "incremental and full-refresh memberships differ: "
                                f"{r.incremental.only_incremental:,} rows only in the incremental build, "
                                f"{r.incremental.only_full:,} only in the full refresh; per segment "
                                f"{r.incremental.differing_segments}", r)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="segments build beside a floor and hand-written queries (issue 7)")
    parser.add_argument("--users", type=int, default=1_000_000, help="demo users (default 1M: about 21M events)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo data")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF, help=f"the build's as_of T (default {DEFAULT_AS_OF})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the cheap measurements (median reported)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work", help="scratch folder (emptied first)")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="where to write the results")
    args = parser.parse_args()
    args.skip = [p for p in args.skip.split(",") if p]
    unknown = set(args.skip) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts to skip: {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    return args


def main() -> int:
    args = parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ[paths.WORK_DIR_ENV] = str(work / "segments")  # the build's dbt project, for us and the CLI
    results = Results()
    run_parts(args, work, results)
    note = report(args, machine_info(), results)
    print("\n" + note)
    args.out.write_text(note)
    print(f"written to {args.out}")
    if results.problems:
        print(f"\n!!!!! {len(results.problems)} check(s) FAILED: see above and {args.out}", file=sys.stderr)
    return 1 if results.problems else 0


if __name__ == "__main__":
    sys.exit(main())
