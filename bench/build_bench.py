"""Build benchmark (issue 12): `segments build` of 30 and 200 segments beside a one-pass
floor, one hand-fused query and hand-written queries, on time-ordered and shuffled events
and at several scales; compile and preview latency; refreshes after an hour, a day and
nothing new.

    .venv/bin/python bench/build_bench.py                   # 1M users, about 21M events
    .venv/bin/python bench/build_bench.py --users 20000     # a quick look (a few minutes)

What it does, in one run on the same data (parts can be skipped with ``--skip``):

0. Generates demo data (``segments.demo_data.generate``) with its anchor one day after
   ``--as-of`` T, and writes a DuckDB warehouse W with every user and the events up to T
   (in time order); the events of (T, T+1d] go to a Parquet file for the refresh part.
1. floor: ``SELECT user_id, count(*) FROM raw.events GROUP BY user_id`` as
   ``CREATE TEMP TABLE AS``, timed inside one DuckDB connection with every core
   (median of ``--repeats``): the least any build reading the events must pay.
2. build: ``segments build --specs bench/specs --warehouse W --as-of T`` as a
   subprocess (30 segments): "cold" (the first build after compile, without dbt's
   partial-parse file), then ``--repeats`` warm builds (dbt's partial parse kept, as a
   scheduled build finds it), whose median by wall time is the build's figure. Each: wall time, CPU, peak RSS (of the largest
   process and of the whole process tree, sampled from /proc), the SQL-only time from
   dbt's ``run_results.json`` (the sum of the models' and of the tests'
   ``execution_time``, dbt's ``elapsed_time``), and whether dbt parsed partially.
3. handfused: ``bench/handfused.sql``, one query computing the membership of all 30
   segments (median of ``--repeats``), compared with ``main.segment_membership``
   (segment, user; holdout users included). A difference is a failure (exit 1).
4. handwritten: ``bench/handwritten/<segment>.sql``, one standalone query per segment,
   run one after another and each compared with the build's membership (exit 1 on a
   difference).
5. compile: 200 spec files (variants of the bench specs) timed with
   ``pipeline.compile_specs`` in-process and ``segments compile`` as a subprocess.
6. preview: ``segments preview NAME`` as a subprocess and ``pipeline.preview``
   in-process for a window count, a sequence and a derived segment; sizes checked.
7. growth: exactly 200 segments (the 30 and generated variants with other windows and
   thresholds) built cold then warm on a copy of W; and 200 hand-written queries (the
   30 and 170 variants of them) timed one after another on W.
8. shuffled: a warehouse with the same users and events, ``raw.events`` written in
   ``hash(event_id)`` order: floor, build and the hand-fused query (checked) again.
9. scale: warehouses of about ``--scales`` million events (times ``--users``/1M), made
   from W by sampling users (``hash(user_id)``) or copying every user (``_r<k>``):
   events, users, floor, build.
10. refresh: on W built at T, one new hour of events and ``segments build --as-of
    T+1h``; the rest of the day and ``--as-of T+1d``; nothing new and ``--as-of
    T+1d+1min``. Each beside a full build at the same as_of on a copy of the same data
    (``--full-refresh`` when ``segments build`` has it); memberships must be identical
    (exit 1 otherwise). dbt's fixed overhead: a no-op ``dbt build --select
    tag:__none__`` through the same project (median of ``--repeats``).
11. Reads the sync benchmark's figures from ``bench/RESULTS-sync.md`` (not rerun).

It prints the figures and ratios next to the targets of issue 12 and writes them, with
the machine, versions, date and command line, to ``bench/RESULTS.md``.

Every build runs on one warehouse path (``<workdir>/build.duckdb``: each warehouse is
moved there for its build and back), as a deployment's scheduled builds do: dbt's
partial parse depends on the profile, which holds the path. The build's dbt projects and
scratch files go under ``--workdir`` (``SEGMENTS_WORK_DIR`` is set to a folder there),
which is emptied first. This is a script, not a test: it asserts no timings, only that
the memberships agree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SPECS = BENCH / "specs"
HANDWRITTEN = BENCH / "handwritten"
HANDFUSED = BENCH / "handfused.sql"
SYNC_RESULTS = BENCH / "RESULTS-sync.md"
REALTIME_RESULTS = BENCH / "RESULTS-realtime.md"
sys.path.insert(0, str(BENCH))
from sync_bench import machine  # noqa: E402 - the sync benchmark's machine description

from segments import demo_data, dbtrun, paths, pipeline  # noqa: E402

PARTS = ("floor", "build", "handfused", "handwritten", "compile", "preview", "growth", "shuffled", "scale", "refresh")
DEFAULT_AS_OF = "2026-11-01T00:00:00"
DEFAULT_SCALES = "5,20,80"  # million events at 1M users (scaled by --users / 1M)
PREVIEWS = {"window count": "pricing_page_visitors", "sequence": "abandoned_cart", "derived": "loyal_newcomers"}
COMPILE_SPECS = 200
GROWTH_SEGMENTS = 200
# hand-written queries whose variants are not a clean regex shift (windows or thresholds
# of traits, tier bounds, inlined references): their variants rerun the original query
UNCLEAN_VARIANTS = re.compile(r"^(rfm__|engagement__|top_spenders$|loyal_newcomers$)")
NOOP_SELECT = "tag:__none__"  # a dbt selection that matches nothing
# Targets of issue 12
TARGET_BUILD_OVER_FLOOR = 8.0  # full build wall at most 8x the floor
TARGET_SQL_OVER_HANDFUSED = 1.0  # the SQL part no slower than the hand-fused query
TARGET_GROWTH = 1.5  # 200 segments at most 1.5x the 30
TARGET_RSS_MIB = 1024.0  # peak RSS of the whole process tree
TARGET_REFRESH_DAY = 0.20  # refresh after one new day, share of a full build's wall
TARGET_REFRESH_HOUR = 0.10  # after one new hour
TARGET_PREVIEW_OVER_FLOOR = 2.0  # segments preview at most 2x the floor
RSS_SAMPLE_S = 0.2  # a sample costs about 4 ms of CPU
BUILD_WAREHOUSE: Path | None = None  # the one path every build runs on (set in main)


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


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Run ``cmd`` with its output appended to ``log``; time it and watch its memory."""
    with log.open("a") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env=None if env is None else {**os.environ, **env})
        sampler = TreeSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # CPU times of the child and its children
        seconds = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return Proc(seconds, usage.ru_utime + usage.ru_stime, sampler.process_peak_kib / 1024,
                sampler.tree_peak_kib / 1024, process.returncode)


