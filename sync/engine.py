"""The sync: make every destination's audience equal each segment's members.

For every (segment, destination) pair of the specs' ``sync:`` entries, the engine
plans the changes against ``sync_state``, stops when the plan would remove too much
(SPEC 4's ``max_remove_pct``, unless forced), then sends the plan in batches, a few
in flight at once, and checkpoints each batch as soon as the destination acknowledges
it. Everything the run needs (options, secrets, built segments) is checked before the
first request, so bad input sends nothing. One sync per destination runs at a time:
a lock the OS or the server releases if the process dies (:mod:`sync.places`).

It runs on every engine: :mod:`sync.places` says where the membership is read and
where the record is kept. Every pair is planned first, in one short hold of the
warehouse, and its run started; the pairs of a destination are then sent one after
another and their runs end together. The warehouse is held only for the plans and the
checkpoints, never while waiting on a destination for longer than :data:`LINGER`: the
plans are sent from the sync's own scratch database (:mod:`sync.scratch`), so builds
and member exports run while a slow destination answers.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import requests

from segments import engines
from segments.errors import SegmentsError
from segments.spec import model as m
from sync.destinations import REGISTRY
from sync.dry_run import Cost, cost
from sync.routing import OWNER, check_owners
from sync.destinations.api import is_http_url
from sync.destinations.base import Audience, Destination
from sync.destinations.batches import Batch, BatchResult
from sync.destinations.options import resolve_options
from sync.errors import SinkError, TerminalError
from sync.http import DEFAULT_TIMEOUT, Clock, HttpClient, RateLimiter, RetryPolicy, new_session
from sync.places import open_place
from sync.scratch import ScratchDatabase
from sync.store import MEMORY_LIMIT, MEMORY_LIMIT_ENV, PLAN, PlanSummary, Since, Store, Wanted

SUCCEEDED, FAILED, BLOCKED, PLANNED, SKIPPED = "succeeded", "failed", "blocked", "planned", "skipped"
#: Destination options holding a URL, checked by ``segments validate``.
URL_OPTIONS = ("url", "base_url")
#: Seconds a sync waits on a destination with the warehouse still attached from its last
#: checkpoint (:meth:`sync.scratch.Scratch.lingering`): a quick answer is checkpointed in
#: the same hold; a slow destination never keeps other commands out for longer.
LINGER = 0.05


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: options is a dict
class Pair:
    """One segment synced to one destination, with its ``sync:`` entry's options."""

    segment: str
    destination: str
    options: Mapping[str, object] = field(default_factory=dict)
    owner: str | None = None  # the spec's owner, routed where the destination says (sync.routing)
    arm: str | None = None  # only this experiment arm's members

    @property
    def key(self) -> str:
        """What the pair is known as at the destination and in ``sync_state``: the
        segment, or ``<segment>__<arm>`` for one arm (its default tag, label...)."""
        return f"{self.segment}__{self.arm}" if self.arm else self.segment


@dataclass(frozen=True)
class Planned:
    """A pair's plan: the scratch table holding it, its counts, its run's id."""

    table: str
    summary: PlanSummary
    sync_id: str
    start: int = 0  # the rowid of its first row (several pairs' plans share a table: Store.plan_since)


@dataclass
class Outcome:
    """What happened to one pair."""

    segment: str
    destination: str
    status: str
    plan: PlanSummary | None = None
    sync_id: str | None = None
    added: int = 0
    removed: int = 0
    failed: int = 0
    message: str | None = None
    #: a dry run's API calls and time (:mod:`sync.dry_run`)
    cost: Cost | None = None

    @property
    def ok(self) -> bool:
        return self.status in (SUCCEEDED, PLANNED) and self.failed == 0


class Progress:
    """Hooks for a progress display; the default shows nothing."""

    def start(self, pair: Pair, total: int) -> None: ...

    def advance(self, pair: Pair, changes: int) -> None: ...

    def retrying(self, destination: str, error: SinkError, wait: float) -> None: ...


