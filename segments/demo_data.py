"""Deterministic demo data: the users and events of a chat/messaging business.

The tables match ``segment_specs/_catalog.yml`` column for column, so every example
spec in that directory has members. The data tells a small story: most users live in
India (a few in Lisbon, São Paulo, Berlin and New York), sign up over the last three
years, browse the site and app, read WhatsApp and email campaigns, add to cart and
sometimes buy, then stay active or drift away.

Everything comes from seeded :class:`numpy.random.Generator` streams (users from
per-position blocks, events from one stream per concern) and is built column-wise,
with no per-row Python, so a million users and about twenty million events take
about 15 seconds and 2 GB. The same ``(users, seed, anchor)`` always gives the same
frames, byte for byte (with the same numpy version: numpy does not promise
identical random streams across releases).

Example:
    >>> import datetime as dt
    >>> data = generate(users=200, seed=1, anchor=dt.datetime(2025, 1, 1))
    >>> len(data.users), list(data.users.columns) == list(USERS_SCHEMA)
    (200, True)
    >>> bool(data.events["occurred_at"].max() < data.anchor)
    True
    >>> generate(users=200, seed=1, anchor=dt.datetime(2025, 1, 1)).events.equals(data.events)
    True
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from sqlglot import exp

from segments.engines.base import export

# Column -> DuckDB type, in the catalog's order. `write_duckdb` casts to these and
# tests/test_demo_data.py checks them against segment_specs/_catalog.yml.
USERS_SCHEMA: dict[str, str] = {
    "user_id": "VARCHAR",
    "created_at": "TIMESTAMP",
    "email": "VARCHAR",
    "phone": "VARCHAR",
    "first_name": "VARCHAR",
    "city": "VARCHAR",
    "country": "VARCHAR",
    "language": "VARCHAR",
    "plan": "VARCHAR",
    "signup_at": "TIMESTAMP",
    "acquisition_channel": "VARCHAR",
    "is_vip": "BOOLEAN",
    "whatsapp_opt_in": "BOOLEAN",
    "email_opt_in": "BOOLEAN",
    "lifetime_value": "DOUBLE",
}
EVENTS_SCHEMA: dict[str, str] = {
    "event_id": "BIGINT",
    "user_id": "VARCHAR",
    "event_name": "VARCHAR",
    "occurred_at": "TIMESTAMP",
    "path": "VARCHAR",
    "referrer": "VARCHAR",
    "channel": "VARCHAR",
    "amount": "DOUBLE",
    "utm_campaign": "VARCHAR",
}

DAY = 86_400
HOUR = 3_600
MINUTE = 60
EVENT_WINDOW_DAYS = 365
# Signups reach back further than the event window: older users only show their
# last year of activity, as in a warehouse with a one-year retention.
SIGNUP_SCALE_DAYS = 300.0
MAX_SIGNUP_AGE_DAYS = 3 * 365

# ---------------------------------------------------------------------------
# Vocabularies. Code -1 in any coded column means NULL.
# ---------------------------------------------------------------------------

# (city, country, share of users, language weights over LANGUAGES)
LANGUAGES = ("en", "hi", "mr", "pt", "es", "de")
CITIES: tuple[tuple[str, str, float, tuple[float, ...]], ...] = (
    ("Mumbai", "IN", 0.20, (0.50, 0.20, 0.30, 0, 0, 0)),
    ("Pune", "IN", 0.12, (0.50, 0.15, 0.35, 0, 0, 0)),
    ("Nagpur", "IN", 0.06, (0.40, 0.25, 0.35, 0, 0, 0)),
    ("Delhi", "IN", 0.15, (0.55, 0.45, 0, 0, 0, 0)),
    ("Bengaluru", "IN", 0.15, (0.80, 0.20, 0, 0, 0, 0)),
    ("Hyderabad", "IN", 0.08, (0.70, 0.30, 0, 0, 0, 0)),
    ("Chennai", "IN", 0.07, (0.85, 0.15, 0, 0, 0, 0)),
    ("Kolkata", "IN", 0.06, (0.70, 0.30, 0, 0, 0, 0)),
    ("Lisbon", "PT", 0.03, (0.15, 0, 0, 0.85, 0, 0)),
    ("São Paulo", "BR", 0.035, (0.10, 0, 0, 0.85, 0.05, 0)),
    ("Berlin", "DE", 0.02, (0.30, 0, 0, 0, 0, 0.70)),
    ("New York", "US", 0.025, (0.85, 0, 0, 0, 0.15, 0)),
)
COUNTRIES = ("IN", "PT", "BR", "DE", "US")

# Names per country: (first names shown to humans, ASCII spelling for emails).
FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "IN": (
        "Aarav", "Vivaan", "Aditya", "Arjun", "Sai", "Ishaan", "Rohan", "Rahul", "Amit",
        "Vikram", "Sanjay", "Deepak", "Kiran", "Manoj", "Omkar", "Siddharth", "Nikhil",
        "Priya", "Ananya", "Diya", "Aadhya", "Saanvi", "Kavya", "Isha", "Pooja", "Neha",
        "Sneha", "Riya", "Meera", "Anjali", "Sunita", "Lakshmi", "Shreya", "Tanvi",
        "Aishwarya", "Gauri",
    ),
    "PT": ("João", "Maria", "Inês", "Tiago", "Beatriz", "Duarte", "Leonor", "Rui"),
    "BR": ("João", "Ana", "Lucas", "Gabriel", "Camila", "Rafael", "Mariana", "Júlia"),
    "DE": ("Lukas", "Leon", "Jonas", "Felix", "Emma", "Mia", "Hannah", "Lena", "Jürgen"),
    "US": ("James", "Olivia", "Liam", "Noah", "Ava", "Ethan", "Sophia", "Grace", "Mateo"),
}
LAST_NAMES: dict[str, tuple[str, ...]] = {
    "IN": (
        "sharma", "patel", "deshmukh", "kulkarni", "iyer", "reddy", "nair", "gupta",
        "singh", "das", "joshi", "mehta", "rao", "banerjee", "pawar", "shinde",
    ),
    "PT": ("silva", "santos", "ferreira", "pereira", "costa"),
    "BR": ("silva", "souza", "oliveira", "lima", "carvalho"),
    "DE": ("mueller", "schmidt", "schneider", "fischer", "weber"),
    "US": ("smith", "johnson", "brown", "garcia", "miller"),
}
# Reserved example domains only: demo data may be synced to real messaging tools,
# and a plausible gmail address could belong to a real person.
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "inbox.test")
EMAIL_DOMAIN_WEIGHTS = (0.45, 0.2, 0.15, 0.12, 0.08)

PLANS = ("free", "pro", "enterprise")
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "email", "whatsapp")
ACQUISITION_WEIGHTS = (0.35, 0.20, 0.18, 0.12, 0.07, 0.08)

EVENT_NAMES = (
    "page_view", "message_read", "chat_started", "login", "cart_add",  # drawn directly
    "purchase", "message_reply", "link_click", "demo_request", "signup",  # follow others
)
PAGE_VIEW, MESSAGE_READ, CHAT_STARTED, LOGIN, CART_ADD = range(5)
PURCHASE, MESSAGE_REPLY, LINK_CLICK, DEMO_REQUEST, SIGNUP = range(5, 10)

PATHS = (
    "/", "/pricing", "/features", "/cart", "/checkout",
    "/blog/whatsapp-marketing-101", "/blog/chatbot-best-practices",
    "/blog/festive-season-campaigns", "/docs/getting-started", "/docs/api/messages",
    "/docs/webhooks", "/docs/templates",
)
PRICING_PATH = PATHS.index("/pricing")
# Evaluators (B2B buyers) read pricing and docs; everyone else mostly browses.
PATH_WEIGHTS_BROWSING = (0.26, 0.09, 0.12, 0.10, 0.07, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.03)
PATH_WEIGHTS_EVALUATING = (0.12, 0.26, 0.16, 0.02, 0.02, 0.04, 0.04, 0.02, 0.12, 0.08, 0.06, 0.06)

REFERRERS = ("google.com", "facebook.com", "instagram.com", "t.co", "partner.example",
             "blog.partner.example")
# Probabilities of each referrer; the rest of the mass is NULL (direct traffic).
REFERRER_WEIGHTS = (0.26, 0.08, 0.06, 0.02, 0.02, 0.01)
REFERRER_WEIGHTS_REFERRED = (0.10, 0.03, 0.02, 0.01, 0.30, 0.14)

CHANNELS = ("web", "app", "whatsapp", "email")
# Channel weights per drawn/derived event name (None: channel comes from the source event).
CHANNEL_WEIGHTS: dict[int, tuple[float, ...]] = {
    PAGE_VIEW: (0.55, 0.30, 0.10, 0.05),
    MESSAGE_READ: (0.0, 0.12, 0.58, 0.30),
    CHAT_STARTED: (0.30, 0.20, 0.50, 0.0),
    LOGIN: (0.60, 0.40, 0.0, 0.0),
    CART_ADD: (0.55, 0.33, 0.12, 0.0),
    SIGNUP: (0.70, 0.30, 0.0, 0.0),
}
CAMPAIGNS = ("welcome_series", "cart_reminder", "weekly_digest", "festive_sale",
             "monsoon_offer", "product_update", "webinar_invite")


@dataclass(frozen=True)
class Persona:
    """How one kind of user behaves; every user is exactly one persona.

    Attributes:
        name: for readers of this file only.
        share: fraction of users.
        activity: multiplier of the base event rate.
        mix: probabilities of page_view, message_read, chat_started, login, cart_add.
        reply_p: chance a read message gets a reply.
        click_p: chance a read campaign message gets a link click.
        buy_p: chance a cart_add is followed by a purchase.
        demo_p: chance a /pricing page view is followed by a demo request.
        paid_plan_p: chance of a pro or enterprise plan.
    """

    name: str
    share: float
    activity: float
    mix: tuple[float, float, float, float, float]
    reply_p: float
    click_p: float
    buy_p: float
    demo_p: float
    paid_plan_p: float


PERSONAS: tuple[Persona, ...] = (
    Persona("browser", 0.30, 1.0, (0.70, 0.12, 0.02, 0.12, 0.04), 0.08, 0.10, 0.25, 0.02, 0.15),
    Persona("shopper", 0.20, 1.3, (0.52, 0.12, 0.02, 0.12, 0.22), 0.12, 0.15, 0.45, 0.01, 0.20),
    Persona("chatter", 0.20, 1.2, (0.20, 0.50, 0.12, 0.08, 0.10), 0.45, 0.20, 0.30, 0.01, 0.20),
    Persona("lurker", 0.22, 0.3, (0.45, 0.40, 0.02, 0.10, 0.03), 0.05, 0.05, 0.20, 0.01, 0.05),
    Persona("evaluator", 0.08, 1.0, (0.60, 0.12, 0.08, 0.15, 0.05), 0.20, 0.15, 0.30, 0.20, 0.60),
)
CHATTER = 2
EVALUATOR = 4

# Base events per active day, before the persona multiplier; tuned so the average
# user has about 20 events in the 365-day window.
BASE_DAILY_EVENTS = 0.15
# Shape of the per-user Gamma rate: small means skewed (many light, a few heavy users).
ACTIVITY_SHAPE = 0.6
# Share of users still active at the anchor; the others drift away after a while.
RETAINED_SHARE = 0.40
CHURN_SCALE_DAYS = 90.0


# Users are drawn in blocks of this many rows, each block from its own seed, so a
# user's attributes depend on the seed and the user's position only.
USER_BLOCK_ROWS = 65_536
# Uniform draws reserved per user. Changing it reshuffles every user: add new
# attributes by using a spare column instead (about 30 are in use).
USER_DRAW_COLUMNS = 40
_USER_STREAM = 0x05E6  # tells the users' block seeds apart from other streams


class _UserDraws:
    """Position-stable random draws for users: column after column of uniforms.

    It offers the few :class:`numpy.random.Generator` methods the user code calls
    (``random``, ``integers``, ``exponential``, ``choice``), each answering from the
    next reserved column, so row ``i`` never depends on how many users there are.
    """

    def __init__(self, seed: int, n: int):
        blocks = [
            # rng.random fills row after row, so a shorter last block is a prefix.
            np.random.default_rng([seed, _USER_STREAM, index]).random(
                (min(USER_BLOCK_ROWS, n - start), USER_DRAW_COLUMNS)
            )
            for index, start in enumerate(range(0, n, USER_BLOCK_ROWS))
        ]
        self._uniforms = np.concatenate(blocks) if blocks else np.empty((0, USER_DRAW_COLUMNS))
        self._next_column = 0

    def random(self, size: int) -> np.ndarray:
        if self._next_column == USER_DRAW_COLUMNS:
            raise RuntimeError("out of reserved user draws: raise USER_DRAW_COLUMNS")
        column = self._uniforms[:size, self._next_column]
        self._next_column += 1
        return column

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        return low + (self.random(size) * (high - low)).astype(np.int64)

    def exponential(self, scale: float, size: int) -> np.ndarray:
        return -scale * np.log1p(-self.random(size))

    def choice(self, a: int, size: int, p: np.ndarray) -> np.ndarray:
        cumulative = np.cumsum(p)
        return np.minimum(np.searchsorted(cumulative, self.random(size), side="right"), a - 1)


_Draws = np.random.Generator | _UserDraws


@dataclass(frozen=True)
class DemoData:
    """Generated demo tables.

    Column dtypes: text is pandas ``str`` in ``users`` and ``category`` (of ``str``)
    in ``events``, timestamps ``datetime64[us]`` (naive UTC), booleans the nullable
    ``boolean``, numbers ``float64`` (NaN for NULL), ``event_id`` ``int64``.

    Attributes:
        users: one row per user, columns and order of :data:`USERS_SCHEMA`.
        events: one row per event, columns and order of :data:`EVENTS_SCHEMA`,
            sorted by ``occurred_at`` (``event_id`` follows that order).
        anchor: the instant the data ends (naive UTC); every event is before it.
    """

    users: pd.DataFrame
    events: pd.DataFrame
    anchor: dt.datetime


@dataclass(frozen=True)
class _Users:
    """Per-user arrays the events are drawn from (internal, before formatting)."""

    persona: np.ndarray  # int8 index into PERSONAS
    country: np.ndarray  # int8 index into COUNTRIES
    acquisition: np.ndarray  # int8 index into ACQUISITION_CHANNELS
    signup_age_s: np.ndarray  # int64 seconds before the anchor
    created_age_s: np.ndarray  # int64 seconds before the anchor
    created_missing: np.ndarray  # bool: created_at is NULL
    user_ids: np.ndarray  # str ``u0000001``...
    columns: dict[str, object]  # finished columns, all but timestamps and lifetime_value


@dataclass(frozen=True)
class _Events:
    """Coded event columns (internal); code -1 means NULL, amount NaN means NULL."""

    user: np.ndarray  # int32 index of the user
    name: np.ndarray  # int8 index into EVENT_NAMES
    t: np.ndarray  # int64 epoch seconds
    path: np.ndarray
    referrer: np.ndarray
    channel: np.ndarray
    amount: np.ndarray
    campaign: np.ndarray

    @staticmethod
    def concat(parts: Sequence[_Events]) -> _Events:
        return _Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in _EVENT_FIELDS))

    def take(self, index: np.ndarray) -> _Events:
        return _Events(*(getattr(self, f)[index] for f in _EVENT_FIELDS))


_EVENT_FIELDS = ("user", "name", "t", "path", "referrer", "channel", "amount", "campaign")


def default_anchor() -> dt.datetime:
    """Today at 00:00 UTC, as a naive datetime."""
    now = dt.datetime.now(dt.timezone.utc)
    return dt.datetime(now.year, now.month, now.day)


def generate(users: int = 5000, seed: int = 7, anchor: dt.datetime | None = None) -> DemoData:
    """Generate demo users and their events over the 365 days before ``anchor``.

    User attributes depend on ``seed`` and the user's position only: they stay put
    when the anchor moves, and a larger demo extends a smaller one (the first 5,000
    users of ``generate(users=20_000)`` have the emails of ``generate(users=5_000)``,
    which ``segment_specs/uploads/vip_list.csv`` relies on). Events are drawn for all
    users at once and follow the anchor.

    Args:
        users: number of users (about 20 events each on average, heavily skewed).
        seed: seed of the random streams.
        anchor: the instant the data ends, naive UTC or timezone-aware (converted to
            UTC); default today 00:00 UTC. Every event is strictly before it.

    Returns:
        The users and events frames, with ``anchor`` normalised to naive UTC.

    Raises:
        ValueError: if ``users`` is negative.

    Example:
        >>> data = generate(users=100, seed=3, anchor=dt.datetime(2025, 6, 1))
        >>> data.users["user_id"].iloc[0], data.users["user_id"].is_unique
        ('u0000001', True)
    """
    if users < 0:
        raise ValueError(f"users must be >= 0, got {users}")
    anchor = _naive_utc(anchor) if anchor is not None else default_anchor()
    # Separate streams, so changing how events are drawn never reshuffles who the users are.
    time_rng, event_rng, finish_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    anchor_s = _epoch_seconds(anchor)
    people = _draw_users(_UserDraws(seed, users), users)
    signup_s = anchor_s - people.signup_age_s
    events = _draw_events(event_rng, time_rng, people, signup_s, anchor_s)
    users_frame = _users_frame(people, signup_s, anchor_s, events, finish_rng)
    return DemoData(users=users_frame, events=_events_frame(events, people.user_ids), anchor=anchor)


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------


def _draw_users(rng: _UserDraws, n: int) -> _Users:
    """Draw every user attribute that does not depend on events or the anchor."""
    city = _choice(rng, [c[2] for c in CITIES], n)
    country_of_city = np.array([COUNTRIES.index(c[1]) for c in CITIES], dtype=np.int8)
    country = country_of_city[city]
    persona = _choice(rng, [p.share for p in PERSONAS], n)

    language = _choice_per_group(rng, np.array([c[3] for c in CITIES]), city)
    first_index, first_pool, email_names = _names(rng, country)
    number = np.arange(1, n + 1)
    email = _emails(rng, email_names, number)
    phone = _phones(rng, country)

    paid_p = np.array([p.paid_plan_p for p in PERSONAS])[persona]
    paid = rng.random(n) < paid_p
    # A fifth of the paying users are on enterprise (code 2), the rest on pro (1).
    plan = np.where(paid, np.where(rng.random(n) < 0.2, 2, 1), 0).astype(np.int8)
    acquisition = _choice(rng, ACQUISITION_WEIGHTS, n)
    vip_p = np.array([0.005, 0.03, 0.25])[plan]
    is_vip = rng.random(n) < vip_p

    # Chatters opted in to WhatsApp far more often; Indian users more than others.
    india = country == COUNTRIES.index("IN")
    wa_p = np.where(persona == CHATTER, 0.85, np.where(india, 0.6, 0.3))
    whatsapp = rng.random(n) < wa_p
    whatsapp_missing = rng.random(n) < 0.08  # never asked
    email_opt_in = rng.random(n) < 0.55

    age_days = rng.exponential(SIGNUP_SCALE_DAYS, n)
    age_days = np.minimum(age_days, MAX_SIGNUP_AGE_DAYS - rng.random(n) * 30)
    # Some brand-new users (signed up in the last day) on top of the exponential's share.
    newest = rng.random(n) < 0.004
    age_days = np.where(newest, rng.random(n), age_days)
    age_s = np.maximum((age_days * DAY).astype(np.int64), 60)
    # Accounts are created when someone first leaves details, a little before signup
    # (at most a tenth of the signup's age, so the newest users stay new).
    lead_s = np.minimum(rng.exponential(2 * DAY, n), age_s * 0.1).astype(np.int64)
    created_age_s = age_s + np.where(rng.random(n) < 0.7, 0, lead_s)
    created_missing = rng.random(n) < 0.0015  # legacy imports without a creation date

    city_codes = city.astype(np.int16)
    city_codes[rng.random(n) < 0.04] = -1  # city unknown; country still known (phone, IP)

    user_ids = _user_ids(n)
    columns: dict[str, object] = {
        "user_id": _text(user_ids),
        "email": email,
        "phone": phone,
        "first_name": _text(first_pool, first_index),
        "city": _text([c[0] for c in CITIES], city_codes),
        "country": _text(COUNTRIES, country),
        "language": _text(LANGUAGES, language),
        "plan": _text(PLANS, plan),
        "acquisition_channel": _text(ACQUISITION_CHANNELS, acquisition),
        "is_vip": pd.array(is_vip, dtype="boolean"),
        "whatsapp_opt_in": pd.arrays.BooleanArray(whatsapp, whatsapp_missing),
        "email_opt_in": pd.array(email_opt_in, dtype="boolean"),
    }
    return _Users(
        persona=persona,
        country=country,
        acquisition=acquisition,
        signup_age_s=age_s,
        created_age_s=created_age_s,
        created_missing=created_missing,
        user_ids=user_ids,
        columns=columns,
    )


def _names(
    rng: _UserDraws, country: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First names as shown (pool and index into it) and ASCII ``first``/``last`` for emails."""
    firsts = [name for code in COUNTRIES for name in FIRST_NAMES[code]]
    first_index = _index_in_group(rng, country, [len(FIRST_NAMES[c]) for c in COUNTRIES])
    last_pool = np.array([n for code in COUNTRIES for n in LAST_NAMES[code]], dtype=str)
    last_index = _index_in_group(rng, country, [len(LAST_NAMES[c]) for c in COUNTRIES])
    ascii_first = np.array([_ascii_lower(n) for n in firsts], dtype=str)
    return first_index, np.array(firsts, dtype=object), np.stack(
        [ascii_first[first_index], last_pool[last_index]]
    )