def run_checked(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    proc = run_measured(cmd, log, env)
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


def compile_bytecode() -> None:
    """Write the bytecode of the project's own packages, as ``pip install`` (or a first
    run where Python may write it) leaves it. Where ``PYTHONDONTWRITEBYTECODE`` is set,
    as on some CI machines, every timed command would compile about fifty modules
    again (about 50 ms), which no installed copy does."""
    import compileall

    for package in ("segments", "sync", "orchestration"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def segments_cmd(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("segments")), *args]


def sql_time(as_of: dt.datetime) -> str:
    return f"TIMESTAMP '{as_of.isoformat(sep=' ')}'"


# ---- the data ----------------------------------------------------------------------------


@dataclass
class Data:
    users: int
    events: int  # loaded, up to as_of
    next_day_events: int  # in (as_of, as_of + 1 day], for the refreshes
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
    parse: str  # how dbt parsed: "partial" or "full (its reason)"


def dbt_project(specs: Path = SPECS) -> Path:
    return pipeline.project_dir(specs, "duckdb")


def read_run_results(project: Path) -> DbtTimes:
    path = project / "target" / "run_results.json"
    if not path.exists():  # an incremental refresh runs no dbt
        return DbtTimes(0.0, 0.0, 0.0, {})
    results = json.loads(path.read_text())
    nodes: dict[str, float] = {}
    for node in results["results"]:
        kind, _, name = node["unique_id"].split(".", 2)
        nodes[f"{kind} {name}"] = float(node["execution_time"])
    total = {kind: sum(t for n, t in nodes.items() if n.startswith(kind + " ")) for kind in ("model", "test")}
    return DbtTimes(total["model"], total["test"], float(results["elapsed_time"]), nodes)


def dbt_parse(project: Path) -> str:
    """How the last dbt invocation parsed the project, from its debug log."""
    log = project / "logs" / "dbt.log"
    if not log.exists():
        return "no dbt run (incremental refresh)"
    text = log.read_text(errors="replace")
    full = re.search(r"Unable to do partial parsing because ([^.\"]+)", text)
    if full:
        return f"full ({full[1]})"
    return "partial" if "Partial parsing enabled" in text else "full"


@contextmanager
def in_place(warehouse: Path) -> Iterator[Path]:
    """``warehouse`` moved to the one path every build uses while the block runs."""
    assert BUILD_WAREHOUSE is not None
    moved = [(warehouse.with_name(warehouse.name + tail), BUILD_WAREHOUSE.with_name(BUILD_WAREHOUSE.name + tail))
             for tail in ("", ".wal")]
    for source, target in moved:
        if source.exists():
            source.rename(target)
    try:
        yield BUILD_WAREHOUSE
    finally:
        for source, target in moved:
            if target.exists():
                target.rename(source)


def measure_build(label: str, warehouse: Path, as_of: dt.datetime, log: Path, *flags: str,
                  specs: Path = SPECS, cold: bool = False, full: bool = True) -> Build:
    """``segments build`` as a subprocess; ``cold``: without dbt's partial-parse file (the
    first build after compile), else with it, as a scheduled build finds it. ``full``:
    a full build (``--full-refresh``), else what ``segments build`` chooses (an
    incremental refresh after a build)."""
    if full:
        flags = tuple(dict.fromkeys((*full_refresh_flags()[0], *flags)))
    project = dbt_project(specs)
    stale = [project / "target" / "run_results.json", project / "logs" / "dbt.log"]
    for path in stale + ([project / "target" / "partial_parse.msgpack"] if cold else []):
        path.unlink(missing_ok=True)
    with in_place(warehouse) as path:
        cmd = segments_cmd("build", "--specs", str(specs), "--warehouse", str(path), "--as-of", as_of.isoformat(),
                           *flags)
        proc = run_checked(cmd, log)
    build = Build(label, as_of, proc, read_run_results(project), dbt_parse(project))
    print(f"  {label}: {proc.seconds:.1f}s wall, dbt {build.dbt.elapsed:.1f}s (models {build.dbt.models:.1f}s, "
          f"tests {build.dbt.tests:.1f}s), peak RSS {proc.peak_rss_mib:.0f} MiB (tree {proc.tree_rss_mib:.0f}), "
          f"dbt parse {build.parse}", flush=True)
    return build


def copy_warehouse(source: Path, target: Path) -> Path:
    for tail in ("", ".wal"):
        if Path(str(source) + tail).exists():
            shutil.copyfile(str(source) + tail, str(target) + tail)
    return target


def remove_warehouse(warehouse: Path) -> None:
    for tail in ("", ".wal"):
        Path(str(warehouse) + tail).unlink(missing_ok=True)
    shutil.rmtree(str(warehouse) + ".tmp", ignore_errors=True)


# ---- 3. one hand-fused query -------------------------------------------------------------


@dataclass
class Fused:
    seconds: float  # median
    runs: list[float]
    rows: int
    only_fused: int
    only_build: int
    differing_segments: list[tuple[str, int, int]]  # segment, only in the query, only in the build

    @property
    def ok(self) -> bool:
        return self.only_fused == self.only_build == 0


def fill(template: str, as_of: dt.datetime) -> str:
    uploads = str(SPECS / "uploads").replace("'", "''")
    return template.replace("{as_of}", sql_time(as_of)).replace("{uploads}", uploads)


def measure_handfused(warehouse: Path, as_of: dt.datetime, repeats: int) -> Fused:
    """``bench/handfused.sql`` timed (``CREATE TEMP TABLE AS``, median of ``repeats``),
    then its rows compared with the build's membership (segment, user; holdout included)."""
    sql = fill(HANDFUSED.read_text(), as_of)
    con = connect(warehouse)
    try:
        runs = [timed(lambda: con.execute(f"CREATE OR REPLACE TEMP TABLE fused AS {sql}")) for _ in range(repeats)]
        rows = con.execute("SELECT count(*) FROM fused").fetchone()[0]  # type: ignore[index]
        ours, built = "SELECT segment_name, user_id FROM fused", "SELECT segment_name, user_id FROM main.segment_membership"
        per_segment = con.execute(f"""
            SELECT segment_name, count(*) FILTER (WHERE side = '+'), count(*) FILTER (WHERE side = '-')
            FROM (SELECT *, '+' AS side FROM ({ours} EXCEPT {built})
                  UNION ALL SELECT *, '-' AS side FROM ({built} EXCEPT {ours}))
            GROUP BY 1 ORDER BY 1""").fetchall()
    finally:
        con.close()
    return Fused(statistics.median(runs), runs, rows, sum(p[1] for p in per_segment), sum(p[2] for p in per_segment),
                 per_segment)


# ---- 4. hand-written queries -------------------------------------------------------------


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
    return fill((HANDWRITTEN / f"{segment}.sql").read_text(), as_of)


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


# ---- 5. compile time ---------------------------------------------------------------------


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


# ---- 6. preview --------------------------------------------------------------------------


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


# ---- 7. growth: 200 segments -------------------------------------------------------------


@dataclass
class Growth:
    spec_files: int
    segments: int
    cold: Build  # the first build after compile
    build: Build  # warm: the figure
    hand_queries: int
    hand_reruns: int  # variants that rerun their original query (no clean regex shift)
    hand_seconds: float  # all of them, one after another


def spec_segments(path: Path) -> int:
    """Segments a spec file makes: one per tier, else one."""
    return len(yaml.safe_load(path.read_text()).get("tiers") or []) or 1


def write_growth_specs(target: Path, segments: int) -> int:
    """The bench specs and renamed variants of them (as :func:`write_variants`, in the
    same order) up to exactly ``segments`` segments; a variant whose tiers would pass
    the count is left out. Returns the number of spec files."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(SPECS, target)
    originals = sorted(p for p in SPECS.glob("*.yml") if not p.name.startswith("_"))
    total = sum(spec_segments(p) for p in originals)
    n = 0
    while total < segments:
        source, variant = originals[n % len(originals)], n // len(originals) + 1
        n += 1
        if total + spec_segments(source) <= segments:
            (target / f"{source.stem}_v{variant}.yml").write_text(spec_variant(source.read_text(), source.stem, variant))
            total += spec_segments(source)
    return len([p for p in target.glob("*.yml") if not p.name.startswith("_")])


def sql_variant(sql: str, variant: int) -> str:
    """A hand-written query shifted as :func:`spec_variant` shifts a spec: its windows
    (``INTERVAL N DAY|HOUR|MINUTE``) by ``variant % 11`` units, its thresholds
    (``>= N``, N >= 2) times ``1 + shift % 4``."""
    shift = variant % 11
    sql = re.sub(r"INTERVAL (\d+) (DAY|HOUR|MINUTE)\b", lambda m: f"INTERVAL {int(m[1]) + shift} {m[2]}", sql)
    return re.sub(r">= (\d+)\b", lambda m: f">= {int(m[1]) * (1 + shift % 4)}" if int(m[1]) >= 2 else m[0], sql)


def handwritten_variants(segments: list[str], count: int, as_of: dt.datetime) -> list[tuple[str, str, bool]]:
    """(label, SQL, is a rerun of the original): the queries, then variants of them."""
    queries = [(s, handwritten_sql(s, as_of), False) for s in segments]
    for n in range(count - len(segments)):
        segment, variant = segments[n % len(segments)], n // len(segments) + 1
        rerun = bool(UNCLEAN_VARIANTS.search(segment))
        sql = handwritten_sql(segment, as_of)
        queries.append((f"{segment}_v{variant}", sql if rerun else sql_variant(sql, variant), rerun))
    return queries


def measure_growth(warehouse: Path, as_of: dt.datetime, work: Path, log: Path) -> Growth:
    specs = work / "growth-specs"
    files = write_growth_specs(specs, GROWTH_SEGMENTS)
    segments = len(pipeline.compile_specs(specs, "duckdb").compiled.segments)
    copy = copy_warehouse(warehouse, work / "growth.duckdb")
    try:
        cold = measure_build(f"{segments} segments, cold", copy, as_of, log, specs=specs, cold=True)
        build = measure_build(f"{segments} segments", copy, as_of, log, specs=specs)
    finally:
        remove_warehouse(copy)
    queries = handwritten_variants(sorted(p.stem for p in HANDWRITTEN.glob("*.sql")), GROWTH_SEGMENTS, as_of)
    con = connect(warehouse)
    try:
        seconds = 0.0
        for sql in (q[1] for q in queries):
            seconds += timed(lambda: con.execute(f"CREATE OR REPLACE TEMP TABLE hand AS {sql}"))
    finally:
        con.close()
    return Growth(files, segments, cold, build, len(queries), sum(q[2] for q in queries), seconds)


# ---- 8. shuffled events, 9. scale ----------------------------------------------------------


@dataclass
class Derived:
    """A warehouse made from W's users and events."""

    label: str
    how: str
    users: int
    events: int
    seconds: float  # to write it
    floor: Floor
    build: Build
    fused: Fused | None = None


def derive_warehouse(source: Path, target: Path, users_sql: str, events_sql: str) -> tuple[int, int, float]:
    """A new warehouse of ``raw.users`` and ``raw.events`` from queries over ``src.raw.*``."""
    started = time.perf_counter()
    remove_warehouse(target)
    con = duckdb.connect(str(target))
    try:
        con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
        con.execute("CREATE SCHEMA raw")
        con.execute(f"CREATE TABLE raw.users AS {users_sql}")
        con.execute(f"CREATE TABLE raw.events AS {events_sql}")
        con.execute("DETACH src")
        con.execute("CHECKPOINT")
        users, events = (con.execute(f"SELECT count(*) FROM raw.{t}").fetchone()[0]  # type: ignore[index]
                         for t in ("users", "events"))
    finally:
        con.close()
    return users, events, time.perf_counter() - started


def measure_shuffled(warehouse: Path, as_of: dt.datetime, repeats: int, work: Path, log: Path,
                     fused: bool) -> Derived:
    """The same users and events, the events in ``hash(event_id)`` order: floor, build,
    and the hand-fused query checked against that build."""
    target = work / "shuffled.duckdb"
    users, events, seconds = derive_warehouse(warehouse, target, "SELECT * FROM src.raw.users",
                                              "SELECT * FROM src.raw.events ORDER BY hash(event_id)")
    try:
        floor = measure_floor(target, repeats)
        print(f"  floor (shuffled): {floor.seconds:.3f}s", flush=True)
        build = measure_build("full build, shuffled", target, as_of, log)
        result = Derived("shuffled", "raw.events ORDER BY hash(event_id)", users, events, seconds, floor, build)
        if fused:
            result.fused = measure_handfused(target, as_of, repeats)
            print(f"  hand-fused (shuffled): {result.fused.seconds:.3f}s", flush=True)
    finally:
        remove_warehouse(target)
    return result


def scale_queries(events_now: int, events_wanted: float) -> tuple[str, str, str]:
    """(how, users SQL, events SQL): a sample of the users (``hash(user_id)``) below 3/4
    of today's events, else about ``events_wanted / events_now`` copies of every user
    and their events (ids suffixed ``_r<k>``; event ids offset), in time order."""
    ratio = events_wanted / events_now
    if ratio < 0.75:
        per_mille = max(1, round(1000 * ratio))
        keep = f"hash(user_id) % 1000 < {per_mille}"
        return (f"users with hash(user_id) % 1000 < {per_mille}", f"SELECT * FROM src.raw.users WHERE {keep}",
                f"SELECT * FROM src.raw.events WHERE {keep} ORDER BY occurred_at, event_id")
    copies = max(1, round(ratio))
    rid = "CASE WHEN k = 0 THEN user_id ELSE user_id || '_r' || k END"
    return ((f"{copies} copies of every user (`_r<k>`) and their events" if copies > 1 else "the warehouse as it is"),
            f"SELECT u.* REPLACE ({rid} AS user_id) FROM src.raw.users u, range({copies}) AS r(k)",
            f"SELECT e.* REPLACE ({rid} AS user_id, event_id + k * (SELECT max(event_id) + 1 FROM src.raw.events) "
            f"AS event_id) FROM src.raw.events e, range({copies}) AS r(k) ORDER BY occurred_at, event_id")


def measure_scale(warehouse: Path, events_now: int, millions: float, users_factor: float, as_of: dt.datetime,
                  repeats: int, work: Path, log: Path) -> Derived:
    label = f"{millions:g}M"
    how, users_sql, events_sql = scale_queries(events_now, millions * 1e6 * users_factor)
    target = work / f"scale-{label}.duckdb"
    users, events, seconds = derive_warehouse(warehouse, target, users_sql, events_sql)
    print(f"  scale {label}: {users:,} users, {events:,} events ({how}) in {seconds:.0f}s", flush=True)
    try:
        floor = measure_floor(target, repeats)
        build = measure_build(f"full build, {events / 1e6:.1f}M events", target, as_of, log)
    finally:
        remove_warehouse(target)
    return Derived(label, how, users, events, seconds, floor, build)


# ---- 10. refresh -------------------------------------------------------------------------


@dataclass
class RefreshStep:
    label: str
    appended: int
    refresh: Build
    full: Build  # at the same as_of on a copy of the same data
    only_refresh: int
    only_full: int
    differing_segments: list[tuple[str, int]]

    @property
    def ok(self) -> bool:
        return self.only_refresh == self.only_full == 0


@dataclass
class Refresh:
    full_refresh: str  # how the full builds were made
    noop: Proc  # the median no-op dbt invocation: dbt's fixed overhead
    noop_runs: list[float]
    steps: list[RefreshStep]


def append_events(warehouse: Path, parquet: Path, where: str) -> int:
    """Events of ``parquet`` matching ``where``, appended in time order, as a loader would."""
    con = connect(warehouse, read_only=False)
    try:
        new = f"SELECT * FROM read_parquet('{parquet}') WHERE {where}"
        con.execute(f"INSERT INTO raw.events {new} ORDER BY occurred_at, event_id")
        con.execute("CHECKPOINT")
        return con.execute(f"SELECT count(*) FROM ({new})").fetchone()[0]  # type: ignore[index]
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


@functools.cache
def full_refresh_flags() -> tuple[list[str], str]:
    """``--full-refresh`` when ``segments build`` has it; else none (every build is full)."""
    help_text = subprocess.run(segments_cmd("build", "--help"), capture_output=True, text=True).stdout
    if "--full-refresh" in help_text:
        return ["--full-refresh"], "`segments build --full-refresh` on a copy of the warehouse"
    return [], "`segments build` on a copy of the warehouse (it has no `--full-refresh`: every build is full)"


def measure_noop(warehouse: Path, as_of: dt.datetime, repeats: int, log: Path) -> tuple[Proc, list[float]]:
    """dbt's fixed overhead: ``dbt build --select tag:__none__`` (nothing matches) through
    the bench specs' project, as ``segments build`` invokes dbt, the partial parse warm."""
    project = dbt_project()
    procs = []
    with in_place(warehouse) as path:
        env = {paths.WAREHOUSE_ENV: str(path), **dbtrun.as_of_env(as_of), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
               "DBT_LOG_PATH": str(project / "logs"), "DBT_TARGET_PATH": str(project / "target")}
        cmd = [dbtrun.dbt_executable(), "--log-format", "json", "--no-use-colors", "build", "--select", NOOP_SELECT,
               "--project-dir", str(project), "--profiles-dir", str(project), "--target", "duckdb"]
        for _ in range(repeats):
            (project / "logs" / "dbt.log").unlink(missing_ok=True)
            procs.append(run_checked(cmd, log, env))
    print(f"  dbt no-op ({NOOP_SELECT}): {median_run(procs).seconds:.2f}s, dbt parse {dbt_parse(project)}", flush=True)
    return median_run(procs), [p.seconds for p in procs]


def measure_refresh(warehouse: Path, next_day: Path, as_of: dt.datetime, repeats: int, work: Path,
                    log: Path) -> Refresh:
    """On ``warehouse`` built at ``as_of``: one new hour, the rest of the day, nothing new;
    each refresh beside a full build at the same as_of on a copy of the same data."""
    flags, how = full_refresh_flags()
    noop, noop_runs = measure_noop(warehouse, as_of, repeats, log)
    hour, day = as_of + dt.timedelta(hours=1), as_of + dt.timedelta(days=1)
    steps = []
    for label, later, where in (
        ("one new hour", hour, f"occurred_at <= {sql_time(hour)}"),
        ("one new day", day, f"occurred_at > {sql_time(hour)}"),
        ("no new events", day + dt.timedelta(minutes=1), "false"),
    ):
        appended = append_events(warehouse, next_day, where)
        print(f"  {label}: {appended:,} events appended, as_of {later}", flush=True)
        copy = copy_warehouse(warehouse, work / "full-refresh.duckdb")
        try:
            refresh = measure_build(f"refresh, {label}", warehouse, later, log, full=False)
            snapshot = work / "refresh-membership.parquet"
            snapshot_membership(warehouse, snapshot)
            full = measure_build(f"full build, {label}", copy, later, log, *flags)
            only_refresh, only_full, per_segment = compare_snapshot(copy, snapshot)
        finally:
            remove_warehouse(copy)
        steps.append(RefreshStep(label, appended, refresh, full, only_refresh, only_full, per_segment))
    return Refresh(how, noop, noop_runs, steps)


# ---- the report --------------------------------------------------------------------------


@dataclass
class Results:
    data: Data | None = None
    floor: Floor | None = None
    build_cold: Build | None = None  # the first build after compile
    build: Build | None = None  # warm: the build's figure, the median of build_runs
    build_runs: list[float] = field(default_factory=list)  # the warm builds' wall seconds
    build_reported: bool = True
    fused: Fused | None = None
    handwritten: list[Query] | None = None
    compile: Compile | None = None
    previews: list[PreviewRun] | None = None
    growth: Growth | None = None
    shuffled: Derived | None = None
    scales: list[Derived] | None = None
    refresh: Refresh | None = None
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


def build_target_lines(order: str, floor: Floor | None, build: Build | None, fused: Fused | None) -> list[str]:
    """Targets 1 and 3 of issue 12 for one order of the events."""
    lines: list[str] = []
    if build and floor:
        f = floor.seconds
        for what, seconds, target in (("wall", build.proc.seconds, True), ("SQL-only (sum of models)", build.dbt.models,
                                                                           False)):
            ratio = seconds / f
            lines.append(f"- {order}: build / floor, {what}: {seconds:.2f} / {f:.3f} s = **{ratio:.1f}x**"
                         + (f" (target <= {TARGET_BUILD_OVER_FLOOR:g}x: {verdict(ratio <= TARGET_BUILD_OVER_FLOOR)})"
                            if target else ""))
    if build and fused:
        ratio = build.dbt.models / fused.seconds
        lines.append(f"- {order}: build SQL-only (sum of models) / hand-fused single query: {build.dbt.models:.2f} / "
                     f"{fused.seconds:.2f} s = **{ratio:.2f}x** (target <= {TARGET_SQL_OVER_HANDFUSED:g}x: "
                     f"{verdict(ratio <= TARGET_SQL_OVER_HANDFUSED)})")
    if build:
        lines.append(rss_line(f"{order}: build", build.proc))
    return lines


def rss_line(what: str, proc: Proc) -> str:
    rss = proc.tree_rss_mib
    return (f"- {what} peak RSS, whole process tree: {rss:.0f} MiB (largest process {proc.peak_rss_mib:.0f} MiB; "
            f"target <= {TARGET_RSS_MIB:.0f} MiB: {verdict(rss <= TARGET_RSS_MIB)})")


def ratio_lines(r: Results) -> list[str]:
    """The ratios of issue 12, each with its target."""
    build = r.build if r.build_reported else None
    lines = build_target_lines("time-ordered events", r.floor, build, r.fused)
    if r.shuffled:
        lines += build_target_lines("shuffled events", r.shuffled.floor, r.shuffled.build, r.shuffled.fused)
    if r.growth and r.build:
        g, base = r.growth.build, r.build
        ratio = g.proc.seconds / base.proc.seconds
        lines.append(f"- {r.growth.segments} segments / 30 segments, build wall: {g.proc.seconds:.2f} / "
                     f"{base.proc.seconds:.2f} s = **{ratio:.2f}x** (target <= {TARGET_GROWTH:g}x: "
                     f"{verdict(ratio <= TARGET_GROWTH)}); SQL-only {g.dbt.models:.2f} / {base.dbt.models:.2f} s = "
                     f"{g.dbt.models / base.dbt.models:.2f}x; {r.growth.hand_queries} hand-written queries "
                     f"{r.growth.hand_seconds:.2f} s")
        lines.append(rss_line(f"{r.growth.segments} segments: build", g.proc))
    for scale in r.scales or []:
        lines.append(rss_line(f"scale {scale.events / 1e6:.1f}M events: build", scale.build.proc))
    if r.refresh:
        for step in r.refresh.steps:
            a, b = step.refresh.proc.seconds, step.full.proc.seconds
            if step.appended:
                target = TARGET_REFRESH_HOUR if "hour" in step.label else TARGET_REFRESH_DAY
                lines.append(f"- refresh after {step.label} / full build at the same as_of, wall: {a:.2f} / {b:.2f} s = "
                             f"**{a / b:.0%}** (target <= {target:.0%}: {verdict(a / b <= target)})")
            else:
                noop = r.refresh.noop.seconds
                lines.append(f"- refresh with {step.label}: {a:.2f} s wall ({a / b:.0%} of a full build's {b:.2f} s) "
                             f"/ dbt's fixed overhead (a no-op `dbt build --select {NOOP_SELECT}`) {noop:.2f} s = "
                             f"**{a / noop:.2f}x** (target <= 1x: {verdict(a <= noop)})")
    if r.previews and r.floor:
        f = r.floor.seconds
        for p in r.previews:
            lines.append(f"- preview {p.segment} ({p.kind}) / floor: in-process {p.in_process:.3f} / {f:.3f} s = "
                         f"**{p.in_process / f:.1f}x** (target <= {TARGET_PREVIEW_OVER_FLOOR:g}x: "
                         f"{verdict(p.in_process / f <= TARGET_PREVIEW_OVER_FLOOR)}); `segments preview` "
                         f"{p.cli.seconds:.2f} / {f:.3f} s = **{p.cli.seconds / f:.1f}x** (target <= "
                         f"{TARGET_PREVIEW_OVER_FLOOR:g}x: {verdict(p.cli.seconds / f <= TARGET_PREVIEW_OVER_FLOOR)}); "
                         f"peak RSS {p.cli.tree_rss_mib:.0f} MiB (<= {TARGET_RSS_MIB:.0f}: "
                         f"{verdict(p.cli.tree_rss_mib <= TARGET_RSS_MIB)})")
    return lines


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(row) + " |" for row in rows)]


