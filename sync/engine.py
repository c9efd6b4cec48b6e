"""The sync: make every destination's audience equal each segment's members.

For every (segment, destination) pair of the specs' ``sync:`` entries, the engine
plans the changes against ``sync_state``, stops when the plan would remove too much
(SPEC 4's ``max_remove_pct``, unless forced), then sends the plan in batches, a few
in flight at once, and checkpoints each batch as soon as the destination acknowledges
it. Everything the run needs (options, secrets, built segments) is checked before the
first request, so bad input sends nothing. One sync per destination runs at a time:
a lock the OS or the server releases if the process dies (:mod:`sync.places`).

It runs on every engine: :mod:`sync.places` says where the membership is read and
where the record is kept. The warehouse is held only for short reads and checkpoints,
never while waiting on a destination: the plan is sent from the sync's own scratch
database (:mod:`sync.scratch`), so builds and member exports run while a slow
destination answers.
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
from sync.store import MEMORY_LIMIT, MEMORY_LIMIT_ENV, PlanSummary, Store, Wanted

SUCCEEDED, FAILED, BLOCKED, PLANNED, SKIPPED = "succeeded", "failed", "blocked", "planned", "skipped"
#: Destination options holding a URL, checked by ``segments validate``.
URL_OPTIONS = ("url", "base_url")


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

    def run(self, pairs: list[Pair], dry_run: bool = False, force: bool = False) -> list[Outcome]:
        """Sync ``pairs``; return one outcome per pair, in order.

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
        outcomes: list[Outcome] = []
        with open_place(self.warehouse, read_only=dry_run) as place:
            store = Store(place, self.project.catalog)
            store.limit_resources(self.settings.env.get(MEMORY_LIMIT_ENV, MEMORY_LIMIT))
            with store.hold():
                missing = sorted({p.segment for p in pairs} - store.built_segments())
                if missing:
                    raise SegmentsError(f"not in the last build: {', '.join(missing)}; run `segments build` first")
                if not dry_run:
                    store.ensure_tables()
                    store.flush_wal()
            for name, destination in destinations.items():
                mine = [p for p in pairs if p.destination == name]
                if dry_run:
                    outcomes += [self._plan_only(store, destination, p) for p in mine]
                    continue
                with place.lock(name):
                    outcomes += self._sync_destination(store, destination, mine, targets, force)
        return outcomes

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

    def _sync_destination(
        self, store: Store, destination: Destination, pairs: list[Pair], targets: dict[Pair, dict[str, object]], force: bool
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        down: str | None = None  # set when the destination stopped answering
        for pair in pairs:
            if down is not None:
                outcomes.append(Outcome(pair.key, pair.destination, SKIPPED, message=f"not sent: {down}"))
                continue
            outcome = self._sync_pair(store, destination, pair, targets[pair], force)
            if outcome.status == FAILED:
                down = outcome.message
            outcomes.append(outcome)
        return outcomes

    def _sync_pair(
        self, store: Store, destination: Destination, pair: Pair, target: dict[str, object], force: bool
    ) -> Outcome:
        wanted = self._wanted(destination, pair)
        sync_id = str(uuid.uuid4())
        with store.hold():  # one short hold for the plan and the run's row
            plan = store.make_plan(destination.name, wanted)
            store.start_run(sync_id, destination.name, pair.key, plan)
        outcome = Outcome(pair.key, pair.destination, SUCCEEDED, plan, sync_id)
        blocked = self._blocked(destination, plan)
        if blocked and not force:
            outcome.status, outcome.message = BLOCKED, blocked
        elif plan.adds or plan.removes:
            try:
                self._send(store, destination, pair, target, wanted, plan, outcome)
            except SinkError as error:
                outcome.status, outcome.message = FAILED, str(error)
            except BaseException as error:
                # Whatever stopped the run (a bug, Ctrl-C, the store), its row must not
                # stay 'running'. Only the error's type is recorded: a library's message
                # may quote a URL with its token.
                reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"stopped by {type(error).__name__}"
                if isinstance(error, SegmentsError):
                    reason = str(error)
                with contextlib.suppress(Exception):
                    store.drop_plan()
                    store.finish_run(sync_id, FAILED, reason)
                raise
        store.drop_plan()
        store.finish_run(sync_id, outcome.status, outcome.message)
        return outcome

    def _send(
        self, store: Store, destination: Destination, pair: Pair, target: dict[str, object],
        wanted: Wanted, plan: PlanSummary, outcome: Outcome,
    ) -> None:
        """Send the plan, ``concurrency`` batches in flight, checkpointing each ack.

        When the destination stays unreachable or refuses our credentials nothing new is sent; batches already in flight finish
        and are checkpointed, then the error propagates.
        """
        progress = self.settings.progress
        total = plan.adds + plan.removes
        progress.start(pair, total)
        audience: Audience = destination.audience(pair.key, {**target, OWNER: pair.owner})
        batches = store.batches(destination.name, pair.key, outcome.sync_id or "", wanted.fields,
                                destination.batch_size, total, encode=destination.JSON_CHANGES)
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
            added, removed = store.checkpoint(batch, first, last, result)
            outcome.added += added
            outcome.removed += removed
            outcome.failed += len(result.failures)
            progress.advance(pair, len(batch))

        try:
            with ThreadPoolExecutor(max_workers=destination.concurrency, thread_name_prefix=f"sync-{destination.name}") as pool:
                for item in batches:
                    while len(in_flight) >= destination.concurrency:
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            settle(future)
                    if stopped is not None:
                        break
                    in_flight[pool.submit(audience.send, item[0])] = item
                while in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        settle(future)
        finally:
            audience.close()
        if stopped is not None:
            raise stopped


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