def _emails(
    rng: _UserDraws, names: np.ndarray, number: np.ndarray
) -> pd.arrays.StringArray:
    """``first.last<number>@domain``: unique by the number; some odd, some missing."""
    n = number.size
    ascii_first, last = names
    domain = np.array(EMAIL_DOMAINS, dtype=str)[_choice(rng, EMAIL_DOMAIN_WEIGHTS, n)]
    email = _concat(ascii_first, ".", last, number.astype(str), "@", domain)
    # Hand-typed addresses: some upper-cased or capitalised, a few with stray spaces.
    oddity = rng.random(n)
    for low, high, retype in (
        (0.00, 0.02, np.strings.upper),
        (0.02, 0.04, np.strings.title),
        (0.04, 0.05, lambda e: np.strings.add(" ", e)),
        (0.05, 0.06, lambda e: np.strings.add(e, " ")),
    ):
        odd = np.flatnonzero((oddity >= low) & (oddity < high))
        if odd.size:
            email = _put(email, odd, retype(email[odd]))
    return _text_with_nulls(email, rng.random(n) < 0.05)


def _put(values: np.ndarray, index: np.ndarray, replacement: np.ndarray) -> np.ndarray:
    """``values`` with ``values[index] = replacement``, widening the string type if needed."""
    widest = np.promote_types(values.dtype, replacement.dtype)
    out = values.astype(widest, copy=values.dtype != widest)
    out[index] = replacement
    return out