@dataclass
class Settings:
    """What the engine is built from; tests replace the clock, session and policy."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = field(default_factory=Clock)
    session: requests.Session | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    progress: Progress = field(default_factory=Progress)
    timeout: tuple[float, float] = DEFAULT_TIMEOUT  # connect, read (seconds) of each request
    #: a scratch database for run after run (segments watch); None: one of its own per run
    scratch: ScratchDatabase | None = None


def select_pairs(project: m.Project, destination: str | None = None, segment: str | None = None) -> list[Pair]:
    """The pairs the specs ask for, narrowed by ``--destination`` and ``--segment``
    (a spec name selects all its tiers).

    Raises:
        SegmentsError: a filter that names nothing.
    """
    if destination is not None and destination not in project.destinations:
        known = ", ".join(sorted(project.destinations)) or "none in _destinations.yml"
        raise SegmentsError(f"no destination named {destination!r} (known: {known})")
    if segment is not None:
        try:
            project.spec(segment)
        except KeyError:
            raise SegmentsError(f"no segment named {segment!r}") from None
    pairs = []
    for spec in project.segments:
        for name in spec.segment_names():
            if segment is not None and segment not in (spec.name, name):
                continue
            for target in spec.sync:
                if destination is None or target.destination == destination:
                    pairs.append(Pair(name, target.destination, target.options, spec.owner, target.arm))
    return pairs


def configuration_problems(project: m.Project) -> list[str]:
    """Every destination option and ``sync:`` entry the destination types do not
    accept, without reading secrets (for ``segments validate``)."""
    problems = []
    checks = [(REGISTRY[d.type].declared_options(), d.options, f"destination {name}" + (f" ({d.location})" if d.location else ""))
              for name, d in sorted(project.destinations.items())]
    checks += [(REGISTRY[project.destinations[t.destination].type].TARGET_OPTIONS, t.options, f"{spec.path}: sync to {t.destination}")
               for spec in project.segments for t in spec.sync]
    for declared, raw, where in checks:
        try:
            resolve_options(declared, raw, where, expand=False)
        except SegmentsError as error:
            problems.append(str(error))
    for name, d in sorted(project.destinations.items()):
        for option in URL_OPTIONS:
            value = d.options.get(option)
            # a ${VAR} is checked when the sync expands it; the value is never echoed
            if isinstance(value, str) and "${" not in value and not is_http_url(value):
                where = f"destination {name}" + (f" ({d.location})" if d.location else "")
                problems.append(f"{where}: option {option!r} must be an http:// or https:// URL with a host")
    return problems


def _engine(warehouse: Path | engines.Engine) -> engines.Engine:
    """An engine, or a DuckDB warehouse file's."""
    return warehouse if isinstance(warehouse, engines.Engine) else engines.get("duckdb", warehouse)


