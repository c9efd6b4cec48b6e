"""The destination interface: what the sync engine hands a platform, and what it
gets back.

A :class:`Destination` is one entry of ``_destinations.yml``; its :meth:`audience` is
one segment synced there (a tag, a label, a manual segment, a file). The engine sends
an audience :class:`Batch` es of adds and removes; the audience applies them and says
which records failed for good. Transient trouble is retried below, in
:class:`~sync.http.HttpClient`; if it persists the error propagates and the engine
stops that destination, with the batch not acknowledged.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, overload
from urllib.parse import quote, urlsplit

from segments.errors import SegmentsError
from sync.http import HttpClient, TerminalError


@dataclass(frozen=True)
class Record:
    """One member to add or remove.

    ``fields`` holds the user attributes the destination asked for (adds only);
    ``remote_id`` what the destination answered when the member was added (removes).
    """

    user_id: str
    fields: Mapping[str, object] = field(default_factory=dict)
    remote_id: str | None = None


class LazyRecords(Sequence[Record]):
    """Records counted up front and read only when someone looks at them.

    A batch the warehouse already encoded (:attr:`Batch.encoded`) needs its records
    only to report a refused batch, so they are not made for every batch. ``load``
    reads the warehouse connection, which belongs to the thread that made the batch:
    reading them from another thread is a bug, and raises.
    """

    def __init__(self, count: int, load: Callable[[], tuple[Record, ...]]):
        self._count = count
        self._load = load
        self._owner = threading.get_ident()
        self._records: tuple[Record, ...] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        if self._records is None:
            if threading.get_ident() != self._owner:
                raise RuntimeError("a batch's records are read on the thread that planned it")
            self._records = self._load()
        return self._records[index]


@dataclass(frozen=True)
class EncodedChanges:
    """A batch's changes as the JSON arrays of SPEC 4.1, encoded by the warehouse:
    ``added`` is ``[{"user_id": ..., <field>: ...}, ...]``, ``removed``
    ``[{"user_id": ...}, ...]``, in plan order, byte for byte what ``json.dumps``
    makes of the records (compact, UTF-8)."""

    added: str
    removed: str


@dataclass(frozen=True)
class Batch:
    """A unit of work acknowledged as a whole.

    ``batch_id`` is the same on every retry and on a rerun after a crash (the same
    changes from the same state), so receivers can drop repeats. ``encoded`` is set
    for destinations that send SPEC 4.1's JSON (:attr:`Destination.JSON_CHANGES`);
    then ``added`` and ``removed`` are :class:`LazyRecords`.
    """

    destination: str
    segment: str
    sync_id: str
    batch_id: str
    added: Sequence[Record]
    removed: Sequence[Record]
    encoded: EncodedChanges | None = None

    def __len__(self) -> int:
        return len(self.added) + len(self.removed)


@dataclass(frozen=True)
class RecordFailure:
    user_id: str
    operation: str  # "add" | "remove"
    status: int | None
    message: str


@dataclass
class BatchResult:
    """What a destination did with a batch: records that failed for good (left out of
    the state, logged to ``sync_errors``, tried again next run) and ids it assigned."""

    failures: list[RecordFailure] = field(default_factory=list)
    remote_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def all_failed(cls, batch: Batch, error: TerminalError) -> BatchResult:
        failures = [RecordFailure(r.user_id, "add", error.status, str(error)) for r in batch.added]
        failures += [RecordFailure(r.user_id, "remove", error.status, str(error)) for r in batch.removed]
        return cls(failures=failures)


@dataclass(frozen=True)
class Option:
    """One option a destination (or a segment's ``sync:`` entry) takes."""

    name: str
    kind: type | tuple[type, ...] = str
    required: bool = False
    default: object = None
    secret: bool = False  # read from ${VAR}; never printed


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: object, env: Mapping[str, str], where: str) -> object:
    """Replace every ``${VAR}`` in a string option with the environment's value.

    Examples:
        >>> expand_env("http://${HOST}/hook", {"HOST": "127.0.0.1:8080"}, "d")
        'http://127.0.0.1:8080/hook'
        >>> expand_env(["${A}", 3], {"A": "x"}, "d")
        ['x', 3]
        >>> expand_env("${NOPE}", {}, "destination crm_hook")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: destination crm_hook: environment variable NOPE is not set
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise SegmentsError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [expand_env(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env, where) for k, v in value.items()}
    return value


def resolve_options(
    declared: tuple[Option, ...], raw: Mapping[str, object], where: str, env: Mapping[str, str] | None = None,
    expand: bool = True,
) -> dict[str, object]:
    """Check options against their declaration, fill defaults, expand ``${VAR}``
    (unless ``expand`` is false: ``segments validate`` checks without secrets).

    Raises:
        SegmentsError: every unknown, missing or mistyped option of ``where`` at once.
    """
    env = os.environ if env is None else env
    by_name = {o.name: o for o in declared}
    problems = [f"unknown option {k!r} (known: {', '.join(sorted(by_name))})" for k in raw if k not in by_name]
    resolved: dict[str, object] = {}
    for option in declared:
        if option.name not in raw or raw[option.name] is None:
            if option.required:
                problems.append(f"option {option.name!r} is required")
            resolved[option.name] = option.default
            continue
        value = raw[option.name]
        kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            problems.append(f"option {option.name!r} must be {names}, got {type(value).__name__}")
            continue
        resolved[option.name] = expand_env(value, env, where) if expand else value
    if problems:
        raise SegmentsError(f"{where}: " + "; ".join(problems))
    return resolved


# Options every destination takes (SPEC 4); each type adds its own.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("requires"),
    Option("max_remove_pct", (int, float), default=50),
    Option("batch_size", int),
    Option("rate_limit", (int, float)),  # requests per second; default from the vendor's docs
    Option("concurrency", int),
)


class Audience(ABC):
    """One segment at one destination."""

    @abstractmethod
    def send(self, batch: Batch) -> BatchResult:
        """Apply a batch. Return per-record failures; raise ``TerminalError`` when the
        whole batch was refused, ``TransientError`` when the destination is unreachable."""

    def close(self) -> None:
        """Release what the audience holds (open files)."""


class PerRecordAudience(Audience):
    """For APIs that take one contact per call: a refused record fails alone."""

    def send(self, batch: Batch) -> BatchResult:
        result = BatchResult()
        for operation, records in (("add", batch.added), ("remove", batch.removed)):
            for record in records:
                try:
                    remote_id = self.add(record) if operation == "add" else self.remove(record)
                except TerminalError as error:
                    result.failures.append(RecordFailure(record.user_id, operation, error.status, str(error)))
                    continue
                if operation == "add" and remote_id is not None:
                    result.remote_ids[record.user_id] = remote_id
        return result

    @abstractmethod
    def add(self, record: Record) -> str | None:
        """Put one member in the audience; return the destination's id for it."""

    @abstractmethod
    def remove(self, record: Record) -> None:
        """Take one member out of the audience."""


