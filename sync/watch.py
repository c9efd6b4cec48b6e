"""``segments watch``: keep the ``refresh: realtime`` segments current, cycle after cycle.

Each cycle evaluates every segment at ``as_of`` = now through :func:`segments.pipeline.build`
(after the first build that is the incremental refresh of :mod:`segments.refresh`: only
the users whose segments can have changed, no dbt; it refreshes every segment, not only
the real-time ones, because one pass evaluates them all), then syncs the real-time
segments' adds and removes through the sync engine of ``segments sync`` (its plan
against ``sync_state``, its mass-removal guard, its checkpoints). A segment whose size
check fails (``checks: max_size_change_pct``, as in Dagster) is not synced that cycle.

Windows slide with the clock: ``as_of`` moves every cycle whether or not an event
arrived, so a user whose cart_add leaves a 48-hour window leaves the segment on time.

The high-water mark lives in the warehouse (``segments_watch_state``: the last cycle's
``as_of``, how many events it had seen and the newest event's time), beside the refresh
state that records the same ``as_of``. A restart resumes from it: what a destination
holds is ``sync_state``, so the next plan sends exactly what is missing, nothing twice
beyond the batches in flight when the process died.

A pair the last cycle synced completely is planned from the users who moved since
(:class:`sync.store.Since`) when this cycle's refresh continues the build it was synced
against; what the cycle left in sync is recorded beside the mark (``segments_watch_synced``)
for a new process (a restart, a Dagster run) to continue from.

It lives in ``sync`` because a cycle both builds and syncs (``segments`` never
imports ``sync``). Nothing here logs member data: the cycle line holds counts and
times only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from segments import engines, history, pipeline, refresh
from segments.engines.base import ReplaceTable, Session, values_query
from segments.errors import SegmentsError
from segments.spec import model as m
from segments.spec.timeparse import utc_now
from sync import engine as sync_engine
from sync.http import new_session
from sync.scratch import ScratchDatabase
from sync.store import Since

STATE = "segments_watch_state"
#: Seconds before a cycle that found the warehouse busy (another process writing) runs again.
BUSY_RETRY = 0.2
#: Seconds between two looks for new events while the loop waits for its next cycle: a
#: look compares the warehouse file's size and time (and its write-ahead log's) with those
#: the last look saw, and only when they moved opens the warehouse to count the events.
POLL = 0.05
#: The pairs the last cycle left in sync (:class:`sync.store.Since`), for the next one,
#: in this process or a new one (a restart, a Dagster run).
SYNCED = "segments_watch_synced"
_TIME, _BIG, _TEXT = exp.DataType.Type.TIMESTAMP, exp.DataType.Type.BIGINT, exp.DataType.Type.VARCHAR
_STATE_COLUMNS = {"as_of": _TIME, "events_seen": _BIG, "newest_event_at": _TIME}
_SYNCED_COLUMNS = {"destination": _TEXT, "segment_name": _TEXT, "as_of": _TIME, "audience": _BIG}


@dataclass(frozen=True)
class Mark:
    """The high-water mark: the events counted up to ``as_of``, and the newest one's time."""

    as_of: dt.datetime | None
    events_seen: int
    newest_event_at: dt.datetime | None


@dataclass
class Cycle:
    """What one cycle did (counts and times, never members)."""

    as_of: dt.datetime
    events_seen: int = 0  # events that arrived since the last cycle
    reevaluated: int | None = None  # users whose segments were evaluated again; None: full build
    full_because: str | None = None
    entered: int = 0
    exited: int = 0
    sent: int = 0
    #: seconds from the newest new event to the last acknowledgement of this cycle
    latency: float | None = None
    #: segments whose size check failed: their syncs wait for the next cycle
    waiting: list[str] = field(default_factory=list)
    #: syncs that failed or were blocked (the mass-removal guard)
    problems: list[str] = field(default_factory=list)
    #: where the cycle's time went, in seconds: build (refresh and publish), sync, total
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        """The cycle's log line.

        >>> Cycle(dt.datetime(2026, 3, 1, 12), 3, 40, None, 2, 1, 3, 1.25).line()
        'as_of 2026-03-01 12:00:00: 3 events, 40 users re-evaluated, 2 entered, 1 exited, 3 sent, latency 1.25s'
        >>> Cycle(dt.datetime(2026, 3, 1, 12), timings={"build": 0.5, "sync": 0.25, "total": 0.8}).line()[-48:]
        'latency - [build 0.50s, sync 0.25s, total 0.80s]'
        """
        evaluated = "full build" if self.reevaluated is None else f"{self.reevaluated} users re-evaluated"
        latency = "-" if self.latency is None else f"{self.latency:.2f}s"
        text = (f"as_of {self.as_of.isoformat(sep=' ')}: {self.events_seen} events, {evaluated}, "
                f"{self.entered} entered, {self.exited} exited, {self.sent} sent, latency {latency}")
        if self.full_because:
            text += f" ({self.full_because})"
        if self.timings:
            text += " [" + ", ".join(f"{part} {seconds:.2f}s" for part, seconds in self.timings.items()) + "]"
        return text + "".join(f"; {problem}" for problem in [*self.waiting, *self.problems])


