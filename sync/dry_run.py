"""What a sync plan costs before anything is sent: API calls and time (``--dry-run``).

For each (segment, destination) pair the plan's adds and removes become the calls the
destination will make, call by call as its module sends them (lookups, bulk calls,
one call per contact where the API has nothing else), and the time those calls take
at the vendor's documented rate limit (the facts of ``../shared/api-specs/README.md``)
and at the pace the sync keeps (``rate_limit``, by default about 90% of it). Pairs of
one destination share its limit, so the destination's total is their sum.

Lookups are an upper bound: a user already looked up in the run (a member of two
segments) is not looked up again, and removes use the contact id stored at the add.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sync.destinations.base import Destination
from sync.routing import OWNER, admin_id, owner_attribute


@dataclass(frozen=True)
class Limit:
    """A documented rate limit: ``calls`` per ``seconds``."""

    calls: int
    seconds: int
    text: str

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


#: The vendors' documented limits (api-specs/README.md), per destination type.
DOCUMENTED: dict[str, Limit] = {
    "intercom": Limit(10_000, 60, "10,000 calls/min per app"),
    "chatwoot": Limit(3_000, 60, "3,000 requests/min per IP (self-hosted default)"),
    "customerio": Limit(100, 1, "100 requests/s"),
    "wati": Limit(10, 10, "about 10 requests per 10 s"),
}
#: Limits of one kind of call on its own (Chatwoot's contact search).
DOCUMENTED_SEARCH = Limit(100, 60, "contact search 100/min per account")


@dataclass(frozen=True)
class Calls:
    """Calls of one kind: how many, and the limit of their own if they have one."""

    what: str
    count: int
    #: (documented, configured) calls per second of this kind alone
    own_limit: tuple[float, float] | None = None


@dataclass(frozen=True)
class Cost:
    destination: str
    calls: tuple[Calls, ...]
    documented: Limit | None
    configured_rate: float | None  # calls per second the sync keeps to

    @property
    def total(self) -> int:
        return sum(c.count for c in self.calls)

    def seconds(self, rate: float | None, own: int) -> float | None:
        """Time at ``rate`` calls a second (``own``: 0 documented, 1 configured)."""
        if rate is None:
            return None
        time = self.total / rate
        for calls in self.calls:
            if calls.own_limit is not None:
                time = max(time, calls.count / calls.own_limit[own])
        return time

    @property
    def documented_seconds(self) -> float | None:
        return self.seconds(self.documented.per_second if self.documented else None, 0)

    @property
    def configured_seconds(self) -> float | None:
        return self.seconds(self.configured_rate, 1)

    def describe(self) -> str:
        """One clause for the summary line.

        >>> Cost("d", (Calls("lookups", 3), Calls("bulk tags", 1)), DOCUMENTED["intercom"], 150.0).describe()
        'API calls: 4 (3 lookups, 1 bulk tags), 0.0s at the documented 10,000 calls/min per app (0.0s at the sync pace of 150/s)'
        """
        if not self.total:
            return "API calls: 0"
        parts = ", ".join(f"{c.count} {c.what}" for c in self.calls if c.count)
        text = f"API calls: {self.total} ({parts})"
        if self.documented is not None:
            text += f", {duration(self.documented_seconds)} at the documented {self.documented.text}"
            if self.configured_rate is not None:
                text += f" ({duration(self.configured_seconds)} at the sync pace of {self.configured_rate:g}/s)"
        elif self.configured_rate is not None:
            text += f", {duration(self.configured_seconds)} at the sync pace of {self.configured_rate:g}/s (no documented limit)"
        else:
            text += ", no rate limit"
        return text


def duration(seconds: float | None) -> str:
    """
    >>> duration(0.04), duration(95), duration(7260)
    ('0.0s', '1m35s', '2h01m')
    """
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(round(seconds)) // 60
    if minutes < 60:
        return f"{minutes}m{int(round(seconds)) % 60:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _batches(count: int, size: int) -> int:
    return math.ceil(count / size) if count else 0


def _intercom(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    # the plan's batches mix adds and removes: at most one bulk tag call per batch
    bulk = min(adds, _batches(adds + removes, d.batch_size))
    return [
        Calls("POST /tags to find or create the tag", 1),
        Calls("contact lookups (GET /contacts/find_by_external_id, at most)", adds),
        Calls(f"bulk tag calls (POST /tags, up to {d.batch_size} contacts each)", bulk),
        Calls("untags (DELETE /contacts/{id}/tags/{tag}, one per contact)", removes),
        Calls("owner assignments (PUT /contacts/{id} owner_id)", adds if admin_id(d.options.get("owners"), owner) else 0),
    ]


def _routed(d: Destination, owner: str | None) -> bool:
    """Whether adds set an ``owner_attribute`` call by call (Chatwoot, Customer.io)."""
    return owner_attribute(d.options, {OWNER: owner}) is not None


def _chatwoot(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    search = float(d.options["search_rate_limit"])  # type: ignore[arg-type]
    return [
        Calls("label checks (GET /labels, a POST if missing)", 1),
        Calls("contact searches (at least one per add)", adds, (DOCUMENTED_SEARCH.per_second, search)),
        Calls("label reads and writes (GET and POST /contacts/{id}/labels, per contact)", 2 * (adds + removes)),
        Calls("owner attributes (PUT /contacts/{id} custom_attributes)", adds if _routed(d, owner) else 0),
    ]


def _customerio(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    return [
        Calls(f"add_customers calls ({d.batch_size} ids each)", _batches(adds, d.batch_size)),
        Calls(f"remove_customers calls ({d.batch_size} ids each)", _batches(removes, d.batch_size)),
        Calls("owner attributes (PUT /customers/{identifier}, one per person)", adds if _routed(d, owner) else 0),
    ]


def _braze(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    return [Calls(f"POST /users/track ({d.batch_size} users each)", _batches(adds + removes, d.batch_size))]


def _wati(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    return [Calls("updateContactAttributes calls (one per contact)", adds + removes)]


def _webhook(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    return [Calls(f"signed POSTs ({d.batch_size} changes each)", _batches(adds + removes, d.batch_size))]


def _csv(d: Destination, adds: int, removes: int, owner: str | None) -> list[Calls]:
    return []  # files, no API


PLANNERS: dict[str, Callable[[Destination, int, int, str | None], list[Calls]]] = {
    "intercom": _intercom, "chatwoot": _chatwoot, "customerio": _customerio, "braze": _braze,
    "wati": _wati, "webhook": _webhook, "csv": _csv,
}


def cost(destination: Destination, adds: int, removes: int, owner: str | None = None) -> Cost:
    """The calls a plan of ``adds`` and ``removes`` of a segment owned by ``owner``
    needs at ``destination``."""
    calls = PLANNERS[destination.type](destination, adds, removes, owner) if adds or removes else []
    return Cost(destination.name, tuple(calls), DOCUMENTED.get(destination.type), destination.rate)


def totals(costs: Iterable[Cost]) -> list[str]:
    """Per destination: the calls of all its pairs and their time (they share its limit)."""
    by_destination: dict[str, list[Cost]] = {}
    for item in costs:
        by_destination.setdefault(item.destination, []).append(item)
    lines = []
    for name, items in by_destination.items():
        merged: dict[str, Calls] = {}
        for item in items:
            for calls in item.calls:
                known = merged.get(calls.what)
                merged[calls.what] = Calls(calls.what, calls.count + (known.count if known else 0), calls.own_limit)
        whole = Cost(name, tuple(merged.values()), items[0].documented, items[0].configured_rate)
        lines.append(f"{name} (all {len(items)} segment(s)): {whole.describe()}")
    return lines
