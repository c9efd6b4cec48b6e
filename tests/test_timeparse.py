"""Durations and times of the spec language (SPEC 1.3)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from segments.spec.model import AbsoluteTime, Duration, RelativeTime
from segments.spec.timeparse import parse_as_of, parse_duration, parse_instant, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", Duration(90, "m")),
        ("48h", Duration(48, "h")),
        ("7d", Duration(7, "d")),
        ("2w", Duration(2, "w")),
        ("3600s", Duration(3600, "s")),
        (" 30d ", Duration(30, "d")),
    ],
)
def test_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7", "d", "7 d", "7D", "1.5h", "-1d", "7days", "", "7y"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_duration_seconds() -> None:
    assert parse_duration("90m").seconds == 5400


NOON = dt.datetime(2026, 1, 31, 12, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("now", RelativeTime()),
        ("now - 7d", RelativeTime(Duration(7, "d"), -1)),
        ("now-7d", RelativeTime(Duration(7, "d"), -1)),
        ("now + 1h", RelativeTime(Duration(1, "h"), 1)),
        ("now+1h", RelativeTime(Duration(1, "h"), 1)),
        ("2026-01-31", AbsoluteTime(dt.datetime(2026, 1, 31))),
        ("2026-01-31T12:00:00Z", AbsoluteTime(NOON)),
        ("2026-01-31T12:00:00", AbsoluteTime(NOON)),
        ("2026-01-31 12:00", AbsoluteTime(NOON)),
        ("2026-01-31T14:00:00+02:00", AbsoluteTime(NOON)),
        ("2026-01-31T07:00:00-0500", AbsoluteTime(NOON)),
        ("2026-01-31T12:00:00.250Z", AbsoluteTime(NOON.replace(microsecond=250000))),
        (dt.date(2026, 1, 31), AbsoluteTime(dt.datetime(2026, 1, 31))),
        (NOON, AbsoluteTime(NOON)),
        (
            dt.datetime(2026, 1, 31, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            AbsoluteTime(NOON),
        ),
    ],
)
def test_time(value: object, expected: object) -> None:
    assert parse_time(value) == expected  # type: ignore[arg-type]


def test_absolute_times_are_naive_utc() -> None:
    result = parse_time("2026-01-31T23:30:00-01:00")
    assert isinstance(result, AbsoluteTime)
    assert result.at == dt.datetime(2026, 2, 1, 0, 30) and result.at.tzinfo is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "invalid time 'yesterday'"),
        ("NOW", "invalid time"),
        ("now - 7", "offset after 'now -'"),
        ("now * 2d", "invalid time"),
        ("2026-02-30", "invalid time"),
        ("2026-1-31", "invalid time"),
        ("20260131", "invalid time"),
        ("2026-W05", "invalid time"),
        ("2026-01-31T25:00:00Z", "invalid time"),
        ("", "invalid time"),
    ],
)
def test_bad_time(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-23", dt.datetime(2024, 6, 23)),
        ("2024-06-23T12:00:00Z", dt.datetime(2024, 6, 23, 12)),
        ("2024-06-23T12:00:00+02:00", dt.datetime(2024, 6, 23, 10)),
    ],
)
def test_instant(text: str, expected: dt.datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["now", "now - 1d", "soon", "2024-13-01"])
def test_bad_instant(text: str) -> None:
    with pytest.raises(ValueError, match="invalid instant"):
        parse_instant(text)


CLOCK = dt.datetime(2026, 1, 15, 9, 30, 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", CLOCK),
        (" now ", CLOCK),
        ("now - 7d", dt.datetime(2026, 1, 8, 9, 30, 15)),
        ("now-90m", dt.datetime(2026, 1, 15, 8, 0, 15)),
        ("now + 1h", dt.datetime(2026, 1, 15, 10, 30, 15)),
        ("now - 2w", dt.datetime(2026, 1, 1, 9, 30, 15)),
        ("now - 15s", dt.datetime(2026, 1, 15, 9, 30)),
        ("2024-06-23", dt.datetime(2024, 6, 23)),
        ("2024-06-23T12:00:00+02:00", dt.datetime(2024, 6, 23, 10)),
    ],
)
def test_as_of(text: str, expected: dt.datetime) -> None:
    assert parse_as_of(text, CLOCK) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "invalid time 'yesterday'"),
        ("now - 7", "the offset after 'now -' must be"),
        ("now - 7days", "the offset after 'now -' must be"),
        ("now - 99999999w", "out of the range of dates"),
        ("2024-13-01", "invalid time '2024-13-01'"),
    ],
)
def test_bad_as_of(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_as_of(text, CLOCK)