@dataclass(frozen=True)
class _Published:
    """What a cycle reads in the session that published: the events up to its
    ``as_of``, the newest one's time, and the real-time segments' sizes."""

    events: int
    newest: dt.datetime | None
    sizes: dict[str, history.BuildSize]


def realtime_segments(project: m.Project) -> list[str]:
    """The segments of the specs with ``refresh: realtime`` (every tier of a tiered one)."""
    return [name for spec in project.segments if spec.realtime for name in spec.segment_names()]


def read_mark(session: Session) -> Mark:
    """The high-water mark the last cycle wrote (none before the first cycle)."""
    engine = session.engine
    if not session.has_table(engine.target_schema, STATE):
        return Mark(None, 0, None)
    rows = session.rows(exp.select(*_STATE_COLUMNS).from_(engine.table(STATE)))
    if len(rows) != 1:
        return Mark(None, 0, None)
    as_of, seen, newest = rows[0]
    return Mark(as_of, int(seen), newest)


def _write_mark(session: Session, mark: Mark, synced: dict[tuple[str, str], Since]) -> None:
    """The mark and the pairs left in sync (:func:`read_synced`), replaced together in
    one transaction, as each engine replaces a table."""
    engine = session.engine
    pairs = [[destination, key, since.as_of, since.audience] for (key, destination), since in sorted(synced.items())]
    session.apply([
        ReplaceTable(engine.table(STATE), values_query(_STATE_COLUMNS, [[mark.as_of, mark.events_seen, mark.newest_event_at]])),
        ReplaceTable(engine.table(SYNCED), values_query(_SYNCED_COLUMNS, pairs)),
    ])


def read_synced(session: Session) -> dict[tuple[str, str], Since]:
    """(pair key, destination) -> what the destination held after the last cycle that
    synced the pair completely (none recorded: nothing known)."""
    engine = session.engine
    if not session.has_table(engine.target_schema, SYNCED):
        return {}
    rows = session.rows(exp.select(*_SYNCED_COLUMNS).from_(engine.table(SYNCED)))
    return {(str(key), str(destination)): Since(as_of, int(audience)) for destination, key, as_of, audience in rows}


def new_events(session: Session, mark: Mark, at: dt.datetime) -> int:
    """Events at or before ``at`` that the last cycle did not count (0 before the first
    cycle): what makes a cycle worth running before its interval is up."""
    if mark.as_of is None:
        return 0
    return max(refresh.events_upto(session, max(at, mark.as_of)) - mark.events_seen, 0)


def size_check_problem(size: history.BuildSize, limit: float) -> str | None:
    """Why a segment's syncs wait (its size moved more than ``max_size_change_pct``, by
    at least :data:`segments.history.MIN_SIZE_CHANGE` members), or None.

    >>> size = history.BuildSize("vip", dt.datetime(2026, 1, 15), 150, 0, 60, 10, previous=100)
    >>> size_check_problem(size, 20)
    'size of vip moved by 50.0% (100 -> 150), more than the 20% allowed: not synced'
    >>> size_check_problem(size, 50) is None
    True
    >>> size_check_problem(history.BuildSize("vip", dt.datetime(2026, 1, 15), 4, 0, 4, 0, previous=0), 20) is None
    True
    """
    if not size.fails_size_check(limit):
        return None
    return f"size of {size.segment} {size.move}, more than the {limit:g}% allowed: not synced"


def _trusted(pair: object, trusted: dict[tuple[str, str], Since], refreshed: refresh.Outcome | None) -> Since | None:
    """What the last cycle knew a pair's destination holds (:class:`sync.store.Since`),
    if it still holds: this cycle's build refreshed the very build the pair was synced
    against. A full build, or a build by another command in between (a cycle that died
    after its publish, too), may have followed a changed users table (a consent
    attribute a plan reads): the pair is planned in full again."""
    since = trusted.get((pair.key, pair.destination))  # type: ignore[attr-defined]
    if since is None or refreshed is None or refreshed.previous_as_of != since.as_of:
        return None
    return since