def proc_cells(proc: Proc) -> list[str]:
    return [f"{proc.seconds:.2f}", f"{proc.cpu_seconds:.2f}", f"{proc.peak_rss_mib:.0f}", f"{proc.tree_rss_mib:.0f}"]


def build_rows(builds: list[Build]) -> list[str]:
    rows = [[b.label, str(b.as_of), *proc_cells(b.proc), f"{b.dbt.elapsed:.2f}", f"{b.dbt.models:.2f}",
             f"{b.dbt.tests:.2f}", f"{b.proc.seconds - b.dbt.elapsed:.2f}", b.parse] for b in builds]
    return table(["build", "as_of", "wall s", "CPU s", "peak RSS MiB (largest process)", "peak RSS MiB (tree)",
                  "dbt elapsed s", "models s", "tests s", "outside dbt's run s", "dbt parse"], rows)


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


def realtime_section() -> list[str]:
    """A link to the real-time benchmark's figures (``make bench-realtime``), with its headline."""
    if not REALTIME_RESULTS.exists():
        return [f"`{REALTIME_RESULTS.relative_to(ROOT)}` is missing: run `make bench-realtime`."]
    headline = [line for line in REALTIME_RESULTS.read_text().splitlines() if line.startswith("| latency") or line.startswith("| full build")]
    return ["Not rerun here: `segments watch` against a full build, in [`RESULTS-realtime.md`](RESULTS-realtime.md).", "",
            "| figure | value | target |", "| --- | --- | --- |", *headline]