def _phones(rng: _UserDraws, country: np.ndarray) -> pd.arrays.StringArray:
    """Mobile numbers in the mixed formats people type; about 10% missing."""
    n = country.size
    # Indian mobiles start with 6-9, mostly 9; other countries get their own shapes.
    lead = np.array([9, 8, 7, 6])[_choice(rng, (0.6, 0.2, 0.15, 0.05), n)]
    local = (lead * 10**9 + rng.integers(0, 10**9, n)).astype(str)
    head, rest = np.strings.slice(local, 0, 5), np.strings.slice(local, 5, None)
    style = _choice(rng, (0.35, 0.2, 0.2, 0.25), n)
    formats = (
        _concat("+91 ", head, " ", rest),  # +91 98765 43210
        _concat("0", local),  # 09876543210
        _concat("+91-", local),  # +91-9876543210
        local,  # 9876543210
    )
    phone = np.select([style == k for k in range(len(formats))], formats, default="")

    tail = _zfill(rng.integers(0, 10**8, n).astype(str), 8)

    def part(start: int, stop: int | None) -> np.ndarray:
        return np.strings.slice(tail, start, stop)

    by_country = {
        "PT": _concat("+351 91", part(0, 1), " ", part(1, 4), " ", part(4, 7)),
        "BR": _concat("+55 11 9", part(0, 4), "-", part(4, None)),
        "DE": _concat("+49 151 ", tail),
        # 555-0100..0199 is reserved for fiction in the North American plan.
        "US": _concat("+1 (212) 555-01", part(0, 2)),
    }
    for code, numbers in by_country.items():
        phone = np.where(country == COUNTRIES.index(code), numbers, phone)
    return _text_with_nulls(phone, rng.random(n) < 0.10)