class Watcher:
    """One specs folder and one warehouse, cycled by :meth:`cycle`.

    Args:
        clock: the current time, naive UTC (default the real one; tests move it by hand).
        sync_settings: the sync engine's settings (its env names the destinations' secrets).
        force: send past the mass-removal guard and the size check.
        lag: seconds the evaluation stays behind the clock (``as_of`` = now - lag), so
            events a loader delivers up to ``lag`` seconds after they occurred are in
            time for the refresh (one that arrives after its instant was evaluated
            makes the next cycle a full build).
    """

    def __init__(
        self, specs_dir: Path, warehouse: Path | None, target: str = engines.DEFAULT_TARGET,
        clock: Callable[[], dt.datetime] | None = None, sync_settings: object | None = None, force: bool = False,
        lag: float = 0.0,
    ):
        self.specs_dir = specs_dir
        self.warehouse_file = warehouse
        self.engine = engines.get(target, warehouse)
        self.clock = clock if clock is not None else utc_now
        self.sync_settings = sync_settings
        self.force = force
        self.lag = lag
        self._signature: tuple[tuple[int, int], ...] | None = None  # the warehouse files at the last look
        self._settings: object | None = None
        self._mark: Mark | None = None
        self._compiled: tuple[tuple, pipeline.Compiled] | None = None
        #: (pair key, destination) -> what its destination holds, after this watcher's last cycle
        #: (before its first: what the warehouse recorded, :data:`SYNCED`)
        self._in_sync: dict[tuple[str, str], Since] = {}

    def cycle(self) -> Cycle:
        """Build at now, then sync the real-time segments' changes."""
        started = time.perf_counter()
        # A cycle that fails leaves what was trusted as it was: if it published, the next
        # cycle's refresh no longer continues the build the pairs were synced against
        # (_trusted), and a busy warehouse (a loader's write) costs no full plans.
        trusted = self._in_sync
        mark = self._mark
        if mark is None:  # after a cycle, the mark is the one this watcher wrote (one watch per warehouse)
            with self.engine.connect(read_only=True) as session:
                mark, trusted = read_mark(session), read_synced(session)
        as_of = self._now()
        if mark.as_of is not None and as_of < mark.as_of:
            as_of = mark.as_of  # never evaluate behind the mark: the refresh would start over
        project = self._project()
        realtime = realtime_segments(project)
        published: list[_Published] = []

        def read_published(session: Session) -> None:  # in the build's own session: no second opening
            published.append(_Published(*refresh.events_seen(session, as_of), history.latest(session, realtime)))

        result = pipeline.build(
            self.specs_dir, self.warehouse_file, as_of, force=self.force, on_published=read_published, compiled=self._compile(),
        )
        cycle = Cycle(as_of, full_because=result.full_because)
        cycle.timings["build"] = time.perf_counter() - started
        if result.refreshed is not None:
            cycle.reevaluated = result.refreshed.flagged
        seen, newest, sizes = published[0].events, published[0].newest, published[0].sizes
        cycle.events_seen = max(seen - mark.events_seen, 0) if mark.as_of is not None else seen
        waiting = set()
        for name in realtime:
            size = sizes.get(name)
            if size is None:
                continue
            cycle.entered += size.entered
            cycle.exited += size.exited
            problem = size_check_problem(size, project.spec(name).checks.max_size_change_pct)
            if problem and not self.force:
                waiting.add(name)
                cycle.waiting.append(problem)
        pairs = [p for p in sync_engine.select_pairs(project) if p.segment in realtime and p.segment not in waiting]
        since = {p: known for p in pairs if (known := _trusted(p, trusted, result.refreshed)) is not None}
        # a pair in sync whose segment nobody entered or left this cycle has nothing to send
        still = [p for p in since if (size := sizes.get(p.segment)) is not None and not size.entered and not size.exited]
        in_sync = {(p.key, p.destination): Since(as_of, since.pop(p).audience) for p in still}
        pairs = [p for p in pairs if p not in still]
        if pairs:
            sync_started = time.perf_counter()
            outcomes = sync_engine.Engine(project, self.engine, self._sync_settings()).run(pairs, force=self.force, since=since)
            acked = time.time()
            cycle.sent = sum(o.added + o.removed for o in outcomes)
            cycle.problems += [sync_engine.summary_line(o) for o in outcomes if not o.ok]
            in_sync |= {(o.segment, o.destination): Since(as_of, o.plan.audience + o.added - o.removed)
                        for o in outcomes if o.ok and o.status == sync_engine.SUCCEEDED and o.plan is not None}
            if cycle.sent and newest is not None and seen > mark.events_seen:
                cycle.latency = max(acked - newest.replace(tzinfo=dt.timezone.utc).timestamp(), 0.0)
            cycle.timings["sync"] = time.perf_counter() - sync_started
        self._in_sync = in_sync
        with self.engine.connect() as session:
            _write_mark(session, Mark(as_of, seen, newest), in_sync)
        self._mark = Mark(as_of, seen, newest)
        cycle.timings["total"] = time.perf_counter() - started
        return cycle

    def _project(self) -> m.Project:
        return self._compile().project

    def _compile(self) -> pipeline.Compiled:
        """The specs parsed and compiled, again only when a file under the specs folder
        changed."""
        files = sorted(p for p in self.specs_dir.rglob("*") if p.is_file())
        stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        if self._compiled is None or self._compiled[0] != stamp:
            self._compiled = (stamp, pipeline.compile_specs(self.specs_dir, self.engine.dialect))
        return self._compiled[1]

    def _sync_settings(self) -> object:
        """The sync engine's settings with one keep-alive HTTP session and one scratch
        database for every cycle: a cycle sends a few small batches, and a new
        connection per cycle, or a new database, would cost more than they do."""
        if self._settings is None:
            settings = self.sync_settings or sync_engine.Settings()
            if settings.session is None:  # type: ignore[attr-defined]
                settings = dataclasses.replace(settings, session=new_session())  # type: ignore[type-var]
            if settings.scratch is None:  # type: ignore[attr-defined]
                settings = dataclasses.replace(settings, scratch=ScratchDatabase())  # type: ignore[type-var]
            self._settings = settings
        return self._settings

    def run(self, interval: float, stop: threading.Event, log: Callable[[str], None], cycles: int | None = None) -> int:
        """Cycle until ``stop`` is set (or ``cycles`` ran): a cycle starts ``interval``
        seconds after the last one started, or as soon as new events arrived (looked
        for every :data:`POLL` seconds). The cycle in flight always finishes, and a
        cycle that fails (a warehouse busy with another command, a spec being edited)
        is logged and tried again at the next. Returns how many cycles ran."""
        done = 0
        while not stop.is_set() and (cycles is None or done < cycles):
            started = time.monotonic()
            pause = interval
            try:
                log(self.cycle().line())
            except SegmentsError as error:  # a busy warehouse, a bad spec: the next cycle tries again
                log(f"cycle failed: {error}")
                if "is busy" in str(error):  # a loader's short write: try again soon, not a whole interval later
                    pause = min(interval, BUSY_RETRY)
            done += 1
            if cycles is not None and done >= cycles:
                break
            self._signature = None  # whatever arrived during the cycle: the first look counts
            while not stop.wait(min(POLL, max(started + pause - time.monotonic(), 0.0))):
                if time.monotonic() >= started + pause or self._arrived():
                    break
        return done

    def _arrived(self) -> bool:
        """Whether events arrived that the next cycle would evaluate. Cheap while the
        warehouse file and its write-ahead log keep their size and time; when they
        moved, the warehouse is opened and the events counted (a warehouse busy with
        its writer is looked at again at the next poll)."""
        if self.warehouse_file is None or self._mark is None:
            return False  # a server warehouse: cycles at the interval
        signature = _signature(self.warehouse_file)
        if signature == self._signature:
            return False
        now = self._now()
        try:
            with self.engine.connect(read_only=True) as session:
                arrived = new_events(session, self._mark, now)
                # events stamped within --lag of now are due once as_of passes them: look again
                later = new_events(session, self._mark, now + dt.timedelta(seconds=self.lag)) if self.lag else arrived
        except SegmentsError:
            return False
        if later == arrived:
            self._signature = signature
        return arrived > 0

    def _now(self) -> dt.datetime:
        """The instant a cycle evaluates at: the clock, less ``lag``."""
        return self.clock() - dt.timedelta(seconds=self.lag)


def _signature(warehouse: Path) -> tuple[tuple[int, int], ...]:
    """The size and modification time of a DuckDB file and of its write-ahead log:
    every commit of another process moves one of them."""
    found = []
    for path in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
        try:
            stat = path.stat()
            found.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            found.append((-1, -1))
    return tuple(found)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT: the loop stops after the cycle in flight."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