class Engine:
    """Runs the sync of some pairs against one warehouse."""

    def __init__(self, project: m.Project, warehouse: Path | engines.Engine, settings: Settings | None = None):
        self.project = project
        self.warehouse = _engine(warehouse)
        self.settings = settings or Settings()

    def _destination(self, name: str, session: requests.Session) -> Destination:
        config = self.project.destinations[name]
        cls = REGISTRY[config.type]
        where = f"destination {name}" + (f" ({config.location})" if config.location else "")
        options = resolve_options(cls.declared_options(), config.options, where, self.settings.env)
        clock = self.settings.clock
        progress = self.settings.progress
        http = HttpClient(
            session, policy=self.settings.policy, clock=clock, timeout=self.settings.timeout,
            on_retry=lambda error, seconds: progress.retrying(name, error, seconds),
        )
        destination = cls(name, options, http)
        # the limiter's rate comes from the destination's options and documented limits
        http.limiter = RateLimiter(destination.rate, burst=destination.concurrency, clock=clock)
        return destination

    def run(
        self, pairs: list[Pair], dry_run: bool = False, force: bool = False, since: Mapping[Pair, Since] | None = None,
    ) -> list[Outcome]:
        """Sync ``pairs``; return one outcome per pair, in order of their destinations'
        first pairs. Every pair is planned first, in one short hold of the warehouse; a pair in ``since``
        is planned from the users who moved since it was last in sync (:class:`Since`;
        ignored where the store cannot, and by a dry run).

        Raises:
            SegmentsError: bad configuration or an unbuilt segment, before anything is sent.
        """
        session = self.settings.session or new_session()
        destinations = {name: self._destination(name, session) for name in dict.fromkeys(p.destination for p in pairs)}
        targets = {
            p: resolve_options(destinations[p.destination].TARGET_OPTIONS, p.options,
                               f"segment {p.key}: sync to {p.destination}", self.settings.env)
            for p in pairs
        }
        for name, destination in destinations.items():
            routed = [(p.segment, p.owner) for p in pairs if p.destination == name]
            check_owners(name, destination.options.get("owners"), routed)
        pairs = [p for name in destinations for p in pairs if p.destination == name]  # one destination after another
        with open_place(self.warehouse, read_only=dry_run, kept=self.settings.scratch) as place:
            store = Store(place, self.project.catalog)
            store.limit_resources(self.settings.env.get(MEMORY_LIMIT_ENV, MEMORY_LIMIT))
            if dry_run:
                with store.hold():
                    self._check_built(store, pairs)
                return [self._plan_only(store, destinations[p.destination], p) for p in pairs]
            usable = dict(since or {}) if store.can_plan_since() else {}
            outcomes: list[Outcome] = []
            with contextlib.ExitStack() as locks, place.scratch.lingering():
                for name in destinations:  # every lock first: a busy destination stops the run before anything is sent
                    locks.enter_context(place.lock(name))
                with store.hold():  # one hold reads every pair's plan
                    self._check_built(store, pairs)
                    store.ensure_tables()
                    store.flush_wal()
                    plans: dict[Pair, Planned] = {}
                    for name, destination in destinations.items():
                        mine = [p for p in pairs if p.destination == name]
                        moved = [p for p in mine if p in usable]
                        if moved:  # their plans, small, in one table
                            wanted = [(self._wanted(destination, p), usable[p]) for p in moved]
                            store.read_moved(name, wanted)
                            table = f"{PLAN}_{len(plans)}"
                            plans |= {p: Planned(table, summary, str(uuid.uuid4()), start)
                                      for p, (start, summary) in zip(moved, store.plan_since(name, wanted, table))}
                        full = [p for p in mine if p not in usable]
                        plans |= {p: self._plan(store, destination, p, len(plans) + n) for n, p in enumerate(full)}
                        store.start_runs(name, [(plans[p].sync_id, p.key, plans[p].summary) for p in mine])
                for name, destination in destinations.items():
                    outcomes += self._sync_destination(store, destination, [p for p in pairs if p.destination == name],
                                                       targets, plans, force)
        return outcomes

    @staticmethod
    def _check_built(store: Store, pairs: list[Pair]) -> None:
        missing = sorted({p.segment for p in pairs} - store.built_segments())
        if missing:
            raise SegmentsError(f"not in the last build: {', '.join(missing)}; run `segments build` first")

    def _wanted(self, destination: Destination, pair: Pair) -> Wanted:
        return Wanted(pair.segment, destination.fields(), destination.requires, destination.required_fields(), pair.arm)

    def _plan_only(self, store: Store, destination: Destination, pair: Pair) -> Outcome:
        plan = store.make_plan(destination.name, self._wanted(destination, pair))
        store.drop_plan()
        outcome = Outcome(pair.key, pair.destination, PLANNED, plan, cost=cost(destination, plan.adds, plan.removes, pair.owner))
        if self._blocked(destination, plan):
            outcome.message = self._blocked(destination, plan)
        return outcome

    @staticmethod
    def _blocked(destination: Destination, plan: PlanSummary) -> str | None:
        if plan.audience and plan.remove_pct > destination.max_remove_pct:
            return (f"would remove {plan.removes} of {plan.audience} members ({plan.remove_pct:.0f}%), "
                    f"over max_remove_pct {destination.max_remove_pct:g}; rerun with --force to send")
        return None

    def _plan(self, store: Store, destination: Destination, pair: Pair, number: int) -> Planned:
        table = f"{PLAN}_{number}"
        return Planned(table, store.make_plan(destination.name, self._wanted(destination, pair), plan=table), str(uuid.uuid4()))

    def _sync_destination(
        self, store: Store, destination: Destination, pairs: list[Pair], targets: dict[Pair, dict[str, object]],
        plans: Mapping[Pair, Planned], force: bool,
    ) -> list[Outcome]:
        """The pairs of one destination, one after another; their runs (started with
        their plans) end together, in one transaction."""
        outcomes: list[Outcome] = []
        ended: list[tuple[str, str, str | None]] = []  # (sync_id, status, message) of each run
        down: str | None = None  # set when the destination stopped answering
        # a plan table is dropped once the last pair it holds is sent
        last_of = {plans[pair].table: pair for pair in pairs}
        try:
            # one pool of senders for every pair: a thread started per pair cost more than
            # sending a pair's few changes to a quick destination
            with ThreadPoolExecutor(max_workers=destination.concurrency, thread_name_prefix=f"sync-{destination.name}") as pool:
                for pair in pairs:
                    planned = plans[pair]
                    if down is not None:
                        outcome = Outcome(pair.key, pair.destination, SKIPPED, sync_id=planned.sync_id, message=f"not sent: {down}")
                    else:
                        outcome = self._sync_pair(store, destination, pair, targets[pair], planned, force, pool)
                        if outcome.status == FAILED:
                            down = outcome.message
                    if last_of[planned.table] is pair:
                        store.drop_plan(planned.table)
                    outcomes.append(outcome)
                    ended.append((planned.sync_id, outcome.status, outcome.message))
        except BaseException as error:
            # Whatever stopped the run (a bug, Ctrl-C, the store), no row may stay
            # 'running'. Only the error's type is recorded: a library's message may
            # quote a URL with its token.
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {type(error).__name__}"
            if isinstance(error, SegmentsError):
                reason = str(error)
            stopped = [plans[p].sync_id for p in pairs[len(ended):]]
            ended += [(sync_id, FAILED if n == 0 else SKIPPED, reason if n == 0 else f"not sent: {reason}")
                      for n, sync_id in enumerate(stopped)]
            with contextlib.suppress(Exception):
                store.finish_runs(ended)
            raise
        store.finish_runs(ended)
        return outcomes

    def _sync_pair(
        self, store: Store, destination: Destination, pair: Pair, target: dict[str, object], planned: Planned, force: bool,
        pool: ThreadPoolExecutor,
    ) -> Outcome:
        plan = planned.summary
        outcome = Outcome(pair.key, pair.destination, SUCCEEDED, plan, planned.sync_id)
        blocked = self._blocked(destination, plan)
        if blocked and not force:
            outcome.status, outcome.message = BLOCKED, blocked
        elif plan.adds or plan.removes:
            try:
                self._send(store, destination, pair, target, planned, outcome, pool)
            except SinkError as error:
                outcome.status, outcome.message = FAILED, str(error)
        return outcome

    def _send(
        self, store: Store, destination: Destination, pair: Pair, target: dict[str, object], planned: Planned,
        outcome: Outcome, pool: ThreadPoolExecutor,
    ) -> None:
        """Send the plan, ``concurrency`` batches in flight (in ``pool``), checkpointing each ack.

        When the destination stays unreachable or refuses our credentials nothing new is sent; batches already in flight finish
        and are checkpointed, then the error propagates.
        """
        progress = self.settings.progress
        total = planned.summary.adds + planned.summary.removes
        progress.start(pair, total)
        audience: Audience = destination.audience(pair.key, {**target, OWNER: pair.owner})
        batches = store.batches(destination.name, pair.key, outcome.sync_id or "", destination.fields(),
                                destination.batch_size, total, encode=destination.JSON_CHANGES, plan=planned.table,
                                start=planned.start)
        in_flight: dict[Future[BatchResult], tuple[Batch, int, int]] = {}
        stopped: SinkError | None = None

        def settle(future: Future[BatchResult]) -> None:
            nonlocal stopped
            batch, first, last = in_flight.pop(future)
            try:
                result = future.result()
            except TerminalError as error:
                result = BatchResult.all_failed(batch, error)
            except SinkError as error:  # unreachable or refusing our credentials: stop
                stopped = stopped or error
                return
            added, removed = store.checkpoint(batch, first, last, result, planned.table)
            outcome.added += added
            outcome.removed += removed
            outcome.failed += len(result.failures)
            progress.advance(pair, len(batch))

        try:
            for item in batches:
                while len(in_flight) >= destination.concurrency:
                    for future in _answered(store, in_flight):
                        settle(future)
                if stopped is not None:
                    break
                in_flight[pool.submit(audience.send, item[0])] = item
            while in_flight:
                for future in _answered(store, in_flight):
                    settle(future)
        finally:
            wait(in_flight)  # stopped by an error: the sends in flight end before their audience closes
            audience.close()
        if stopped is not None:
            raise stopped