class Destination(ABC):
    """One configured destination.

    Subclasses declare their ``type`` (the ``type:`` of ``_destinations.yml``), their
    options, and limits taken from the vendor's documentation.
    """

    type: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    TARGET_OPTIONS: ClassVar[tuple[Option, ...]] = ()  # keys of a segment's sync entry
    DEFAULT_BATCH_SIZE: ClassVar[int] = 100
    MAX_BATCH_SIZE: ClassVar[int] = 100
    DEFAULT_RATE: ClassVar[float | None] = None  # requests per second
    DEFAULT_CONCURRENCY: ClassVar[int] = 1
    # Sends SPEC 4.1's JSON objects ({"user_id", **fields} per add, {"user_id"} per
    # remove): the warehouse may encode each batch (Batch.encoded), so no Python
    # object is made per record on the way.
    JSON_CHANGES: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        self.name = name
        self.options = dict(options)
        self.http = http

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        return COMMON_OPTIONS + cls.OPTIONS

    @property
    def batch_size(self) -> int:
        size = self.options.get("batch_size") or self.DEFAULT_BATCH_SIZE
        return max(1, min(int(size), self.MAX_BATCH_SIZE))  # type: ignore[call-overload]

    @property
    def rate(self) -> float | None:
        rate = self.options.get("rate_limit")
        return float(rate) if rate is not None else self.DEFAULT_RATE  # type: ignore[arg-type]

    @property
    def concurrency(self) -> int:
        return max(1, int(self.options.get("concurrency") or self.DEFAULT_CONCURRENCY))  # type: ignore[call-overload]

    @property
    def max_remove_pct(self) -> float:
        return float(self.options["max_remove_pct"])  # type: ignore[arg-type]

    @property
    def requires(self) -> str | None:
        return self.options.get("requires")  # type: ignore[return-value]

    def fields(self) -> tuple[str, ...]:
        """User attributes sent with each add."""
        return ()

    def required_fields(self) -> tuple[str, ...]:
        """Attributes a member must have to be sent at all (a phone for WhatsApp)."""
        return ()

    @abstractmethod
    def audience(self, segment: str, options: Mapping[str, object]) -> Audience:
        """Prepare one segment's audience (find or create its tag, open its file...)."""