def report(args: argparse.Namespace, info: dict[str, str], r: Results) -> str:
    out = [
        "# Build benchmark: `segments build` of 30 and 200 segments",
        "",
        f"Written by `bench/build_bench.py` on {info['date']}; run: `{shlex.join(['python', *sys.argv])}`.",
        "",
        f"- machine: {info['cpus']} CPUs, {info['ram']} RAM, load average at the end {info['load']}; "
        "shared with other work, so the figures are noisy",
        f"- {info['os']}, Python {info['python']}, duckdb {info['duckdb']}, dbt-core {info['dbt-core']}, "
        f"dbt-duckdb {info['dbt-duckdb']}, sqlglot {info['sqlglot']}",
        f"- segments at {info['segments']}",
        f"- as_of {args.as_of}, seed {args.seed}, repeats {args.repeats}, scales {args.scales} (million events at 1M "
        f"users); skipped: {', '.join(args.skip) or 'nothing'}",
        "- how each figure is made: the docstring of `bench/build_bench.py` and `bench/README.md`",
    ]
    if r.data:
        d = r.data
        out.append(f"- data: {d.users:,} users, {d.events:,} events up to as_of, in time order (and {d.next_day_events:,}"
                   f" the day after, for the refreshes); generated and written in {d.seconds:.0f} s")
    out += ["", "## Ratios and targets (issue 12)", "", *(ratio_lines(r) or ["- (nothing to compare: parts skipped)"])]
    if r.problems:
        out += ["", "## FAILED checks", "", *(f"- {p}" for p in r.problems)]
    out += figures_section(r)
    out += ["", "## Sync (issue 3)", "", *sync_section()]
    out += ["", "## Real-time (issue 15)", "", *realtime_section()]
    return "\n".join(out) + "\n"