# ---------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------


def _draw_events(
    rng: np.random.Generator,
    time_rng: np.random.Generator,
    people: _Users,
    signup_s: np.ndarray,
    anchor_s: int,
) -> _Events:
    """Draw directly-occurring events, then the events that follow them."""
    n = people.persona.size
    window_start = anchor_s - EVENT_WINDOW_DAYS * DAY
    start = np.maximum(signup_s, window_start)
    # Retained users stay active up to the anchor; the others drift away after a while.
    churn_after = (time_rng.exponential(CHURN_SCALE_DAYS, n) * DAY).astype(np.int64)
    retained = time_rng.random(n) < RETAINED_SHARE
    end = np.where(retained, anchor_s, np.minimum(anchor_s, start + churn_after))
    active_days = (end - start) / DAY

    persona_activity = np.array([p.activity for p in PERSONAS])[people.persona]
    daily = rng.gamma(ACTIVITY_SHAPE, BASE_DAILY_EVENTS / ACTIVITY_SHAPE, n) * persona_activity
    counts = rng.poisson(daily * active_days)
    user = np.repeat(np.arange(n, dtype=np.int32), counts)
    m = user.size

    name = np.empty(m, dtype=np.int8)
    persona = people.persona[user]
    for index, p in enumerate(PERSONAS):
        chosen = persona == index
        name[chosen] = _choice(rng, p.mix, int(chosen.sum()))

    t = _times_between(time_rng, start[user], end[user])
    base = _Events(
        user=user,
        name=name,
        t=t,
        path=np.full(m, -1, dtype=np.int8),
        referrer=np.full(m, -1, dtype=np.int8),
        channel=_channels(rng, name),
        amount=np.full(m, np.nan),
        campaign=np.full(m, -1, dtype=np.int8),
    )
    _decorate_page_views(rng, base, persona, people.acquisition[user])
    _decorate_reads(rng, base)
    _decorate_carts(rng, base)

    signups = _signups(rng, signup_s, window_start)
    followers = _followers(rng, base, persona, anchor_s)
    return _Events.concat([base, signups, *followers])


