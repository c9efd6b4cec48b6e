"""Durations and times of the spec language (SPEC 1.3).

Durations are a whole number and one unit (``90m``, ``48h``, ``7d``, ``2w``). Times
are ``now``, ``now - D``, ``now + D``, an ISO date (midnight UTC, or midnight in
the catalog's ``timezone``) or an ISO date-time (``Z``, an offset, or naive meaning
UTC). Every absolute result is a naive ``datetime`` in UTC, so the compiler never has
to think about time zones.
"""

from __future__ import annotations

import datetime as dt
import re

from segments.spec.model import AbsoluteTime, Duration, RelativeTime, TimeValue

DURATION_RE = re.compile(r"(\d+)([smhdw])")
_RELATIVE_RE = re.compile(r"now(?:\s*([+-])\s*(\S.*))?")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Date, 'T' or one space, hh:mm[:ss[.ffffff]], then 'Z', an offset or nothing.
DATETIME_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)"
    r"\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?"
)

_DURATION_HELP = "a whole number and one of s, m, h, d, w (e.g. 90m, 48h, 7d, 2w)"
_TIME_HELP = "now, now - 7d, now + 1h, 2026-01-31 or 2026-01-31T12:00:00Z"


def parse_duration(text: str) -> Duration:
    """Parse a duration such as ``48h``.

    Args:
        text: A whole number followed by one unit among ``s m h d w``.

    Returns:
        The duration, as written.

    Raises:
        ValueError: If ``text`` is not a duration.

    Examples:
        >>> parse_duration("90m")
        Duration(amount=90, unit='m')
        >>> parse_duration("2w").seconds
        1209600
        >>> parse_duration("7 days")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: invalid duration '7 days': expected a whole number and one of s, m, h, d, w ...
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_HELP}")
    match = DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_HELP}")
    return Duration(int(match.group(1)), match.group(2))  # type: ignore[arg-type]


def parse_time(value: str | dt.datetime | dt.date, zone: dt.tzinfo | None = None) -> TimeValue:
    """Parse a time of the spec language.

    Args:
        value: ``now``, ``now - D``, ``now + D`` (spaces optional), an ISO date or
            date-time, or a ``datetime``/``date`` already read by the YAML loader.
        zone: The time zone a date without a time starts its day in (the catalog's
            ``timezone``); None for UTC. Date-times are not affected.

    Returns:
        A :class:`RelativeTime` for ``now`` forms, else an :class:`AbsoluteTime`
        holding a naive UTC datetime.

    Raises:
        ValueError: If ``value`` is not a time.

    Examples:
        >>> parse_time("now")
        RelativeTime(offset=None, sign=-1)
        >>> parse_time("now-7d")
        RelativeTime(offset=Duration(amount=7, unit='d'), sign=-1)
        >>> str(parse_time("now + 1h"))
        'now + 1h'
        >>> str(parse_time("2026-01-31"))
        '2026-01-31 00:00:00'
        >>> str(parse_time("2026-01-31T12:00:00+02:00"))
        '2026-01-31 10:00:00'
        >>> from zoneinfo import ZoneInfo
        >>> str(parse_time("2026-01-31", ZoneInfo("Asia/Kolkata")))
        '2026-01-30 18:30:00'
        >>> str(parse_time("2026-01-31T12:00:00Z", ZoneInfo("Asia/Kolkata")))
        '2026-01-31 12:00:00'
        >>> parse_time("yesterday")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: invalid time 'yesterday': expected now, now - 7d, now + 1h, 2026-01-31 or ...
    """
    if isinstance(value, (dt.datetime, dt.date)):
        return AbsoluteTime(_to_naive_utc(value, zone))
    if not isinstance(value, str):
        raise ValueError(f"invalid time {value!r}: expected {_TIME_HELP}")
    text = value.strip()
    relative = _RELATIVE_RE.fullmatch(text)
    if relative is not None:
        sign, rest = relative.groups()
        if sign is None:
            return RelativeTime()
        try:
            offset = parse_duration(rest)
        except ValueError:
            raise ValueError(
                f"invalid time {value!r}: the offset after 'now {sign}' must be {_DURATION_HELP}"
            ) from None
        return RelativeTime(offset, 1 if sign == "+" else -1)
    return AbsoluteTime(_parse_absolute(value, zone))


def parse_instant(value: str | dt.datetime | dt.date) -> dt.datetime:
    """Parse an absolute instant, as a run's ``as_of`` tag holds (no ``now`` forms).

    Args:
        value: An ISO date or date-time (``Z``, an offset, or naive meaning UTC).

    Returns:
        A naive datetime in UTC.

    Raises:
        ValueError: If ``value`` is not an absolute time (``now`` forms included).

    Examples:
        >>> parse_instant("2024-06-23T12:00:00Z")
        datetime.datetime(2024, 6, 23, 12, 0)
        >>> parse_instant("2024-06-23 14:30:00+02:00")
        datetime.datetime(2024, 6, 23, 12, 30)
        >>> parse_instant("now")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: invalid instant 'now': expected an absolute time such as 2026-01-31 or ...
    """
    if isinstance(value, (dt.datetime, dt.date)):
        return _to_naive_utc(value)
    try:
        return _parse_absolute(value)
    except ValueError:
        raise ValueError(
            f"invalid instant {value!r}: expected an absolute time such as "
            "2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None


def parse_as_of(value: str, now: dt.datetime) -> dt.datetime:
    """Parse ``--as-of``: the spec language's times, ``now`` being the wall clock.

    Args:
        value: ``now``, ``now - D``, ``now + D``, an ISO date or date-time.
        now: The current instant, naive UTC.

    Returns:
        A naive datetime in UTC.

    Raises:
        ValueError: If ``value`` is not a time, or falls outside the years 1-9999.

    Examples:
        >>> clock = dt.datetime(2026, 1, 15, 9, 30)
        >>> parse_as_of("now - 7d", clock)
        datetime.datetime(2026, 1, 8, 9, 30)
        >>> parse_as_of("now+1h", clock), parse_as_of("now", clock)
        (datetime.datetime(2026, 1, 15, 10, 30), datetime.datetime(2026, 1, 15, 9, 30))
        >>> parse_as_of("2024-06-23T14:30:00+02:00", clock)
        datetime.datetime(2024, 6, 23, 12, 30)
        >>> parse_as_of("last week", clock)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: invalid time 'last week': expected now, now - 7d, now + 1h, 2026-01-31 or ...
    """
    parsed = parse_time(value)
    if isinstance(parsed, AbsoluteTime):
        return parsed.at
    if parsed.offset is None:
        return now
    try:
        return now + parsed.sign * dt.timedelta(seconds=parsed.offset.seconds)
    except OverflowError:
        raise ValueError(f"invalid time {value!r}: out of the range of dates") from None


def _parse_absolute(value: str, zone: dt.tzinfo | None = None) -> dt.datetime:
    """Parse an ISO date or date-time into a naive UTC datetime.

    A regular expression picks the accepted shapes first because
    ``datetime.fromisoformat`` also takes forms nobody writes in a spec (week
    dates, compact ``20260131``); ``fromisoformat`` then checks the ranges.
    """
    text = value.strip() if isinstance(value, str) else ""
    try:
        if DATE_RE.fullmatch(text):
            return _to_naive_utc(dt.date.fromisoformat(text), zone)
        match = DATETIME_RE.fullmatch(text)
        if match is not None:
            date, clock, zone = match.groups()
            zone = "+00:00" if zone is None or zone in "Zz" else zone
            return _to_naive_utc(dt.datetime.fromisoformat(f"{date}T{clock}{zone}"))
    except ValueError:
        pass  # out-of-range fields: reported below like any other bad time
    raise ValueError(f"invalid time {value!r}: expected {_TIME_HELP}")


def _to_naive_utc(value: dt.datetime | dt.date, zone: dt.tzinfo | None = None) -> dt.datetime:
    """A naive UTC datetime: aware values are converted, naive ones taken as UTC.

    A date is its midnight in ``zone`` (UTC when None).
    """
    if not isinstance(value, dt.datetime):
        midnight = dt.datetime(value.year, value.month, value.day)
        if zone is None:
            return midnight
        try:
            return midnight.replace(tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"invalid time '{value}': out of the range of dates") from None
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def utc_now() -> dt.datetime:
    """The clock as every table stores times: naive UTC.

    >>> utc_now().tzinfo is None
    True
    """
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