# ---- helpers for destinations behind an HTTP API ---------------------------------------


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a bearer token, pasted with or without its
    ``Bearer`` prefix (vendors' dashboards show both).

    Examples:
        >>> bearer("abc")
        {'Authorization': 'Bearer abc'}
        >>> bearer("Bearer abc ")
        {'Authorization': 'Bearer abc'}
    """
    token = token.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP Basic authentication.

    Examples:
        >>> basic("site", "key")
        {'Authorization': 'Basic c2l0ZTprZXk='}
    """
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def segment(value: object) -> str:
    """One path segment, every reserved character escaped.

    Examples:
        >>> segment("u/1 x")
        'u%2F1%20x'
    """
    return quote(str(value), safe="")


def is_http_url(value: object) -> bool:
    """True for an ``http://`` or ``https://`` URL naming a host.

    Examples:
        >>> is_http_url("https://hooks.example.com/T0KEN?x=1"), is_http_url("ftp://x"), is_http_url("https:///p")
        (True, False, False)
    """
    parts = urlsplit(str(value).strip())
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def checked_url(value: object, where: str, option: str = "base_url") -> str:
    """An ``http(s)://`` base URL without its trailing slash.

    The value is never echoed: a URL may carry credentials.

    Examples:
        >>> checked_url("https://api.intercom.io/", "destination support")
        'https://api.intercom.io'
        >>> checked_url("api.intercom.io", "destination support")
        Traceback (most recent call last):
        ...
        segments.errors.SegmentsError: destination support: option 'base_url' must be an http:// or https:// URL
    """
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SegmentsError(f"{where}: option {option!r} must be an http:// or https:// URL")
    return text.rstrip("/")


class ApiDestination(Destination):
    """A destination behind a JSON HTTP API: where it lives (``base_url``, or a
    ``region`` of :attr:`REGIONS`), how requests authenticate (:meth:`headers`), and
    :meth:`call`, which sends one request through the shared client.
    """

    REGIONS: ClassVar[Mapping[str, str]] = {}  # region -> base URL, for SaaS vendors

    def __init__(self, name: str, options: Mapping[str, object], http: HttpClient):
        super().__init__(name, options, http)
        self.where = f"destination {name}"
        self.base_url = self._base_url()

    def _base_url(self) -> str:
        if self.options.get("base_url"):
            return checked_url(self.options["base_url"], self.where)
        region = self.options.get("region")
        if region not in self.REGIONS:
            known = ", ".join(self.REGIONS) or "none"
            raise SegmentsError(f"{self.where}: unknown region {region!r} (known: {known}); or set base_url")
        return self.REGIONS[str(region)]

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """Authentication and version headers sent with every request."""

    def call(
        self, method: str, path: str, *, body: object = None, params: Mapping[str, object] | None = None,
        where: str | None = None,
    ) -> Any:
        """Send one request to ``base_url + path``; return its JSON answer (None when
        the answer is empty or not JSON).

        Raises:
            TerminalError, TransientError: as :meth:`HttpClient.request`.
        """
        headers = {"Accept": "application/json", **self.headers()}
        response = self.http.request(
            method, self.base_url + path, json=body, params=params, headers=headers, where=where,
        )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None


class ContactIds:
    """A destination's contact ids by user id, looked up at most once per run.

    ``find`` returns the id or None (no such contact); misses are remembered too, so
    a user missing from the platform costs one lookup per run however many segments
    they are in. Safe to share between threads.

    Examples:
        >>> calls = []
        >>> ids = ContactIds(lambda user_id: calls.append(user_id) or {"u1": "c1"}.get(user_id))
        >>> ids.get("u1"), ids.get("u1"), ids.get("u2"), ids.get("u2")
        ('c1', 'c1', None, None)
        >>> calls
        ['u1', 'u2']
    """

    def __init__(self, find: Callable[[str], str | None]):
        self._find = find
        self._ids: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> str | None:
        with self._lock:
            if user_id in self._ids:
                return self._ids[user_id]
        found = self._find(user_id)
        with self._lock:
            self._ids[user_id] = found
        return found

    def remember(self, user_id: str, contact_id: str) -> None:
        with self._lock:
            self._ids[user_id] = contact_id


NOT_FOUND = 404


class ContactAudience(PerRecordAudience):
    """Membership as a mark on a platform's contact (a tag, a label), one contact per
    call: adds find the contact by user id (and return its id, so removes need no
    lookup); a member with no contact there fails alone and is tried again next run.
    A remove whose contact is gone, or never existed, has nothing left to do.
    """

    platform: ClassVar[str]  # in messages: "Intercom", "Chatwoot"

    def __init__(self, contacts: ContactIds, marker: str):
        self.contacts = contacts
        self.marker = marker  # the tag id, the label...

    @abstractmethod
    def mark(self, contact_id: str) -> None:
        """Put the audience's mark on a contact."""

    @abstractmethod
    def unmark(self, contact_id: str) -> None:
        """Take the audience's mark off a contact; a 404 means it is not there."""

    def add(self, record: Record) -> str | None:
        contact_id = self.contacts.get(record.user_id)
        if contact_id is None:
            raise TerminalError(f"no {self.platform} contact has this user id", NOT_FOUND)
        self.mark(contact_id)
        return contact_id

    def remove(self, record: Record) -> None:
        contact_id = record.remote_id or self.contacts.get(record.user_id)
        if contact_id is None:
            return
        try:
            self.unmark(contact_id)
        except TerminalError as error:
            if error.status != NOT_FOUND:
                raise
