"""Real-time benchmark (issue 15): `segments watch` against a full build, on the same data.

    .venv/bin/python bench/realtime_bench.py                  # 1M users, about 20M events
    .venv/bin/python bench/realtime_bench.py --users 100000   # a quick look (a few minutes)

What it does, in one run:

0. Generates demo data with the build benchmark's generator (``build_bench.write_data``)
   whose events end now: warehouse W with every user and the events up to now; the
   events it would generate for the next day are the pool the rounds draw from.
1. full build: ``segments build --full-refresh`` of the five real-time segments of
   ``bench/realtime_specs`` (abandoned cart, pricing-page visitors, welcome journey,
   non-responsive, the engagement tiers) on a copy of W, cold then warm; the warm
   one is the figure (as a scheduled build finds dbt's partial parse).
2. watch: a loopback webhook receiver (:class:`sync.receiver.AudienceReceiver`, in this
   process) and ``segments watch --interval`` on W as a subprocess. After its first
   cycle (a full build through dbt, every member sent) and one quiet cycle, ``--rounds``
   rounds: at a random instant within the interval (events arrive when they arrive; the
   watch notices them within 0.05s and starts a cycle, or after the cycle in flight),
   ``--events`` events from the pool, restamped to now and with ``--new-users-pct``
   percent of them from user ids the users table does not hold (yet), are appended
   to ``raw.events`` in one transaction; the round's latency runs from that commit to
   the watch's line of the cycle that saw them (printed once every change was
   acknowledged), and to the receiver's last acknowledgement of that cycle. Then the
   receiver's audiences are compared with the membership W publishes (holdout
   excepted): a difference is a failure (exit 1). The watch process's resident memory
   (VmRSS, of it and of its process tree) is read after each round.
3. breakdown: the watch stopped, three cycles in this process (each after an append),
   with the stages of the build timed from outside (``segments.pipeline`` is not
   changed): compile, writing the models, the input checks, the refresh, the publish,
   the sizes; and the sync.

It prints the figures next to the target of issue 15 (median latency at most 5% of the
full build, memory flat) and writes them to ``bench/RESULTS-realtime.md``. This is a
script, not a test: it asserts no timings, only that the audiences agree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SPECS = BENCH / "realtime_specs"
RESULTS = BENCH / "RESULTS-realtime.md"
sys.path.insert(0, str(BENCH))
from build_bench import Proc, compile_bytecode, copy_warehouse, memory_kib, process_tree, run_checked, segments_cmd, write_data  # noqa: E402
from sync_bench import machine  # noqa: E402

from segments import paths, pipeline, refresh  # noqa: E402
from segments import warehouse as wh  # noqa: E402
from segments.spec.parse import load_project  # noqa: E402
from segments.spec.timeparse import utc_now  # noqa: E402
from sync import engine as sync_engine  # noqa: E402
from sync import store as sync_store  # noqa: E402
from sync import watch  # noqa: E402
from sync.receiver import AudienceReceiver  # noqa: E402

SECRET = "whsec_" + "cmVhbHRpbWUtYmVuY2gtc2VjcmV0LTAxMjM0NTY3OA=="
TARGET_SHARE = 0.05  # median latency at most 5% of a full build
LINE = re.compile(r"^as_of (?P<as_of>[^:]+:[^:]+:\S+): (?P<events>\d+) events, (?P<evaluated>[^,]+), "
                  r"(?P<entered>\d+) entered, (?P<exited>\d+) exited, (?P<sent>\d+) sent, latency (?P<latency>\S+)"
                  r"(?P<rest>.*)$")
LOCKED = ("lock", "Conflicting", "being used")  # DuckDB's words for a file another process holds


# ---- the warehouse, shared with the watch process -------------------------------------------


def connect_when_free(warehouse: Path, read_only: bool, timeout: float = 120.0) -> duckdb.DuckDBPyConnection:
    """A connection once the watch process lets go of the file (DuckDB: one writer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return duckdb.connect(str(warehouse), read_only=read_only)
        except duckdb.Error as error:
            if not any(word in str(error) for word in LOCKED) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def append_round(warehouse: Path, pool: Path, offset: int, count: int, new_pct: float, label: str, lag: float) -> float:
    """``count`` events of the pool (from ``offset``, wrapping), restamped to the instant
    of the insert less up to ``lag`` seconds, some from new user ids, appended in one
    transaction; returns the commit's wall time."""
    with duckdb.connect() as con:
        offset %= max(con.execute("SELECT count(*) FROM read_parquet(?)", [str(pool)]).fetchone()[0] - count, 1)
    con = connect_when_free(warehouse, read_only=False)
    try:
        con.execute(
            "INSERT INTO raw.events SELECT * REPLACE ("
            "  (SELECT coalesce(max(event_id), 0) FROM raw.events) + row_number() OVER () AS event_id,"
            "  CASE WHEN hash(event_id, ?) % 10000 < ? THEN concat(?, event_id % 50) ELSE user_id END AS user_id,"
            "  (now() AT TIME ZONE 'UTC') - to_microseconds(CAST(hash(event_id) % ? AS BIGINT)) AS occurred_at)"
            " FROM read_parquet(?) ORDER BY event_id LIMIT ? OFFSET ?",
            [label, int(new_pct * 100), f"new-{label}-", max(int(lag * 1e6), 1), str(pool), count, offset],
        )
        return time.time()
    finally:
        con.close()


def published(warehouse: Path, segments: list[str]) -> dict[str, set[str]]:
    con = connect_when_free(warehouse, read_only=True)
    try:
        rows = con.execute("SELECT segment_name, user_id FROM main.segment_membership WHERE NOT is_holdout").fetchall()
    finally:
        con.close()
    members: dict[str, set[str]] = {name: set() for name in segments}
    for segment, user in rows:
        if segment in members:
            members[segment].add(user)
    return members


# ---- the watch process ------------------------------------------------------------------------


class TimedDeliveries(list):
    """The receiver's deliveries, each with the wall time it was acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, delivery: object) -> None:  # type: ignore[override]
        self.times.append(time.time())
        super().append(delivery)


@dataclass
class Line:
    at: float  # wall time the line was read
    text: str
    fields: dict[str, str] | None


class Watch:
    """``segments watch`` as a subprocess; its lines in a queue as they are printed."""

    def __init__(self, warehouse: Path, interval: int, env: dict[str, str], log: Path):
        cmd = segments_cmd("watch", "--specs", str(SPECS), "--warehouse", str(warehouse), "--interval", f"{interval:d}s")
        self.log = log.open("a")
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **env})
        self.lines: queue.Queue[Line] = queue.Queue()
        self.failed_cycles = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            text = text.rstrip("\n")
            self.log.write(text + "\n")
            self.log.flush()
            match = LINE.match(text)
            if text.startswith("cycle failed"):
                self.failed_cycles += 1
            self.lines.put(Line(time.time(), text, match.groupdict() if match else None))

    def next_cycle(self, timeout: float) -> Line:
        """The next cycle line (failed cycles are counted and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise SystemExit(f"no watch cycle within {timeout:.0f}s (exit {self.process.poll()}); see {self.log.name}")
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line.fields is not None:
                return line

    def rss_mib(self) -> tuple[float, float]:
        """(the watch process's VmRSS, its process tree's), MiB."""
        own = memory_kib(self.process.pid)[0] / 1024
        tree = sum(memory_kib(pid)[0] for pid in process_tree(self.process.pid)) / 1024
        return own, tree

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=600)
        self.log.close()
        return code


# ---- the rounds -----------------------------------------------------------------------------


@dataclass
class Round:
    number: int
    appended: int
    latency_line: float  # commit -> the line of the cycle that saw the events
    latency_ack: float | None  # commit -> the receiver's last acknowledgement in that cycle
    line: str
    rss_mib: float
    tree_rss_mib: float
    checks: int  # cycles until the receiver equalled the published membership (1: the first that saw the events)


def run_rounds(watcher: Watch, receiver: AudienceReceiver, warehouse: Path, pool: Path, args: argparse.Namespace,
               segments: list[str]) -> list[Round]:
    deliveries = receiver.deliveries
    assert isinstance(deliveries, TimedDeliveries)
    rng = random.Random(args.seed)
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        time.sleep(rng.uniform(0, args.interval))  # events arrive at any instant of a cycle
        committed = append_round(warehouse, pool, (number - 1) * args.events, args.events, args.new_users_pct, f"r{number}",
                                 args.lag)
        while True:  # the first cycle that saw them
            line = watcher.next_cycle(timeout=600)
            if int(line.fields["events"]) > 0 and line.at > committed:  # type: ignore[index]
                break
        checks = 1  # a segment held back by its size check, or a read between a publish and its sync
        while published(warehouse, segments) != {name: set(receiver.audiences.get(name, set())) for name in segments}:
            if checks == 5:
                raise SystemExit(f"round {number}: the receiver does not hold the published membership")
            line = watcher.next_cycle(timeout=600)  # the change is held until a later cycle sends it
            checks += 1
        acks = [t for t in deliveries.times if committed < t <= line.at]
        own, tree = watcher.rss_mib()
        rounds.append(Round(number, args.events, line.at - committed, max(acks) - committed if acks else None,
                            line.text, own, tree, checks))
        ack = "-" if rounds[-1].latency_ack is None else f"{rounds[-1].latency_ack:.2f}s"
        print(f"  round {number:2d}: latency {line.at - committed:.2f}s (last ack {ack}), watch RSS {own:.0f} MiB "
              f"(tree {tree:.0f}); {line.text}", flush=True)
    return rounds


# ---- where a cycle's time goes ----------------------------------------------------------------


@contextmanager
def timed_stages(stages: dict[str, list[float]]) -> Iterator[None]:
    """Times the build's stages by wrapping the functions ``pipeline.build`` calls."""
    targets: list[tuple[object, str, str]] = [
        (pipeline, "compile_specs", "compile"), (pipeline, "write_models", "write models"),
        (wh, "check_inputs", "input checks"), (refresh, "attempt", "refresh and its publish (one transaction)"),
        (wh, "publish", "of which the publish"), (wh, "segment_sizes", "sizes"),
        (sync_store.Store, "plan_since", "sync: plans since the last cycle"),
        (sync_store.Store, "read_moved", "sync: the moved users' rows (one read)"),
        (sync_store.Store, "make_plan", "sync: plans"), (sync_store.Store, "start_runs", "sync: runs started"),
        (sync_engine, "_answered", "sync: waiting on the receiver"),
        (sync_store.Store, "checkpoint", "sync: checkpoints"), (sync_store.Store, "finish_runs", "sync: runs finished"),
    ]
    saved = []
    for module, name, label in targets:
        original = getattr(module, name)
        saved.append((module, name, original))

        def wrapper(*a: object, _original: Callable = original, _label: str = label, **k: object) -> object:
            started = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                stages.setdefault(_label, []).append(time.perf_counter() - started)

        setattr(module, name, wrapper)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def breakdown(warehouse: Path, pool: Path, args: argparse.Namespace, env: dict[str, str], cycles: int = 3) -> dict[str, float]:
    """Median seconds per stage over ``cycles`` in-process cycles, each after an append
    (a stage run several times in a cycle, as a plan per pair: their sum)."""
    stages: dict[str, list[float]] = {}
    settings = sync_engine.Settings(env={**os.environ, **env})
    watcher = watch.Watcher(SPECS, warehouse, sync_settings=settings)
    offset = args.rounds * args.events
    watcher.cycle()  # a new watcher trusts nothing: its first cycle plans every pair in full
    totals: dict[str, list[float]] = {}
    with timed_stages(stages):
        for number in range(cycles):
            append_round(warehouse, pool, offset + number * args.events, args.events, args.new_users_pct, f"b{number}",
                         args.lag)
            stages.clear()
            cycle = watcher.cycle()
            for label, values in [*stages.items(), *((f"cycle: {part}", [s]) for part, s in cycle.timings.items())]:
                totals.setdefault(label, []).append(sum(values))
            print(f"  breakdown cycle {number + 1}: {cycle.line()}", flush=True)
    return {label: statistics.median(values) for label, values in totals.items()}


# ---- results ----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile.

    >>> percentile([float(n) for n in range(1, 21)], 95)
    19.0
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


@dataclass
class Results:
    args: argparse.Namespace
    users: int
    events: int
    data_s: float
    full_cold: Proc
    full_warm: Proc
    first_cycle: str
    rounds: list[Round]
    stages: dict[str, float]
    failed_cycles: int
    notes: list[str] = field(default_factory=list)


def budget_line(stages: dict[str, float], full_build: float) -> str:
    """Where a cycle's time goes against the target's budget, in one sentence.

    >>> budget_line({"cycle: build": 1.0, "cycle: sync": 0.25, "cycle: total": 1.5}, 20.0)
    "The target allows 1.00s (5% of the full build) from the append to the last acknowledgement; a cycle alone took 1.50s: its build (the incremental refresh and the publish) 1.00s, its sync 0.25s, the rest (the watch's own reads and its mark) 0.25s."
    """
    build, sync, total = (stages.get(f"cycle: {part}", 0.0) for part in ("build", "sync", "total"))
    return (f"The target allows {TARGET_SHARE * full_build:.2f}s ({TARGET_SHARE:.0%} of the full build) from the append to the "
            f"last acknowledgement; a cycle alone took {total:.2f}s: its build (the incremental refresh and the publish) "
            f"{build:.2f}s, its sync {sync:.2f}s, the rest (the watch's own reads and its mark) {total - build - sync:.2f}s.")


def write_results(r: Results, command: str) -> str:
    latencies = [x.latency_line for x in r.rounds]
    acks = [x.latency_ack for x in r.rounds if x.latency_ack is not None]
    median, p95 = statistics.median(latencies), percentile(latencies, 95)
    share = median / r.full_warm.seconds
    rss = [x.rss_mib for x in r.rounds]
    half = len(rss) // 2
    growth = statistics.median(rss[half:]) - statistics.median(rss[:half]) if half else 0.0
    info = ", ".join(f"{key} {value}" for key, value in machine().items())
    lines = [
        "# Real-time benchmark (issue 15)",
        "",
        f"`{command}` on {info} at {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.",
        "",
        f"{r.users:,} users, {r.events:,} events (generated in {r.data_s:.0f}s); "
        f"the five real-time specs of `bench/realtime_specs` (8 segments: the engagement tiers are four); "
        f"`segments watch --interval {r.args.interval:g}s` syncing to a loopback webhook receiver; "
        f"{len(r.rounds)} rounds of {r.args.events:,} events ({r.args.new_users_pct:g}% from new user ids).",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| full build (`segments build --full-refresh`, warm) | {r.full_warm.seconds:.2f}s "
        f"(cold {r.full_cold.seconds:.2f}s; peak RSS {r.full_warm.tree_rss_mib:.0f} MiB) | |",
        f"| latency, append -> every change acknowledged (cycle line), median | {median:.2f}s "
        f"({share:.1%} of the full build) | at most 5%: **{'met' if share <= TARGET_SHARE else 'missed'}** |",
        f"| latency, p95 | {p95:.2f}s ({p95 / r.full_warm.seconds:.1%}) | |",
        f"| latency, append -> last acknowledgement, median (rounds that sent) | "
        f"{statistics.median(acks):.2f}s over {len(acks)} rounds |" if acks else "| last acknowledgement | no round sent anything | |",
        f"| watch RSS, first / last / max round | {rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB "
        f"(second half minus first half: {growth:+.0f} MiB) | flat: **{'met' if abs(growth) <= 20 else 'missed'}** |",
        f"| rounds in which the first cycle that saw the events left the receiver equal to the published membership | "
        f"{sum(x.checks == 1 for x in r.rounds)} of {len(r.rounds)} (the others: by a later cycle, counted in the latency) "
        f"| all match |",
        f"| cycles that failed (warehouse busy with the benchmark's append) | {r.failed_cycles} | |",
        "",
        "The latency includes the wait for the cycle that sees the events: they arrive at a random instant;",
        f"the watch looks for new events every {watch.POLL:g}s between cycles and starts one at once when some arrived",
        f"(else every {r.args.interval:g}s, to slide the windows), so events that arrive during a cycle wait",
        f"for its end. Events are stamped up to {r.args.lag:g}s before their insert (the benchmark's `--lag`).",
        "",
        "## Per round",
        "",
        "| round | latency | last ack | watch RSS (tree) MiB | the watch's line |",
        "| --- | --- | --- | --- | --- |",
    ]
    for x in r.rounds:
        ack = "-" if x.latency_ack is None else f"{x.latency_ack:.2f}s"
        lines.append(f"| {x.number} | {x.latency_line:.2f}s | {ack} | {x.rss_mib:.0f} ({x.tree_rss_mib:.0f}) | `{x.line}` |")
    lines += [
        "",
        f"First cycle (a full build through dbt, every member sent): `{r.first_cycle}`",
        "",
        "## Where a cycle's time goes",
        "",
        "Median of three cycles run in process after the rounds (each after an append of "
        f"{r.args.events:,} events, after a first cycle that plans every pair in full), the stages timed "
        "from outside `segments.pipeline` and the sync engine (a stage run once per pair: the sum over the pairs; "
        "`cycle: build`, `sync` and `total` are the cycle line's own):",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *(f"| {label} | {seconds:.3f} |" for label, seconds in r.stages.items()),
        "",
        budget_line(r.stages, r.full_warm.seconds),
        "",
        *r.notes,
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    return text


# ---- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--events", type=int, default=1000, help="events appended per round")
    parser.add_argument("--new-users-pct", type=float, default=2.0)
    parser.add_argument("--interval", type=int, default=5,
                        help="segments watch --interval, whole seconds (a cycle starts at once when events arrive)")
    parser.add_argument("--lag", type=float, default=0.0,
                        help="events are stamped up to this many seconds before their insert (a loader's delay)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".segments" / "bench-realtime")
    args = parser.parse_args()
    command = "python bench/realtime_bench.py " + " ".join(sys.argv[1:])
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    os.environ[paths.WORK_DIR_ENV] = str(args.workdir / "work")
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    compile_bytecode()
    log = args.workdir / "bench.log"
    warehouse, pool = args.workdir / "warehouse.duckdb", args.workdir / "pool.parquet"
    now = utc_now().replace(microsecond=0)

    print(f"data: {args.users:,} users, events up to {now} ...", flush=True)
    data = write_data(warehouse, pool, args.users, args.seed, now)
    print(f"  {data.users:,} users, {data.events:,} events, pool {data.next_day_events:,} ({data.seconds:.0f}s)", flush=True)

    print("full build of the five segments (cold, then warm) ...", flush=True)
    full = copy_warehouse(warehouse, args.workdir / "full.duckdb")
    full_build = segments_cmd("build", "--specs", str(SPECS), "--warehouse", str(full), "--as-of", now.isoformat(),
                              "--full-refresh")
    cold, warm = run_checked(full_build, log), run_checked(full_build, log)
    print(f"  cold {cold.seconds:.2f}s, warm {warm.seconds:.2f}s", flush=True)
    full.unlink()

    segments = sorted(name for spec in load_project(SPECS).segments for name in spec.segment_names())
    env = {"BENCH_HOOK_URL": "", "BENCH_HOOK_SECRET": SECRET}
    with AudienceReceiver(SECRET, keep_deliveries=True) as receiver:
        receiver.deliveries = TimedDeliveries()
        env["BENCH_HOOK_URL"] = receiver.url
        print(f"segments watch --interval {args.interval:g}s ...", flush=True)
        watcher = Watch(warehouse, args.interval, env, log)
        try:
            first = watcher.next_cycle(timeout=3600)
            print(f"  first cycle: {first.text}", flush=True)
            print(f"  then: {watcher.next_cycle(timeout=600).text}", flush=True)
            rounds = run_rounds(watcher, receiver, warehouse, pool, args, segments)
        finally:
            code = watcher.stop()
        print(f"  watch stopped (exit {code}); {watcher.failed_cycles} cycles failed", flush=True)
        print("where a cycle's time goes ...", flush=True)
        stages = breakdown(warehouse, pool, args, env)
    results = Results(args, data.users, data.events, data.seconds, cold, warm, first.text, rounds, stages,
                      watcher.failed_cycles)
    print(write_results(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