def _times_between(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Instants in ``[start, end)``, leaning towards ``end``, mostly in Indian daytime."""
    span = end - start
    # u**0.8 leans towards the end of each user's active span: activity grows
    # until people drift away, which keeps the last days busy.
    t = start + (rng.random(start.size) ** 0.8 * span).astype(np.int64)
    # Move each event to a daytime hour of its own UTC day (peak 14:00 IST = 08:30
    # UTC); keep the original instant when that would leave the user's span.
    second_of_day = (rng.normal(8.5 * HOUR, 4 * HOUR, start.size) % DAY).astype(np.int64)
    daytime = t - t % DAY + second_of_day
    return np.where((daytime >= start) & (daytime < end), daytime, t)


def _channels(rng: np.random.Generator, name: np.ndarray) -> np.ndarray:
    """A channel code per event, drawn from its event name's channel mix."""
    channel = np.full(name.size, -1, dtype=np.int8)
    for event_name, weights in CHANNEL_WEIGHTS.items():
        chosen = name == event_name
        channel[chosen] = _choice(rng, weights, int(chosen.sum()))
    return channel


def _decorate_page_views(
    rng: np.random.Generator, events: _Events, persona: np.ndarray, acquisition: np.ndarray
) -> None:
    """Fill path, referrer and campaign of page views in place."""
    views = np.flatnonzero(events.name == PAGE_VIEW)
    evaluating = persona[views] == EVALUATOR
    path = _choice(rng, PATH_WEIGHTS_BROWSING, views.size)
    path[evaluating] = _choice(rng, PATH_WEIGHTS_EVALUATING, int(evaluating.sum()))
    events.path[views] = path

    referred = acquisition[views] == ACQUISITION_CHANNELS.index("referral")
    events.referrer[views] = _choice_with_null(rng, REFERRER_WEIGHTS, views.size)
    events.referrer[views[referred]] = _choice_with_null(
        rng, REFERRER_WEIGHTS_REFERRED, int(referred.sum())
    )
    # Views opened from a WhatsApp or email message carry that message's campaign.
    messaging = [CHANNELS.index("whatsapp"), CHANNELS.index("email")]
    from_message = np.isin(events.channel[views], messaging)
    tagged = views[from_message & (rng.random(views.size) < 0.8)]
    events.campaign[tagged] = rng.integers(0, len(CAMPAIGNS), tagged.size)
    events.referrer[views[from_message]] = -1


def _decorate_reads(rng: np.random.Generator, events: _Events) -> None:
    """Most read messages belong to a campaign; the rest are conversations."""
    reads = np.flatnonzero(events.name == MESSAGE_READ)
    tagged = reads[rng.random(reads.size) < 0.75]
    events.campaign[tagged] = rng.integers(0, len(CAMPAIGNS), tagged.size)


def _decorate_carts(rng: np.random.Generator, events: _Events) -> None:
    """Cart values at price points ending in 9 (mean about 1,500)."""
    carts = np.flatnonzero(events.name == CART_ADD)
    raw = np.exp(rng.normal(7.0, 0.8, carts.size))
    events.amount[carts] = np.clip(np.round(raw / 10) * 10 - 1, 99.0, 49_999.0)


def _signups(rng: np.random.Generator, signup_s: np.ndarray, window_start: int) -> _Events:
    """One signup event at each signup inside the event window."""
    user = np.flatnonzero(signup_s >= window_start).astype(np.int32)
    name = np.full(user.size, SIGNUP, dtype=np.int8)
    return _Events(
        user=user,
        name=name,
        t=signup_s[user],
        path=np.full(user.size, -1, dtype=np.int8),
        referrer=np.full(user.size, -1, dtype=np.int8),
        channel=_channels(rng, name),
        amount=np.full(user.size, np.nan),
        campaign=np.full(user.size, -1, dtype=np.int8),
    )


def _followers(
    rng: np.random.Generator, base: _Events, persona: np.ndarray, anchor_s: int
) -> list[_Events]:
    """Events caused by earlier ones: purchases, replies, clicks, demo requests, repeat chats."""

    def persona_p(field: str) -> np.ndarray:
        return np.array([getattr(p, field) for p in PERSONAS])[persona]

    is_campaign_read = (base.name == MESSAGE_READ) & (base.campaign >= 0)
    is_pricing_view = (base.name == PAGE_VIEW) & (base.path == PRICING_PATH)
    rules = (
        # (source mask, follow probability, event name, min delay, mean extra delay)
        (base.name == CART_ADD, persona_p("buy_p"), PURCHASE, 1 * MINUTE, 40 * MINUTE),
        (base.name == MESSAGE_READ, persona_p("reply_p"), MESSAGE_REPLY, 10, 20 * MINUTE),
        (is_campaign_read, persona_p("click_p"), LINK_CLICK, 5, 3 * MINUTE),
        (is_pricing_view, persona_p("demo_p"), DEMO_REQUEST, 30, 10 * MINUTE),
        # An unsolved issue brings the user back to chat within a day or two.
        (base.name == CHAT_STARTED, np.full(persona.size, 0.35), CHAT_STARTED, 1 * HOUR, 20 * HOUR),
    )
    followers = []
    for source_mask, probability, event_name, min_delay, mean_delay in rules:
        source = np.flatnonzero(source_mask & (rng.random(base.name.size) < probability))
        delay = min_delay + rng.exponential(mean_delay, source.size).astype(np.int64)
        t = base.t[source] + delay
        # Whatever would happen after the anchor has not happened yet.
        source, t = source[t < anchor_s], t[t < anchor_s]
        follower = base.take(source)
        follower.name[:] = event_name
        follower.t[:] = t
        follower.path[:] = -1
        follower.referrer[:] = -1
        if event_name == DEMO_REQUEST:
            follower.channel[:] = CHANNELS.index("web")
        if event_name != PURCHASE:
            follower.amount[:] = np.nan
        followers.append(follower)
    return followers


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


def _users_frame(
    people: _Users, signup_s: np.ndarray, anchor_s: int, events: _Events, rng: np.random.Generator
) -> pd.DataFrame:
    """Finish the users: timestamps, lifetime value, and the catalog's column order."""
    n = signup_s.size
    created = _timestamps(anchor_s - people.created_age_s)
    created[people.created_missing] = np.datetime64("NaT")

    purchases = events.name == PURCHASE
    spend = np.bincount(events.user[purchases], weights=events.amount[purchases], minlength=n)
    # Users older than the event window spent money before it too.
    older = signup_s < anchor_s - EVENT_WINDOW_DAYS * DAY
    earlier_spend = np.where(older & (rng.random(n) < 0.35), rng.gamma(1.2, 2500.0, n), 0.0)
    lifetime_value = np.round(spend + earlier_spend, 2)
    lifetime_value[rng.random(n) < 0.06] = np.nan  # not computed yet by the CRM

    columns = dict(people.columns)
    columns["created_at"] = created
    columns["signup_at"] = _timestamps(signup_s)
    columns["lifetime_value"] = lifetime_value
    return pd.DataFrame({name: columns[name] for name in USERS_SCHEMA})


def _events_frame(events: _Events, user_ids: np.ndarray) -> pd.DataFrame:
    """Sort the events by time, number them and turn codes into categoricals of text.

    Text columns are categoricals because they repeat few values over many rows:
    twenty million ``user_id`` strings would cost gigabytes and tens of seconds.
    """
    events = events.take(_time_order(events.t))
    frame = pd.DataFrame(
        {
            "event_id": np.arange(1, events.t.size + 1, dtype=np.int64),
            "user_id": _categorical(user_ids, events.user),
            "event_name": _categorical(EVENT_NAMES, events.name),
            "occurred_at": _timestamps(events.t),
            "path": _categorical(PATHS, events.path),
            "referrer": _categorical(REFERRERS, events.referrer),
            "channel": _categorical(CHANNELS, events.channel),
            "amount": events.amount,
            "utm_campaign": _categorical(CAMPAIGNS, events.campaign),
        },
        copy=False,
    )
    return frame


def _time_order(t: np.ndarray) -> np.ndarray:
    """The permutation sorting ``t``, ties kept in input order.

    Sorting unique ``(t, position)`` keys packed in one int64 is several times faster
    than a stable argsort, and any sort algorithm gives the same answer on any CPU.
    """
    if t.size == 0:
        return np.empty(0, dtype=np.int64)
    position_bits = int(t.size - 1).bit_length()
    t_offset = t - t.min()
    if int(t_offset.max()).bit_length() + position_bits > 62:
        return np.argsort(t, kind="stable")
    keys = (t_offset << position_bits) | np.arange(t.size, dtype=np.int64)
    keys.sort()
    return keys & ((1 << position_bits) - 1)


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def write_duckdb(
    data: DemoData,
    con: duckdb.DuckDBPyConnection,
    users_table: str = "raw.users",
    events_table: str = "raw.events",
) -> None:
    """Create or replace both tables, typed as in the catalog, in one transaction.

    Args:
        data: the generated tables.
        con: an open DuckDB connection.
        users_table: ``[schema.]table`` for the users; the schema is created if missing.
        events_table: ``[schema.]table`` for the events.

    Example:
        >>> con = duckdb.connect()
        >>> write_duckdb(generate(users=20, anchor=dt.datetime(2025, 1, 1)), con)
        >>> con.execute("SELECT count(*) FROM raw.users").fetchone()
        (20,)
    """
    views = {"__demo_users": data.users, "__demo_events": data.events}
    for view, frame in views.items():
        con.register(view, frame)
    try:
        con.execute(exp.Transaction().sql("duckdb"))
        try:
            for table, view, schema in (
                (users_table, "__demo_users", USERS_SCHEMA),
                (events_table, "__demo_events", EVENTS_SCHEMA),
            ):
                target = exp.to_table(table, quoted=True)
                if target.db:
                    schema_name = exp.Table(this=exp.to_identifier(target.db, quoted=True))
                    con.execute(exp.Create(kind="SCHEMA", exists=True, this=schema_name).sql("duckdb"))
                create = exp.Create(kind="TABLE", replace=True, this=target, expression=_select_cast(view, schema))
                con.execute(create.sql("duckdb"))
            con.execute(exp.Commit().sql("duckdb"))
        except BaseException:
            con.execute(exp.Rollback().sql("duckdb"))
            raise
    finally:
        for view in views:
            con.unregister(view)


def write_files(
    data: DemoData, out_dir: str | Path, fmt: Literal["parquet", "csv"] = "parquet"
) -> tuple[Path, Path]:
    """Write ``users.<fmt>`` and ``events.<fmt>`` into ``out_dir`` (created if missing).

    DuckDB does the writing (no pyarrow needed) with the catalog's types, so the
    files load back with ``segments load``.

    Args:
        data: the generated tables.
        out_dir: target directory.
        fmt: ``"parquet"`` or ``"csv"`` (header row, empty field for NULL).

    Returns:
        The paths of the users file and the events file.

    Raises:
        ValueError: for an unknown format.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"users.{fmt}", out / f"events.{fmt}")
    con = duckdb.connect()
    try:
        for path, frame, schema in zip(
            paths, (data.users, data.events), (USERS_SCHEMA, EVENTS_SCHEMA), strict=True
        ):
            con.register("__demo_frame", frame)
            export(con, _select_cast("__demo_frame", schema), str(path), fmt)
            con.unregister("__demo_frame")
    finally:
        con.close()
    return paths


def _select_cast(view: str, schema: dict[str, str]) -> exp.Select:
    columns = [exp.alias_(exp.cast(exp.column(c, quoted=True), exp.DataType.build(t, dialect="duckdb")), c, quoted=True)
               for c, t in schema.items()]
    return exp.select(*columns).from_(view)


# ---------------------------------------------------------------------------
# Small vectorized helpers
# ---------------------------------------------------------------------------


def _choice(rng: _Draws, weights: Sequence[float], size: int) -> np.ndarray:
    """Indexes drawn with the given (normalised) weights, as int8."""
    p = np.asarray(weights, dtype=float)
    return rng.choice(p.size, size=size, p=p / p.sum()).astype(np.int8)


def _choice_with_null(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    """Like :func:`_choice`, with the mass left below 1 going to NULL (code -1)."""
    p = list(weights) + [max(0.0, 1.0 - sum(weights))]
    code = _choice(rng, p, size)
    code[code == len(weights)] = -1
    return code


def _choice_per_group(
    rng: _Draws, weights: np.ndarray, group: np.ndarray
) -> np.ndarray:
    """One index per row, drawn from ``weights[group[row]]`` (rows of weights sum to 1)."""
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(group.size)
    picked = np.empty(group.size, dtype=np.int8)
    for g in range(weights.shape[0]):
        rows = group == g
        picked[rows] = np.searchsorted(cumulative[g], u[rows], side="right")
    return np.minimum(picked, weights.shape[1] - 1)


def _index_in_group(
    rng: _Draws, group: np.ndarray, sizes: Sequence[int]
) -> np.ndarray:
    """Uniform index into a pool made of consecutive per-group blocks of ``sizes``."""
    size = np.asarray(sizes)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    return offset[group] + (rng.random(group.size) * size[group]).astype(np.int64)


def _text(
    vocabulary: Sequence[str] | np.ndarray, codes: np.ndarray | None = None
) -> pd.arrays.StringArray:
    """A pandas string array of ``vocabulary[codes]`` (code -1 gives NULL)."""
    pool = np.empty(len(vocabulary) + 1, dtype=object)
    pool[:-1] = vocabulary
    pool[-1] = np.nan  # index -1 lands here
    values = pool[:-1] if codes is None else pool[codes]
    return pd.array(values, dtype="str")


def _text_with_nulls(values: np.ndarray, missing: np.ndarray) -> pd.arrays.StringArray:
    """A pandas string array of ``values``, NULL where ``missing``."""
    objects = values.astype(object)
    objects[missing] = np.nan
    return pd.array(objects, dtype="str")


def _categorical(vocabulary: Sequence[str] | np.ndarray, codes: np.ndarray) -> pd.Categorical:
    """A categorical of text from codes into ``vocabulary`` (code -1 gives NULL)."""
    return pd.Categorical.from_codes(codes, categories=pd.Index(vocabulary, dtype="str"))


def _concat(*parts: str | np.ndarray) -> np.ndarray:
    """Element-wise concatenation of string arrays and literals."""
    result = np.asarray(parts[0], dtype=str)
    for part in parts[1:]:
        result = np.strings.add(result, part)
    return result


def _user_ids(n: int) -> np.ndarray:
    """``u0000001``, ``u0000002``, ... (seven digits, more past ten million users)."""
    return np.strings.add("u", _zfill(np.arange(1, n + 1).astype(str), 7))


def _zfill(digits: np.ndarray, width: int) -> np.ndarray:
    # np.strings.zfill fails on an empty array (numpy 2.4), and users=0 is valid.
    return np.strings.zfill(digits, width) if digits.size else digits.astype(f"U{width}")


def _timestamps(epoch_seconds: np.ndarray) -> np.ndarray:
    return epoch_seconds.astype("datetime64[s]").astype("datetime64[us]")


def _epoch_seconds(moment: dt.datetime) -> int:
    return int((moment - dt.datetime(1970, 1, 1)).total_seconds())


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def _ascii_lower(name: str) -> str:
    """``"João"`` -> ``"joao"``: email local parts are plain ASCII."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