def _answered(store: Store, in_flight: Mapping[Future[BatchResult], object]) -> set[Future[BatchResult]]:
    """The batches answered next. A destination that answers within :data:`LINGER`
    finds the warehouse still attached for the checkpoint; one that takes longer waits
    with the warehouse free for other commands."""
    done, _ = wait(in_flight, timeout=LINGER, return_when=FIRST_COMPLETED)
    if not done:
        store.release()
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
    return done


def sync(
    project: m.Project,
    warehouse: Path | engines.Engine,
    destination: str | None = None,
    segment: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    settings: Settings | None = None,
) -> list[Outcome]:
    """``segments sync``: select the pairs, then run them (see :class:`Engine`)."""
    pairs = select_pairs(project, destination, segment)
    if not pairs:
        raise SegmentsError("nothing to sync: no spec has a `sync:` entry" + (
            f" for destination {destination}" if destination else "") + (f" in segment {segment}" if segment else ""))
    return Engine(project, warehouse, settings).run(pairs, dry_run=dry_run, force=force)


def summary_line(outcome: Outcome) -> str:
    """One line per pair for the CLI and logs: counts and ids only, never PII."""
    head = f"{outcome.segment} -> {outcome.destination}: "
    if outcome.status == PLANNED and outcome.plan is not None:
        p = outcome.plan
        text = f"would add {p.adds}, remove {p.removes} (holds {p.audience})"
        samples = [f"add e.g. {', '.join(p.sample_adds)}" if p.sample_adds else "",
                   f"remove e.g. {', '.join(p.sample_removes)}" if p.sample_removes else ""]
        text += "".join(f"; {s}" for s in samples if s)
        if outcome.cost is not None:
            text += f"; {outcome.cost.describe()}"
    else:
        text = f"{outcome.status}: added {outcome.added}, removed {outcome.removed}, failed {outcome.failed}"
    return head + text + (f" - {outcome.message}" if outcome.message else "")