def fused_line(order: str, fused: Fused) -> str:
    runs = ", ".join(f"{s:.3f}" for s in fused.runs)
    return (f"- hand-fused single query (`bench/handfused.sql`), {order}: **{fused.seconds:.3f} s** (median; runs "
            f"{runs}); {fused.rows:,} rows, membership "
            + ("identical to the build's for every segment" if fused.ok else
               f"**DIFFERS**: {fused.only_fused:,} rows only in the query, {fused.only_build:,} only in the build"))


def figures_section(r: Results) -> list[str]:
    out = ["", "## Figures", ""]
    builds = [b for b in (r.build_cold if r.build_reported else None, r.build if r.build_reported else None) if b]
    if r.floor:
        runs = ", ".join(f"{s:.3f}" for s in r.floor.runs)
        out.append(f"- floor, one `GROUP BY user_id` pass over raw.events ({os.cpu_count()} threads): "
                   f"**{r.floor.seconds:.3f} s** (median; runs {runs})")
    if r.build and r.build_reported:
        out.append(f"- build of the 30 segments: **{r.build.proc.seconds:.2f} s** wall, SQL-only (sum of models) "
                   f"**{r.build.dbt.models:.2f} s**, peak RSS {r.build.proc.tree_rss_mib:.0f} MiB (warm: dbt's "
                   f"partial parse kept; the median of {len(r.build_runs)} warm builds: "
                   f"{', '.join(f'{x:.2f}' for x in r.build_runs)} s)"
                   + (f"; cold (first build after compile) {r.build_cold.proc.seconds:.2f} s wall"
                                             if r.build_cold else ""))
    if r.fused:
        out.append(fused_line("time-ordered events", r.fused))
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
    if r.growth:
        g = r.growth
        out.append(f"- growth: {g.spec_files} spec files, {g.segments} segments: build **{g.build.proc.seconds:.2f} s** "
                   f"wall (cold {g.cold.proc.seconds:.2f} s), SQL-only {g.build.dbt.models:.2f} s, peak RSS "
                   f"{g.build.proc.tree_rss_mib:.0f} MiB; {g.hand_queries} hand-written queries (the 30 and "
                   f"{g.hand_queries - 30} variants, {g.hand_reruns} of which rerun their original) one after another: "
                   f"**{g.hand_seconds:.2f} s**")
        builds += [g.cold, g.build]
    if r.shuffled:
        sh = r.shuffled
        out.append(f"- shuffled: {sh.events:,} events written in {sh.how} order in {sh.seconds:.0f} s; floor "
                   f"**{sh.floor.seconds:.3f} s** (runs {', '.join(f'{s:.3f}' for s in sh.floor.runs)}); build "
                   f"**{sh.build.proc.seconds:.2f} s** wall, SQL-only {sh.build.dbt.models:.2f} s")
        if sh.fused:
            out.append(fused_line("shuffled events", sh.fused))
        builds.append(sh.build)
    if r.refresh:
        rf = r.refresh
        out.append(f"- refresh: full builds by {rf.full_refresh}; dbt's fixed overhead, a no-op `dbt build --select "
                   f"{NOOP_SELECT}` through the project: **{rf.noop.seconds:.2f} s** (median of "
                   f"{', '.join(f'{s:.2f}' for s in rf.noop_runs)}; {rf.noop.tree_rss_mib:.0f} MiB)")
        for step in rf.steps:
            out.append(f"  - {step.label}: {step.appended:,} events appended; refresh {step.refresh.proc.seconds:.2f} s, "
                       f"full build {step.full.proc.seconds:.2f} s; "
                       + ("memberships identical" if step.ok else
                          f"**memberships DIFFER**: {step.only_refresh:,} rows only in the refresh, {step.only_full:,}"
                          f" only in the full build"))
            builds += [step.refresh, step.full]
    if r.scales:
        base = r.scales[0]
        rows = [[s.label, s.how, f"{s.users:,}", f"{s.events:,}", f"{s.floor.seconds:.3f}", f"{s.build.proc.seconds:.2f}",
                 f"{s.build.dbt.models:.2f}", f"{s.build.proc.tree_rss_mib:.0f}",
                 f"{s.build.proc.seconds / s.floor.seconds:.1f}x",
                 f"{(s.build.proc.seconds / base.build.proc.seconds) / (s.events / base.events):.2f}"] for s in r.scales]
        out += ["", "### Scale (full build of the 30 segments, time-ordered events)", "",
                *table(["scale", "made from the data by", "users", "events", "floor s", "build wall s",
                        "SQL-only s", "peak RSS MiB (tree)", "build / floor",
                        f"time growth / event growth (from {base.label})"], rows)]
        builds += [s.build for s in r.scales]
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
    detailed = [b for b in (r.build if r.build_reported else None, r.shuffled.build if r.shuffled else None) if b]
    detailed += [b for step in (r.refresh.steps if r.refresh else []) for b in (step.refresh, step.full)]
    if detailed:
        out += ["", "### dbt nodes (execution_time from run_results.json)", "", *node_rows(detailed)]
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


def bench_fused(label: str, fused: Fused, r: Results) -> None:
    check(fused.ok, f"hand-fused query ({label}): {fused.only_fused:,} rows only in the query, {fused.only_build:,} "
                    f"only in the build; per segment (+query, -build) {fused.differing_segments}", r)


def run_parts(args: argparse.Namespace, work: Path, r: Results) -> None:
    parts = [p for p in PARTS if p not in args.skip]
    warehouse, next_day, log = work / "warehouse.duckdb", work / "next-day-events.parquet", work / "build_bench.log"
    as_of = dt.datetime.fromisoformat(args.as_of)
    if set(parts) - {"compile"}:
        r.data = write_data(warehouse, next_day, args.users, args.seed, as_of)
        print(f"data: {r.data.users:,} users, {r.data.events:,} events (+{r.data.next_day_events:,} the next day) "
              f"in {r.data.seconds:.0f}s", flush=True)
    if set(parts) & {"floor", "preview"}:
        r.floor = measure_floor(warehouse, args.repeats)
        print(f"  floor: {r.floor.seconds:.3f}s", flush=True)
    if set(parts) & {"build", "handfused", "handwritten", "growth", "refresh"}:
        r.build_reported = "build" in parts  # the other parts need the build even when it is not reported
        r.build_cold = measure_build("full build, cold", warehouse, as_of, log, cold=True)
        # warm builds vary by a few seconds within a run: the median, as for the floor
        warm = sorted((measure_build("full build", warehouse, as_of, log) for _ in range(args.repeats)),
                      key=lambda b: b.proc.seconds)
        r.build, r.build_runs = warm[len(warm) // 2], [b.proc.seconds for b in warm]
    if "handfused" in parts:
        r.fused = measure_handfused(warehouse, as_of, args.repeats)
        print(f"  hand-fused: {r.fused.seconds:.3f}s", flush=True)
        bench_fused("time-ordered events", r.fused, r)
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
    if "growth" in parts:
        r.growth = measure_growth(warehouse, as_of, work, log)
        print(f"  {r.growth.hand_queries} hand-written queries: {r.growth.hand_seconds:.2f}s", flush=True)
    if "shuffled" in parts:
        r.shuffled = measure_shuffled(warehouse, as_of, args.repeats, work, log, "handfused" in parts)
        if r.shuffled.fused:
            bench_fused("shuffled events", r.shuffled.fused, r)
    if "scale" in parts and r.data:
        r.scales = [measure_scale(warehouse, r.data.events, m, args.users / 1e6, as_of, args.repeats, work, log)
                    for m in args.scale_millions]
    if "refresh" in parts:
        r.refresh = measure_refresh(warehouse, next_day, as_of, args.repeats, work, log)
        for step in r.refresh.steps:
            check(step.ok, f"refresh with {step.label} and the full build differ: {step.only_refresh:,} rows only in "
                           f"the refresh, {step.only_full:,} only in the full build; per segment "
                           f"{step.differing_segments}", r)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="segments build beside a floor and hand-written queries (issue 12)")
    parser.add_argument("--users", type=int, default=1_000_000, help="demo users (default 1M: about 21M events)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo data")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF, help=f"the build's as_of T (default {DEFAULT_AS_OF})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the cheap measurements (median reported)")
    parser.add_argument("--scales", default=DEFAULT_SCALES,
                        help=f"million events of the scale part at 1M users, scaled by --users/1M "
                             f"(default {DEFAULT_SCALES})")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip: {', '.join(PARTS)}")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".work", help="scratch folder (emptied first)")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md", help="where to write the results")
    args = parser.parse_args()
    args.skip = [p for p in args.skip.split(",") if p]
    unknown = set(args.skip) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts to skip: {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    try:
        args.scale_millions = [float(m) for m in args.scales.split(",") if m.strip()]
    except ValueError:
        parser.error(f"--scales: comma-separated numbers, not {args.scales!r}")
    return args


def main() -> int:
    global BUILD_WAREHOUSE
    args = parse_args()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ[paths.WORK_DIR_ENV] = str(work / "segments")  # the build's dbt project, for us and the CLI
    BUILD_WAREHOUSE = work / "build.duckdb"
    compile_bytecode()
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
