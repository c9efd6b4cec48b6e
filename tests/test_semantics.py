"""Semantic tests of the compiler: what each rule of the contract (SPEC 1 and 2) selects.

Every case is a tiny spec evaluated on hand-written rows: the specs are parsed with
``load_project``, compiled with ``compile_project(only=[name])`` and rendered with
``standalone_sql`` into one query run on an in-memory DuckDB (no dbt). Expected
members are literal sets worked out by hand from SPEC.md, never from the compiler.

The data (as_of = 2024-06-30 12:00:00 UTC):

    user created_at        email                  phone              city         plan        signup_at            is_vip ltv
    u01  2024-01-01        alice@example.com      +1 (555) 010-0001  Paris        pro         2024-06-29 12:00:00  true   100
    u02  2024-01-01        " Bob@Example.COM "    555-010-0002       paris        free        2024-06-30 12:00:00  false  50
    u03  NULL              NULL                   NULL               NULL         NULL        NULL                 NULL   NULL
    u04  = as_of (stays)   ""                     ""                 ""           enterprise  2024-06-29 12:00:01  true   0
    u05  as_of + 1s (OUT)  eve@example.com        5550100005         Paris        pro         2024-06-01           true   100
    u06  2024-01-01        carol@example.com      n/a                100%_off     pro         2024-07-01 (future)  false  100.5
    u07  2024-01-01        dave@example.com       555 010 0007       100XYoff     free        2024-05-01           NULL   -5
    u08  2024-01-01        ALICE@example.com      NULL               EAST PARIS   NULL        2024-06-29 11:59:59  false  99.99
    u09  2024-01-01        frank@example.com      +44 555 010 0009   Lyon         enterprise  NULL                 true   1000
    u10  2024-01-01        NULL                   NULL               Saint-Paris  free        2023-01-01           false  NULL

The universe (SPEC 2.2) is every user but u05: U = u01 u02 u03 u04 u06 u07 u08 u09 u10.
Events are listed in ``EVENTS``; u05 and u99 (not a user) have events that must never
count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import textwrap
from pathlib import Path

import duckdb
import pytest
from sqlglot import exp

from segments import uploads
from segments.compiler.models import (
    EVENTS as STG_EVENTS,
    MEASURES,
    CompiledProject,
    compile_project,
)
from segments.compiler.measures import MAX_AGGREGATES_PER_SCAN
from segments.compiler.render import dbt_sql, standalone_sql
from segments.spec import model as m
from segments.spec.parse import load_project

AS_OF = dt.datetime(2024, 6, 30, 12, 0, 0)


def T(text: str) -> dt.datetime:  # noqa: N802 - reads like a literal
    return dt.datetime.fromisoformat(text)


# ---- the catalog, the traits and the rows ---------------------------------------------

CATALOG = """\
users:
  table: raw.users
  key: user_id
  created_at: created_at
  attributes:
    email:          {type: string, pii: true}
    phone:          {type: string, pii: true}
    city:           {type: string}
    plan:           {type: string, values: [free, pro, enterprise]}
    signup_at:      {type: timestamp}
    is_vip:         {type: boolean}
    lifetime_value: {type: number, column: ltv}
events:
  table: raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    amount: {type: number}
    path:   {type: string}
    device: {type: string, column: device_type}
"""

TRAITS = """\
traits:
  orders:          {event: purchase, count: true}
  orders_10d:      {event: purchase, within: 10d, count: true}
  orders_jun10:    {event: purchase, between: [2024-06-10, 2024-06-11], count: true}
  buy_days:        {event: purchase, active_days: true}
  revenue:         {event: purchase, sum: amount}
  basket:          {event: purchase, avg: amount}
  smallest:        {event: purchase, min: amount}
  biggest:         {event: purchase, max: amount}
  first_buy:       {event: purchase, first_occurred: true}
  last_buy:        {event: purchase, last_occurred: true}
  last_buy_before: {event: purchase, before: 2024-06-15, last_occurred: true}
  jun10_max:       {event: purchase, between: [2024-06-10, 2024-06-11], max: amount}
  revenue_10d:     {event: purchase, within: 10d, sum: amount}
  basket_late:     {event: purchase, between: ['2024-06-10T12:00:00Z', 2024-07-01], avg: amount}
  smallest_late:   {event: purchase, after: '2024-06-02T01:30:00Z', min: amount}
  first_late:      {event: purchase, after: '2024-06-02T01:30:00Z', first_occurred: true}
  recency:         {quantile: last_buy, buckets: 4}
  frequency:       {quantile: orders, buckets: 3}
  value_score:     {quantile: basket, buckets: 10}
  single_score:    {quantile: jun10_max, buckets: 5}
  freq_of_freq:    {quantile: frequency, buckets: 2}
"""

# user_id, created_at, email, phone, city, plan, signup_at, is_vip, ltv
USERS = [
    ("u01", T("2024-01-01"), "alice@example.com", "+1 (555) 010-0001", "Paris", "pro", T("2024-06-29 12:00:00"), True, 100.0),
    ("u02", T("2024-01-01"), " Bob@Example.COM ", "555-010-0002", "paris", "free", T("2024-06-30 12:00:00"), False, 50.0),
    ("u03", None, None, None, None, None, None, None, None),
    ("u04", T("2024-06-30 12:00:00"), "", "", "", "enterprise", T("2024-06-29 12:00:01"), True, 0.0),
    ("u05", T("2024-06-30 12:00:01"), "eve@example.com", "5550100005", "Paris", "pro", T("2024-06-01"), True, 100.0),
    ("u06", T("2024-01-01"), "carol@example.com", "n/a", "100%_off", "pro", T("2024-07-01"), False, 100.5),
    ("u07", T("2024-01-01"), "dave@example.com", "555 010 0007", "100XYoff", "free", T("2024-05-01"), None, -5.0),
    ("u08", T("2024-01-01"), "ALICE@example.com", None, "EAST PARIS", None, T("2024-06-29 11:59:59"), False, 99.99),
    ("u09", T("2024-01-01"), "frank@example.com", "+44 555 010 0009", "Lyon", "enterprise", None, True, 1000.0),
    ("u10", T("2024-01-01"), None, None, "Saint-Paris", "free", T("2023-01-01"), False, None),
]
UNIVERSE = {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}


def _ev(user: str, name: str, at: str, amount: float | None = None, path: str | None = None, device: str | None = None):
    return (user, name, T(at), amount, path, device)


# user_id, event_name, occurred_at, amount, path, device_type
EVENTS = [
    # login: one each, on the window edges
    _ev("u01", "login", "2024-06-29 12:00:00"),  # as_of - 1d exactly: outside within 1d
    _ev("u02", "login", "2024-06-30 12:00:00"),  # as_of exactly: inside
    _ev("u03", "login", "2024-07-01 00:00:00"),  # after as_of: never counts
    _ev("u04", "login", "2024-06-29 12:00:01"),  # just inside within 1d
    _ev("u05", "login", "2024-06-30 10:00:00"),  # user outside the universe
    _ev("u06", "login", "2024-06-01 00:00:00"),  # between T1 exactly: inside
    _ev("u07", "login", "2024-06-15 00:00:00"),  # between T2 exactly: outside
    _ev("u08", "login", "2024-06-14 23:59:59"),
    _ev("u10", "login", "2023-01-01 00:00:00"),
    _ev("u99", "login", "2024-06-30 10:00:00"),  # not a user
    # purchase, with amount
    _ev("u01", "purchase", "2024-06-10 10:00:00", 10),
    _ev("u01", "purchase", "2024-06-10 23:59:59", 20),
    _ev("u01", "purchase", "2024-06-11 00:00:00", None),  # missing amount
    _ev("u02", "purchase", "2024-06-20 08:00:00", 5),
    _ev("u02", "purchase", "2024-06-20 08:00:00", 5),  # exact duplicate: counts
    _ev("u03", "purchase", "2024-06-25 00:00:00", None),
    _ev("u04", "purchase", "2024-07-01 00:00:00", 1000),  # after as_of
    _ev("u05", "purchase", "2024-06-15 00:00:00", 500),  # outside the universe
    _ev("u06", "purchase", "2024-06-30 12:00:00", 100),  # at as_of
    _ev("u07", "purchase", "2024-06-01 00:00:00", -5),
    _ev("u09", "purchase", "2024-06-02 01:00:00", 1),
    _ev("u09", "purchase", "2024-06-02 02:00:00", 2),
    _ev("u09", "purchase", "2024-06-03 00:00:00", 3),
    _ev("u09", "purchase", "2024-06-04 00:00:00", 4),
    # page_view, with path and device (a renamed column)
    _ev("u01", "page_view", "2024-06-28 00:00:00", path="/pricing", device="mobile"),
    _ev("u01", "page_view", "2024-06-28 01:00:00", path="/Pricing/Team", device="desktop"),
    _ev("u02", "page_view", "2024-06-20 00:00:00", path="/blog/pricing", device="mobile"),
    _ev("u02", "page_view", "2024-06-20 00:00:00", path="/blog/pricing", device="mobile"),
    _ev("u03", "page_view", "2024-06-20 00:00:00"),
    _ev("u04", "page_view", "2024-06-20 00:00:00", path="/pricing/enterprise", device="desktop"),
    _ev("u05", "page_view", "2024-06-28 00:00:00", path="/pricing", device="mobile"),
    _ev("u06", "page_view", "2024-06-20 00:00:00", path="", device="tablet"),
    _ev("u07", "page_view", "2024-06-20 00:00:00", path="/docs", device="mobile"),
    _ev("u07", "page_view", "2024-07-02 00:00:00", path="/pricing", device="mobile"),  # after as_of
    _ev("u08", "page_view", "2024-06-01 00:00:00", path="/pricing", device="desktop"),
    # cart_add -> checkout, for sequences
    _ev("u01", "cart_add", "2024-06-28 10:00:00"),
    _ev("u01", "checkout", "2024-06-28 11:00:00", 50),  # t0 + 1h
    _ev("u02", "cart_add", "2024-06-28 10:00:00"),
    _ev("u02", "checkout", "2024-06-29 10:00:00", 20),  # t0 + 24h exactly
    _ev("u03", "cart_add", "2024-06-28 10:00:00"),
    _ev("u03", "checkout", "2024-06-28 10:00:00", 10),  # at t0: not strictly after
    _ev("u04", "cart_add", "2024-06-20 00:00:00"),
    _ev("u04", "checkout", "2024-06-21 00:00:00", 30),  # follows the earlier cart_add only
    _ev("u04", "cart_add", "2024-06-29 00:00:00"),  # the latest: t0
    _ev("u05", "cart_add", "2024-06-29 00:00:00"),
    _ev("u06", "cart_add", "2024-06-29 12:00:00"),
    _ev("u06", "checkout", "2024-07-01 00:00:00", 40),  # after as_of: never counts
    _ev("u07", "checkout", "2024-06-28 00:00:00", 25),  # no cart_add at all
    _ev("u08", "cart_add", "2024-06-28 10:00:00"),
    _ev("u08", "checkout", "2024-06-28 12:00:00", 0),  # t0 + 2h, amount 0
    _ev("u09", "checkout", "2024-06-27 00:00:00", 15),  # before t0
    _ev("u09", "cart_add", "2024-06-28 10:00:00"),
    _ev("u10", "cart_add", "2024-07-05 00:00:00"),  # after as_of: no anchor
]

UPLOADS = {
    "uploads/emails.csv": "name,email\na, ALICE@EXAMPLE.COM \nb,bob@example.com\nc,\nd,eve@example.com\ne,\"  \"\n",
    "uploads/phones.csv": "phone\n15550100001\n(555) 010-0002\nn/a\n---\n5550100005\n+44 555 010 0009\n",
    "uploads/ids.csv": "user_id,note\nu01,x\nu05,outside the universe\nu07,x\n,empty\nu99,not a user\n",
    "uploads/empty_phones.csv": "phone\nn/a\n\"\"\n---\n",
    "uploads/empty_emails.csv": "email\n\"\"\n\"   \"\n",
}


# ---- the cases ----------------------------------------------------------------------------
# (name, where, expected members). `where` is YAML flow text; the name is the spec's.

ATTRIBUTE_CASES = [
    # string: city
    ("city_is", "{attribute: city, is: Paris}", {"u01"}),  # u05 is outside the universe
    ("city_is_ic", "{attribute: city, is: PARIS, ignore_case: true}", {"u01", "u02"}),
    ("city_is_not", "{attribute: city, is_not: Paris}", {"u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("city_is_not_ic", "{attribute: city, is_not: paris, ignore_case: true}", {"u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("city_in", "{attribute: city, in: [Paris, Lyon]}", {"u01", "u09"}),
    ("city_in_ic", "{attribute: city, in: [PARIS, lyon], ignore_case: true}", {"u01", "u02", "u09"}),
    ("city_in_empty", "{attribute: city, in: []}", set()),
    ("city_not_in_ic", "{attribute: city, not_in: [PARIS, lyon], ignore_case: true}", {"u03", "u04", "u06", "u07", "u08", "u10"}),
    ("city_not_in", "{attribute: city, not_in: [Paris, Lyon]}", {"u02", "u03", "u04", "u06", "u07", "u08", "u10"}),
    ("city_not_in_empty", "{attribute: city, not_in: []}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("city_is_set", "{attribute: city, is_set: true}", {"u01", "u02", "u04", "u06", "u07", "u08", "u09", "u10"}),  # '' is a value
    ("city_is_set_false", "{attribute: city, is_set: false}", {"u03"}),
    ("city_contains", "{attribute: city, contains: aris}", {"u01", "u02", "u10"}),
    ("city_contains_ic", "{attribute: city, contains: ARIS, ignore_case: true}", {"u01", "u02", "u08", "u10"}),
    ("city_not_contains", "{attribute: city, not_contains: aris}", {"u03", "u04", "u06", "u07", "u08", "u09"}),
    ("city_not_contains_ic", "{attribute: city, not_contains: ARIS, ignore_case: true}", {"u03", "u04", "u06", "u07", "u09"}),
    ("city_starts_with", "{attribute: city, starts_with: Par}", {"u01"}),
    ("city_starts_with_ic", "{attribute: city, starts_with: pAR, ignore_case: true}", {"u01", "u02"}),
    ("city_ends_with", "{attribute: city, ends_with: ris}", {"u01", "u02", "u10"}),
    ("city_ends_with_upper", "{attribute: city, ends_with: RIS}", {"u08"}),
    ("city_ends_with_ic", "{attribute: city, ends_with: RIS, ignore_case: true}", {"u01", "u02", "u08", "u10"}),
    # % and _ are plain characters: as LIKE patterns they would also match u07 '100XYoff'
    ("city_contains_pct_us", "{attribute: city, contains: '%_'}", {"u06"}),
    ("city_starts_with_pct", "{attribute: city, starts_with: '100%'}", {"u06"}),
    ("city_starts_with_us", "{attribute: city, starts_with: '100_'}", set()),
    ("city_ends_with_us", "{attribute: city, ends_with: _off}", {"u06"}),
    ("city_contains_pct_ic", "{attribute: city, contains: '%_OFF', ignore_case: true}", {"u06"}),
    ("city_not_contains_pct", "{attribute: city, not_contains: '%'}", {"u01", "u02", "u03", "u04", "u07", "u08", "u09", "u10"}),
    # string with allowed values: plan
    ("plan_is", "{attribute: plan, is: pro}", {"u01", "u06"}),
    ("plan_is_not", "{attribute: plan, is_not: pro}", {"u02", "u03", "u04", "u07", "u08", "u09", "u10"}),
    ("plan_in", "{attribute: plan, in: [free, enterprise]}", {"u02", "u04", "u07", "u09", "u10"}),
    ("plan_not_in", "{attribute: plan, not_in: [free, enterprise]}", {"u01", "u03", "u06", "u08"}),
    # number: lifetime_value (column ltv)
    ("ltv_gt", "{attribute: lifetime_value, gt: 100}", {"u06", "u09"}),
    ("ltv_gte", "{attribute: lifetime_value, gte: 100}", {"u01", "u06", "u09"}),
    ("ltv_lt", "{attribute: lifetime_value, lt: 50}", {"u04", "u07"}),
    ("ltv_lte", "{attribute: lifetime_value, lte: 50}", {"u02", "u04", "u07"}),
    ("ltv_gt_negative", "{attribute: lifetime_value, gt: -10}", {"u01", "u02", "u04", "u06", "u07", "u08", "u09"}),
    ("ltv_between", "{attribute: lifetime_value, between: [50, 100]}", {"u01", "u02", "u08"}),  # inclusive
    ("ltv_between_float", "{attribute: lifetime_value, between: [99.99, 100.5]}", {"u01", "u06", "u08"}),
    ("ltv_is", "{attribute: lifetime_value, is: 0}", {"u04"}),
    ("ltv_is_not", "{attribute: lifetime_value, is_not: 0}", {"u01", "u02", "u03", "u06", "u07", "u08", "u09", "u10"}),
    ("ltv_in", "{attribute: lifetime_value, in: [100, 50]}", {"u01", "u02"}),
    ("ltv_not_in", "{attribute: lifetime_value, not_in: [100, 50]}", {"u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("ltv_in_empty", "{attribute: lifetime_value, in: []}", set()),
    ("ltv_not_in_empty", "{attribute: lifetime_value, not_in: []}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("ltv_is_set", "{attribute: lifetime_value, is_set: true}", {"u01", "u02", "u04", "u06", "u07", "u08", "u09"}),
    ("ltv_is_set_false", "{attribute: lifetime_value, is_set: false}", {"u03", "u10"}),
    ("ltv_not_gt", "{not: {attribute: lifetime_value, gt: 100}}", {"u01", "u02", "u03", "u04", "u07", "u08", "u10"}),
    ("ltv_not_between", "{not: {attribute: lifetime_value, between: [50, 100]}}", {"u03", "u04", "u06", "u07", "u09", "u10"}),
    # timestamp: signup_at; (as_of - 1d, as_of] = (06-29 12:00, 06-30 12:00]
    ("signup_within_1d", "{attribute: signup_at, within: 1d}", {"u02", "u04"}),
    ("signup_within_24h", "{attribute: signup_at, within: 24h}", {"u02", "u04"}),
    ("signup_within_1s", "{attribute: signup_at, within: 1s}", {"u02"}),
    ("signup_not_within_1d", "{attribute: signup_at, not_within: 1d}", {"u01", "u03", "u06", "u07", "u08", "u09", "u10"}),
    ("signup_before_now", "{attribute: signup_at, before: now}", {"u01", "u04", "u07", "u08", "u10"}),
    ("signup_after_now", "{attribute: signup_at, after: now}", {"u06"}),
    ("signup_after_now_1d", "{attribute: signup_at, after: now - 1d}", {"u02", "u04", "u06"}),
    ("signup_before_date", "{attribute: signup_at, before: 2024-06-29}", {"u07", "u10"}),
    ("signup_after_datetime", "{attribute: signup_at, after: '2024-06-29T12:00:00Z'}", {"u02", "u04", "u06"}),
    ("signup_before_datetime", "{attribute: signup_at, before: '2024-06-29T12:00:00Z'}", {"u07", "u08", "u10"}),
    ("signup_after_offset", "{attribute: signup_at, after: '2024-06-29T14:00:00+02:00'}", {"u02", "u04", "u06"}),
    ("signup_is_now", "{attribute: signup_at, is: now}", {"u02"}),
    ("signup_is_not_now", "{attribute: signup_at, is_not: now}", {"u01", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("signup_in", "{attribute: signup_at, in: [now, 2023-01-01]}", {"u02", "u10"}),
    ("signup_not_before", "{not: {attribute: signup_at, before: now}}", {"u02", "u03", "u06", "u09"}),
    ("signup_is_set_false", "{attribute: signup_at, is_set: false}", {"u03", "u09"}),
    # between on times is [start, end), as an event window's: u02 at as_of = end is out
    ("signup_between_date_now", "{attribute: signup_at, between: [2024-06-29, now]}", {"u01", "u04", "u08"}),
    ("signup_between_1s", "{attribute: signup_at, between: ['2024-06-29T12:00:00Z', '2024-06-29T12:00:01Z']}", {"u01"}),
    ("signup_between_relative", "{attribute: signup_at, between: [now - 1d, now + 1d]}", {"u01", "u02", "u04", "u06"}),
    ("signup_between_empty", "{attribute: signup_at, between: [now, now]}", set()),
    ("signup_not_between", "{not: {attribute: signup_at, between: [2024-06-29, now]}}", {"u02", "u03", "u06", "u07", "u09", "u10"}),
    # boolean: is_vip
    ("vip_is_true", "{attribute: is_vip, is: true}", {"u01", "u04", "u09"}),
    ("vip_is_false", "{attribute: is_vip, is: false}", {"u02", "u06", "u08", "u10"}),
    ("vip_is_not_true", "{attribute: is_vip, is_not: true}", {"u02", "u03", "u06", "u07", "u08", "u10"}),
    ("vip_is_not_false", "{attribute: is_vip, is_not: false}", {"u01", "u03", "u04", "u07", "u09"}),
    ("vip_in_true", "{attribute: is_vip, in: [true]}", {"u01", "u04", "u09"}),
    ("vip_not_in_false", "{attribute: is_vip, not_in: [false]}", {"u01", "u03", "u04", "u07", "u09"}),
    ("vip_is_set_false", "{attribute: is_vip, is_set: false}", {"u03", "u07"}),
    ("vip_is_set_true", "{attribute: is_vip, is_set: true}", {"u01", "u02", "u04", "u06", "u08", "u09", "u10"}),
    # email, phone (pii strings)
    ("email_ends_with_ic", "{attribute: email, ends_with: '@EXAMPLE.COM', ignore_case: true}", {"u01", "u06", "u07", "u08", "u09"}),  # u02 ends with a space
    ("phone_starts_with_plus", "{attribute: phone, starts_with: '+'}", {"u01", "u09"}),
]

LOGIC_CASES = [
    ("all_empty", "{all: []}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("any_empty", "{any: []}", set()),
    ("not_all_empty", "{not: {all: []}}", set()),
    ("not_any_empty", "{not: {any: []}}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("double_not", "{not: {not: {attribute: city, is: Paris}}}", {"u01"}),
    ("double_not_null", "{not: {not: {attribute: is_vip, is: false}}}", {"u02", "u06", "u08", "u10"}),  # NULL stays out
    ("triple_not_null", "{not: {not: {not: {attribute: is_vip, is: false}}}}", {"u01", "u03", "u04", "u07", "u09"}),
    ("not_is_true", "{not: {attribute: is_vip, is: true}}", {"u02", "u03", "u06", "u07", "u08", "u10"}),
    ("not_is_not", "{not: {attribute: city, is_not: Paris}}", {"u01"}),
    ("not_not_contains", "{not: {attribute: city, not_contains: aris}}", {"u01", "u02", "u10"}),
    ("not_not_within", "{not: {attribute: signup_at, not_within: 1d}}", {"u02", "u04"}),
    ("not_not_in", "{not: {attribute: plan, not_in: [pro]}}", {"u01", "u06"}),
    ("not_is_set", "{not: {attribute: city, is_set: true}}", {"u03"}),
    ("all_two", "{all: [{attribute: is_vip, is: true}, {attribute: lifetime_value, gte: 100}]}", {"u01", "u09"}),
    ("not_all_two", "{not: {all: [{attribute: is_vip, is: true}, {attribute: lifetime_value, gte: 100}]}}", {"u02", "u03", "u04", "u06", "u07", "u08", "u10"}),
    ("any_two", "{any: [{attribute: city, is: Paris}, {attribute: lifetime_value, gt: 500}]}", {"u01", "u09"}),
    ("not_any_two", "{not: {any: [{attribute: city, is: Paris}, {attribute: lifetime_value, gt: 500}]}}", {"u02", "u03", "u04", "u06", "u07", "u08", "u10"}),
    # not(any(negatives)) = all(positives): NULLs are out
    ("not_any_negatives", "{not: {any: [{attribute: city, is_not: Paris}, {attribute: is_vip, is_not: true}]}}", {"u01"}),
    ("nested", "{all: [{any: [{attribute: plan, is: pro}, {attribute: plan, is: enterprise}]}, {not: {attribute: is_vip, is: false}}]}", {"u01", "u04", "u09"}),
    ("not_nested_false", "{not: {all: [{not: {attribute: city, is_set: true}}, {any: []}]}}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("any_with_all_empty", "{any: [{all: []}, {attribute: city, is: Paris}]}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
]

WINDOW_CASES = [
    ("login_any", "{event: login}", {"u01", "u02", "u04", "u06", "u07", "u08", "u10"}),  # u03's is after as_of
    ("login_within_1d", "{event: login, within: 1d}", {"u02", "u04"}),
    ("login_within_24h", "{event: login, within: 24h}", {"u02", "u04"}),
    ("login_within_1440m", "{event: login, within: 1440m}", {"u02", "u04"}),
    ("login_within_2w", "{event: login, within: 2w}", {"u01", "u02", "u04"}),  # (06-16 12:00, as_of]: u07's 06-15 is out
    ("login_between", "{event: login, between: [2024-06-01, 2024-06-15]}", {"u06", "u08"}),  # [T1, T2)
    ("login_between_relative", "{event: login, between: [now - 1d, now]}", {"u01", "u04"}),  # u02 at as_of = T2: out
    ("login_before", "{event: login, before: 2024-06-15}", {"u06", "u08", "u10"}),
    ("login_after", "{event: login, after: 2024-06-15}", {"u01", "u02", "u04"}),  # strict; u03 is after as_of
    ("login_after_now_1d", "{event: login, after: now - 1d}", {"u02", "u04"}),
    ("login_after_now", "{event: login, after: now}", set()),
    ("login_before_future", "{event: login, before: now + 1d}", {"u01", "u02", "u04", "u06", "u07", "u08", "u10"}),
    ("login_none_within_1d", "{event: login, within: 1d, count: {is: 0}}", {"u01", "u03", "u06", "u07", "u08", "u09", "u10"}),
    ("login_not_within_1d", "{not: {event: login, within: 1d}}", {"u01", "u03", "u06", "u07", "u08", "u09", "u10"}),
    ("login_count_is_0", "{event: login, count: {is: 0}}", {"u03", "u09"}),
    # is: true / false, as chat platforms phrase "did the event": count >= 1 / count is 0
    ("login_is_true", "{event: login, is: true}", {"u01", "u02", "u04", "u06", "u07", "u08", "u10"}),
    ("login_is_false", "{event: login, is: false}", {"u03", "u09"}),
    ("login_is_true_within_1d", "{event: login, within: 1d, is: true}", {"u02", "u04"}),
    ("login_is_false_within_1d", "{event: login, within: 1d, is: false}", {"u01", "u03", "u06", "u07", "u08", "u09", "u10"}),
    ("not_login_is_false", "{not: {event: login, is: false}}", {"u01", "u02", "u04", "u06", "u07", "u08", "u10"}),
    ("cart_is_true_followed", "{event: cart_add, is: true, followed_by: {event: checkout, within: 24h}}", {"u01", "u02", "u08"}),
    ("login_none_after", "{event: login, after: now - 1d, count: {is: 0}}", {"u01", "u03", "u06", "u07", "u08", "u09", "u10"}),
]

MEASURE_CASES = [
    ("cnt_gte_3", "{event: purchase, count: {gte: 3}}", {"u01", "u09"}),
    ("cnt_is_2", "{event: purchase, count: {is: 2}}", {"u02"}),  # duplicates count
    ("cnt_is_0", "{event: purchase, count: {is: 0}}", {"u04", "u08", "u10"}),  # u04's is after as_of
    ("cnt_lt_1", "{event: purchase, count: {lt: 1}}", {"u04", "u08", "u10"}),
    ("cnt_between", "{event: purchase, count: {between: [1, 2]}}", {"u02", "u03", "u06", "u07"}),
    ("cnt_not_gte_1", "{not: {event: purchase, count: {gte: 1}}}", {"u04", "u08", "u10"}),
    ("cnt_is_not_0", "{event: purchase, count: {is_not: 0}}", {"u01", "u02", "u03", "u06", "u07", "u09"}),
    ("days_gte_2", "{event: purchase, active_days: {gte: 2}}", {"u01", "u09"}),  # u01: 06-10 twice, 06-11
    ("days_is_1", "{event: purchase, active_days: {is: 1}}", {"u02", "u03", "u06", "u07"}),
    ("days_is_0", "{event: purchase, active_days: {is: 0}}", {"u04", "u08", "u10"}),
    ("days_gte_3", "{event: purchase, active_days: {gte: 3}}", {"u09"}),
    ("sum_gt_10", "{event: purchase, sum: {property: amount, gt: 10}}", {"u01", "u06"}),
    ("sum_is_10", "{event: purchase, sum: {property: amount, is: 10}}", {"u02", "u09"}),
    ("sum_is_30", "{event: purchase, sum: {property: amount, is: 30}}", {"u01"}),  # missing skipped
    ("sum_is_0", "{event: purchase, sum: {property: amount, is: 0}}", {"u03", "u04", "u08", "u10"}),  # u03: only a missing amount
    ("sum_lt_0", "{event: purchase, sum: {property: amount, lt: 0}}", {"u07"}),
    ("sum_lte_0", "{event: purchase, sum: {property: amount, lte: 0}}", {"u03", "u04", "u07", "u08", "u10"}),
    ("sum_not_gt_0", "{not: {event: purchase, sum: {property: amount, gt: 0}}}", {"u03", "u04", "u07", "u08", "u10"}),
    ("sum_window", "{event: purchase, within: 30d, sum: {property: amount, gte: 30}}", {"u01", "u06"}),
    ("avg_is_15", "{event: purchase, avg: {property: amount, is: 15}}", {"u01"}),  # (10+20)/2: missing skipped
    ("avg_is_2_5", "{event: purchase, avg: {property: amount, is: 2.5}}", {"u09"}),
    ("avg_gte_5", "{event: purchase, avg: {property: amount, gte: 5}}", {"u01", "u02", "u06"}),
    ("avg_lt_100", "{event: purchase, avg: {property: amount, lt: 100}}", {"u01", "u02", "u07", "u09"}),  # missing avg is not < 100
    ("avg_not_gte_5", "{not: {event: purchase, avg: {property: amount, gte: 5}}}", {"u03", "u04", "u07", "u08", "u09", "u10"}),
    ("avg_is_set_false", "{event: purchase, avg: {property: amount, is_set: false}}", {"u03", "u04", "u08", "u10"}),
    ("avg_is_not_15", "{event: purchase, avg: {property: amount, is_not: 15}}", {"u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("avg_window", "{event: purchase, between: ['2024-06-10T12:00:00Z', 2024-07-01], avg: {property: amount, is: 20}}", {"u01"}),
    ("min_lte_1", "{event: purchase, min: {property: amount, lte: 1}}", {"u07", "u09"}),
    ("min_is_set", "{event: purchase, min: {property: amount, is_set: true}}", {"u01", "u02", "u06", "u07", "u09"}),
    ("max_gte_20", "{event: purchase, max: {property: amount, gte: 20}}", {"u01", "u06"}),
    ("max_lt_20", "{event: purchase, max: {property: amount, lt: 20}}", {"u02", "u07", "u09"}),
    ("max_not_lt_20", "{not: {event: purchase, max: {property: amount, lt: 20}}}", {"u01", "u03", "u04", "u06", "u08", "u10"}),
    ("first_before", "{event: purchase, first_occurred: {before: 2024-06-05}}", {"u07", "u09"}),
    ("first_after", "{event: purchase, first_occurred: {after: 2024-06-15}}", {"u02", "u03", "u06"}),
    ("first_is_set_false", "{event: purchase, first_occurred: {is_set: false}}", {"u04", "u08", "u10"}),
    ("last_within_1d", "{event: purchase, last_occurred: {within: 1d}}", {"u06"}),
    ("last_after", "{event: purchase, last_occurred: {after: '2024-06-10T23:59:59Z'}}", {"u01", "u02", "u03", "u06"}),
    ("last_not_within_7d", "{event: purchase, last_occurred: {not_within: 7d}}", {"u01", "u02", "u04", "u07", "u08", "u09", "u10"}),
    ("last_between", "{event: purchase, last_occurred: {between: [2024-06-04, 2024-06-11]}}", {"u09"}),  # u01's 06-11: the end, out
    ("last_is", "{event: purchase, last_occurred: {is: '2024-06-11T00:00:00Z'}}", {"u01"}),
    ("last_window", "{event: purchase, before: 2024-06-11, last_occurred: {after: 2024-06-10}}", {"u01"}),
    # property filters on the measured events
    ("cnt_where_gte_5", "{event: purchase, where: {property: amount, gte: 5}, count: {gte: 2}}", {"u01", "u02"}),
    ("cnt_where_not_gte_5", "{event: purchase, where: {not: {property: amount, gte: 5}}}", {"u01", "u03", "u07", "u09"}),  # missing amount qualifies
    ("cnt_where_not_set", "{event: purchase, where: {property: amount, is_set: false}}", {"u01", "u03"}),
    ("cnt_where_none", "{event: purchase, where: {property: amount, gt: 50}, count: {is: 0}}", {"u01", "u02", "u03", "u04", "u07", "u08", "u09", "u10"}),
    # compiled alone, a scan reads only the events its windows hold: several windows
    # in one scan, and active days over a wider window than the other measures'
    # (u01 and u09 have no purchase in the last day)
    ("win_mixed_between_within", "{any: [{event: login, between: [2024-06-01, 2024-06-15]}, {event: login, within: 1d}]}",
     {"u02", "u04", "u06", "u08"}),
    ("win_mixed_before_within", "{any: [{event: login, before: 2024-06-15}, {event: login, within: 1d}]}",
     {"u02", "u04", "u06", "u08", "u10"}),
    ("win_days_wider", "{any: [{event: purchase, within: 1d}, {event: purchase, within: 30d, active_days: {gte: 2}}]}",
     {"u01", "u06", "u09"}),
    ("win_count_and_days_wider", "{all: [{event: purchase, within: 30d, active_days: {gte: 2}}, {event: purchase, within: 1d, count: {is: 0}}]}",
     {"u01", "u09"}),
]

EVENT_WHERE_CASES = [
    ("pv_starts_with", "{event: page_view, where: {property: path, starts_with: /pricing}}", {"u01", "u04", "u08"}),  # u07's is after as_of
    ("pv_starts_with_ic_2", "{event: page_view, where: {property: path, starts_with: /PRICING, ignore_case: true}, count: {gte: 2}}", {"u01"}),
    ("pv_contains", "{event: page_view, where: {property: path, contains: pricing}}", {"u01", "u02", "u04", "u08"}),
    ("pv_not_contains", "{event: page_view, where: {property: path, not_contains: pricing}}", {"u01", "u03", "u06", "u07"}),  # /Pricing/Team, NULL, '', /docs
    ("pv_path_not_set", "{event: page_view, where: {property: path, is_set: false}}", {"u03"}),
    ("pv_device", "{event: page_view, where: {property: device, is: mobile}}", {"u01", "u02", "u07"}),
    ("pv_device_ic", "{event: page_view, where: {property: device, is: MOBILE, ignore_case: true}}", {"u01", "u02", "u07"}),
    ("pv_device_is_not", "{event: page_view, where: {property: device, is_not: mobile}}", {"u01", "u03", "u04", "u06", "u08"}),
    ("pv_all", "{event: page_view, where: {all: [{property: device, is: desktop}, {property: path, starts_with: /pricing}]}}", {"u04", "u08"}),
    ("pv_any", "{event: page_view, where: {any: [{property: device, is: tablet}, {property: path, is: /docs}]}}", {"u06", "u07"}),
    ("pv_not_any", "{event: page_view, where: {not: {any: [{property: device, is: mobile}, {property: device, is: desktop}]}}}", {"u03", "u06"}),
    ("pv_all_empty", "{event: page_view, where: {all: []}}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08"}),
    ("pv_any_empty", "{event: page_view, where: {any: []}}", set()),
    ("pv_not_any_empty", "{event: page_view, where: {not: {any: []}}}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08"}),
    ("pv_nested",
     "{event: page_view, where: {all: [{property: path, is_set: true}, {any: [{property: device, is: tablet},"
     " {not: {property: path, starts_with: /pricing}}]}]}}",
     {"u01", "u02", "u06", "u07"}),
    ("pv_double_not", "{event: page_view, where: {not: {not: {property: device, is: desktop}}}}", {"u01", "u04", "u08"}),
    ("pv_where_window", "{event: page_view, where: {property: device, is: desktop}, within: 7d}", {"u01"}),
    ("list_within_7d", "{event: [page_view, purchase], within: 7d}", {"u01", "u03", "u06"}),
    ("list_count", "{event: [login, page_view], within: 7d, count: {gte: 2}}", {"u01"}),
    ("list_days", "{event: [login, purchase, page_view], active_days: {gte: 3}}", {"u01", "u06", "u07", "u09"}),
    ("list_count_not", "{not: {event: [checkout, cart_add]}}", {"u10"}),  # u10's cart_add is after as_of
]

SEQUENCE_CASES = [
    # t0 = latest cart_add; follow-ups in (t0, as_of], or (t0, t0 + D] with within
    ("seq_nfb", "{event: cart_add, not_followed_by: {event: checkout}}", {"u03", "u04", "u06", "u09"}),
    ("seq_fb", "{event: cart_add, followed_by: {event: checkout}}", {"u01", "u02", "u08"}),
    ("seq_nfb_24h", "{event: cart_add, not_followed_by: {event: checkout, within: 24h}}", {"u03", "u04", "u06", "u09"}),  # u02 at t0 + 24h: inside
    ("seq_fb_24h", "{event: cart_add, followed_by: {event: checkout, within: 24h}}", {"u01", "u02", "u08"}),
    ("seq_nfb_23h", "{event: cart_add, not_followed_by: {event: checkout, within: 23h}}", {"u02", "u03", "u04", "u06", "u09"}),
    ("seq_fb_23h", "{event: cart_add, followed_by: {event: checkout, within: 23h}}", {"u01", "u08"}),
    ("seq_fb_1h", "{event: cart_add, followed_by: {event: checkout, within: 1h}}", {"u01"}),
    ("seq_nfb_1h", "{event: cart_add, not_followed_by: {event: checkout, within: 1h}}", {"u02", "u03", "u04", "u06", "u08", "u09"}),
    ("seq_fb_59m", "{event: cart_add, followed_by: {event: checkout, within: 59m}}", set()),
    ("seq_nfb_2d", "{event: cart_add, not_followed_by: {event: checkout, within: 2d}}", {"u03", "u04", "u06", "u09"}),  # u06's is after as_of
    ("seq_fb_where", "{event: cart_add, followed_by: {event: checkout, where: {property: amount, gt: 0}}}", {"u01", "u02"}),
    ("seq_nfb_where", "{event: cart_add, not_followed_by: {event: checkout, where: {property: amount, gt: 0}}}", {"u03", "u04", "u06", "u08", "u09"}),
    ("seq_fb_where_within", "{event: cart_add, followed_by: {event: checkout, within: 1d, where: {property: amount, gte: 20}}}", {"u01", "u02"}),
    ("seq_nfb_list", "{event: cart_add, not_followed_by: {event: [checkout, purchase]}}", {"u03", "u04", "u09"}),  # u06: purchase at as_of
    # the anchor's window selects t0; the follow-up is not held to it
    ("seq_anchor_window_fb", "{event: cart_add, before: '2024-06-28T10:30:00Z', followed_by: {event: checkout}}", {"u01", "u02", "u04", "u08"}),
    ("seq_anchor_window_nfb", "{event: cart_add, before: '2024-06-28T10:30:00Z', not_followed_by: {event: checkout}}", {"u03", "u09"}),
    # self-sequence: strictly after t0, and t0 is the latest page_view
    ("seq_self_fb", "{event: page_view, followed_by: {event: page_view}}", set()),
    ("seq_self_nfb", "{event: page_view, not_followed_by: {event: page_view}}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08"}),
    ("seq_self_where_fb", "{event: page_view, where: {property: path, starts_with: /pricing}, followed_by: {event: page_view}}", {"u01"}),
    ("seq_self_where_nfb", "{event: page_view, where: {property: path, starts_with: /pricing}, not_followed_by: {event: page_view}}", {"u04", "u08"}),
    # a sequence and a measure must both hold
    ("seq_measure_nfb", "{event: cart_add, count: {gte: 2}, not_followed_by: {event: checkout}}", {"u04"}),
    ("seq_measure_fb", "{event: cart_add, count: {is: 1}, followed_by: {event: checkout}}", {"u01", "u02", "u08"}),
    ("seq_measure_nfb_1", "{event: cart_add, count: {is: 1}, not_followed_by: {event: checkout}}", {"u03", "u06", "u09"}),
    ("seq_measure_fb_2", "{event: cart_add, count: {gte: 2}, followed_by: {event: checkout}}", set()),
    # latest purchase t0: u06's (at as_of) has only a checkout after as_of; every other buyer checked out later
    ("seq_avg_nfb", "{event: purchase, avg: {property: amount, gte: 5}, not_followed_by: {event: checkout}}", {"u06"}),
    ("seq_not_avg_nfb", "{not: {event: purchase, avg: {property: amount, gte: 5}, not_followed_by: {event: checkout}}}",
     {"u01", "u02", "u03", "u04", "u07", "u08", "u09", "u10"}),
    # checkouts have no path: is_not holds on the missing value
    ("seq_fb_where_null", "{event: cart_add, followed_by: {event: checkout, where: {property: path, is_not: /x}}}", {"u01", "u02", "u08"}),
    ("seq_fb_where_not", "{event: cart_add, followed_by: {event: checkout, where: {not: {property: amount, lte: 0}}}}", {"u01", "u02"}),
    ("seq_no_anchor", "{event: cart_add, count: {is: 0}, not_followed_by: {event: checkout}}", set()),  # no qualifying event: neither
    # not: around a sequence is its exact complement (users with no anchor included)
    ("seq_not_nfb", "{not: {event: cart_add, not_followed_by: {event: checkout}}}", {"u01", "u02", "u07", "u08", "u10"}),
    ("seq_not_fb", "{not: {event: cart_add, followed_by: {event: checkout}}}", {"u03", "u04", "u06", "u07", "u09", "u10"}),
    ("seq_not_fb_1h", "{not: {event: cart_add, followed_by: {event: checkout, within: 1h}}}", {"u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("seq_not_measure_nfb", "{not: {event: cart_add, count: {is: 1}, not_followed_by: {event: checkout}}}", {"u01", "u02", "u04", "u07", "u08", "u10"}),
    ("seq_double_not", "{not: {not: {event: cart_add, not_followed_by: {event: checkout}}}}", {"u03", "u04", "u06", "u09"}),
    ("seq_any_attr", "{any: [{event: cart_add, followed_by: {event: checkout}}, {attribute: city, is: Lyon}]}", {"u01", "u02", "u08", "u09"}),
    ("seq_not_any", "{not: {any: [{event: cart_add, not_followed_by: {event: checkout}}, {attribute: is_vip, is: true}]}}", {"u02", "u07", "u08", "u10"}),
    ("seq_two_same_anchor", "{all: [{event: cart_add, followed_by: {event: checkout}}, {event: cart_add, not_followed_by: {event: checkout, within: 1h}}]}", {"u02", "u08"}),
    # anchors in windows with a start: follow-ups are read from that start on, and
    # may lie after the window's end (u02's checkout of 06-29 10:00)
    ("seq_anchor_within_nfb", "{event: cart_add, within: 2d, not_followed_by: {event: checkout}}", {"u04", "u06"}),
    ("seq_anchor_within_fb", "{event: cart_add, within: 2d, followed_by: {event: checkout}}", set()),
    ("seq_anchor_after_fb", "{event: cart_add, after: '2024-06-28T09:00:00Z', followed_by: {event: checkout}}", {"u01", "u02", "u08"}),
    ("seq_anchor_after_nfb", "{event: cart_add, after: '2024-06-28T09:00:00Z', not_followed_by: {event: checkout}}", {"u03", "u04", "u06", "u09"}),
    ("seq_anchor_between_fb", "{event: cart_add, between: [2024-06-28, 2024-06-29], followed_by: {event: checkout}}", {"u01", "u02", "u08"}),
    ("seq_anchor_between_nfb", "{event: cart_add, between: [2024-06-28, 2024-06-29], not_followed_by: {event: checkout, within: 2h}}",
     {"u02", "u03", "u09"}),
    ("seq_anchors_mixed", "{any: [{event: cart_add, within: 2d, not_followed_by: {event: checkout}}, "
     "{event: cart_add, before: '2024-06-28T10:30:00Z', followed_by: {event: checkout}}]}", {"u01", "u02", "u04", "u06", "u08"}),
]

DERIVED_CASES = [
    ("d_paris", "{attribute: city, is: paris, ignore_case: true}", {"u01", "u02"}),
    ("d_vip", "{attribute: is_vip, is: true}", {"u01", "u04", "u09"}),
    ("d_paris_vip", "{all: [{segment: d_paris}, {segment: d_vip}]}", {"u01"}),
    ("d_not_paris", "{not: {segment: d_paris}}", {"u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("d_chain", "{not: {segment: d_not_paris}}", {"u01", "u02"}),
    ("d_chain2", "{all: [{segment: d_chain}, {not: {segment: d_paris_vip}}]}", {"u02"}),
    ("d_any", "{any: [{segment: d_paris}, {segment: d_vip}]}", {"u01", "u02", "u04", "u09"}),
    ("d_tier_ref", "{any: [{segment: value_tiers__big}, {segment: value_tiers__vip}]}", {"u01", "u04", "u06", "u09"}),
    ("d_not_tier", "{not: {segment: value_tiers__rest}}", {"u01", "u04", "u06", "u09"}),
    ("d_held_ref", "{segment: held}", {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),  # control users included
    ("d_not_held", "{not: {segment: held}}", set()),
    ("d_seq_ref", "{all: [{segment: seq_nfb}, {attribute: is_vip, is: true}]}", {"u04", "u09"}),
    ("d_upload_ref", "{not: {segment: up_email}}", {"u03", "u04", "u06", "u07", "u09", "u10"}),
    ("d_measure_ref", "{all: [{segment: cnt_gte_3}, {event: purchase, count: {is: 4}}]}", {"u09"}),
]

UPLOAD_SPECS = {
    "up_email": ("uploads/emails.csv", "email", None),
    "up_phone": ("uploads/phones.csv", "phone", None),
    "up_user_id": ("uploads/ids.csv", "user_id", None),
    "up_email_where": ("uploads/emails.csv", "email", "{attribute: is_vip, is: true}"),
    "up_phone_where": ("uploads/phones.csv", "phone", "{not: {attribute: city, is: Lyon}}"),
    "up_empty_phones": ("uploads/empty_phones.csv", "phone", None),
    "up_empty_emails": ("uploads/empty_emails.csv", "email", None),
}
UPLOAD_CASES = [
    # ' ALICE@EXAMPLE.COM ' matches u01 and u08; ' Bob@Example.COM ' matches bob; u05 outside
    ("up_email", {"u01", "u02", "u08"}),
    ("up_phone", {"u01", "u02", "u09"}),  # digits alone; u04 '' and u06 'n/a' never match 'n/a', '---'
    ("up_user_id", {"u01", "u07"}),
    ("up_email_where", {"u01"}),
    ("up_phone_where", {"u01", "u02"}),
    ("up_empty_phones", set()),
    ("up_empty_emails", set()),
]

TIER_SPECS = {
    "value_tiers": """\
        tiers:
          - {name: big, where: {attribute: lifetime_value, gte: 100}}
          - {name: vip, where: {attribute: is_vip, is: true}}
          - {name: rest}
        """,
    "narrowed_tiers": """\
        where: {attribute: city, is_set: true}
        tiers:
          - {name: big, where: {attribute: lifetime_value, gte: 100}}
          - {name: vip, where: {attribute: is_vip, is: true}}
          - {name: rest}
        """,
    "engagement": """\
        tiers:
          - {name: high, where: {event: purchase, count: {gte: 3}}}
          - {name: moderate, where: {event: purchase, count: {gte: 1}}}
          - {name: low, where: {event: login, within: 30d}}
          - {name: inactive}
        """,
    "avg_tiers": """\
        tiers:
          - {name: buyer, where: {event: purchase, avg: {property: amount, gte: 5}}}
          - {name: other}
        """,
    "seq_tiers": """\
        tiers:
          - {name: stalled, where: {event: cart_add, not_followed_by: {event: checkout}}}
          - {name: converted, where: {event: cart_add, followed_by: {event: checkout}}}
          - {name: other}
        """,
    "plan_tiers": """\
        tiers:
          - {name: pro, where: {attribute: plan, is: pro}}
          - {name: paying_or_free, where: {attribute: plan, in: [pro, free]}}
        """,
    "null_tiers": """\
        tiers:
          - {name: no_aris, where: {attribute: city, not_contains: aris}}
          - {name: vip, where: {attribute: is_vip, is: true}}
          - {name: rest}
        """,
    "ref_tiers": """\
        where: {not: {segment: d_vip}}
        tiers:
          - {name: paris, where: {segment: d_paris}}
          - {name: rest}
        """,
}
TIER_CASES = [
    ("value_tiers__big", {"u01", "u06", "u09"}),
    ("value_tiers__vip", {"u04"}),  # u01, u09 went to big
    ("value_tiers__rest", {"u02", "u03", "u07", "u08", "u10"}),  # missing ltv / is_vip fall through
    ("narrowed_tiers__big", {"u01", "u06", "u09"}),
    ("narrowed_tiers__vip", {"u04"}),
    ("narrowed_tiers__rest", {"u02", "u07", "u08", "u10"}),  # u03 has no city
    ("engagement__high", {"u01", "u09"}),
    ("engagement__moderate", {"u02", "u03", "u06", "u07"}),
    ("engagement__low", {"u04", "u08"}),
    ("engagement__inactive", {"u10"}),
    ("avg_tiers__buyer", {"u01", "u02", "u06"}),
    ("avg_tiers__other", {"u03", "u04", "u07", "u08", "u09", "u10"}),
    ("seq_tiers__stalled", {"u03", "u04", "u06", "u09"}),
    ("seq_tiers__converted", {"u01", "u02", "u08"}),
    ("seq_tiers__other", {"u07", "u10"}),
    ("plan_tiers__pro", {"u01", "u06"}),
    ("plan_tiers__paying_or_free", {"u02", "u07", "u10"}),  # the rest is in no tier
    ("null_tiers__no_aris", {"u03", "u04", "u06", "u07", "u08", "u09"}),
    ("null_tiers__vip", {"u01"}),
    ("null_tiers__rest", {"u02", "u10"}),
    ("ref_tiers__paris", {"u02"}),
    ("ref_tiers__rest", {"u03", "u06", "u07", "u08", "u10"}),
]

HOLDOUT_SPECS = {
    "held": "holdout: 45\nwhere: {all: []}\n",
    "held_decimal": "holdout: 13.5\nwhere: {all: []}\n",
    "held_zero": "holdout: 0\nwhere: {all: []}\n",
    "held_max": "holdout: 50\nwhere: {attribute: lifetime_value, is_set: true}\n",
    "held_tiers": """\
        holdout: 40
        tiers:
          - {name: big, where: {attribute: lifetime_value, gte: 100}}
          - {name: rest}
        """,
}
HOLDOUT_CASES = [
    # bucket = md5 first 8 hex digits mod 100; u10's bucket is 45 exactly: not below 45
    ("held", 45, {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    # u04's bucket is 13: below 13.5
    ("held_decimal", 13.5, {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("held_zero", 0, {"u01", "u02", "u03", "u04", "u06", "u07", "u08", "u09", "u10"}),
    ("held_max", 50, {"u01", "u02", "u04", "u06", "u07", "u08", "u09"}),
    ("held_tiers__big", 40, {"u01", "u06", "u09"}),
    ("held_tiers__rest", 40, {"u02", "u03", "u04", "u07", "u08", "u10"}),
]

# Priority lists (issue 16): a user is in the first listed segment that holds them only.
# Expected members come from the listed segments' expected members, in Python.
PRIORITY_SPECS = {
    "first_campaign": ["engagement__high", "plan_tiers__pro", "held_max", "value_tiers__rest"],
    "one_listed": ["seq_tiers__other"],
}


def _priority_cases() -> list[tuple[str, set[str]]]:
    known = dict(TIER_CASES) | {name: expected for name, _, expected in HOLDOUT_CASES}
    cases = []
    for name, listed in PRIORITY_SPECS.items():
        taken: set[str] = set()
        for segment in listed:
            cases.append((f"{name}__{segment}", known[segment] - taken))
            taken |= known[segment]
    return cases


PRIORITY_CASES = _priority_cases()

TRAIT_CONDITION_CASES = [
    ("t_orders_gte_2", "{trait: orders, gte: 2}", {"u01", "u02", "u09"}),
    ("t_orders_is_0", "{trait: orders, is: 0}", {"u04", "u08", "u10"}),
    ("t_basket_lt_10", "{trait: basket, lt: 10}", {"u02", "u07", "u09"}),
    ("t_not_basket_lt_10", "{not: {trait: basket, lt: 10}}", {"u01", "u03", "u04", "u06", "u08", "u10"}),
    ("t_recency_4", "{trait: recency, is: 4}", {"u03", "u06"}),
    ("t_recency_not_4", "{trait: recency, is_not: 4}", {"u01", "u02", "u04", "u07", "u08", "u09", "u10"}),
    ("t_last_buy_within", "{trait: last_buy, within: 7d}", {"u03", "u06"}),
    ("t_value_score_unset", "{trait: value_score, is_set: false}", {"u03", "u04", "u08", "u10"}),
    ("t_frequency_between", "{trait: frequency, between: [2, 3]}", {"u01", "u02", "u03", "u06", "u07", "u09"}),
    ("t_revenue_and_event", "{all: [{trait: revenue, is: 10}, {event: purchase, active_days: {gte: 2}}]}", {"u09"}),
]

WHERE_CASES = (
    ATTRIBUTE_CASES + LOGIC_CASES + WINDOW_CASES + MEASURE_CASES + EVENT_WHERE_CASES
    + SEQUENCE_CASES + DERIVED_CASES + TRAIT_CONDITION_CASES
)

# Expected user_traits, trait -> {user: value}; u05 (outside the universe) has no row.
TRAIT_VALUES: dict[str, dict[str, object]] = {
    "orders": {"u01": 3, "u02": 2, "u03": 1, "u04": 0, "u06": 1, "u07": 1, "u08": 0, "u09": 4, "u10": 0},
    # (06-20 12:00, 06-30 12:00]: u03 06-25, u06 at as_of; u02's 06-20 08:00 is out
    "orders_10d": {"u01": 0, "u02": 0, "u03": 1, "u04": 0, "u06": 1, "u07": 0, "u08": 0, "u09": 0, "u10": 0},
    "orders_jun10": {"u01": 2, "u02": 0, "u03": 0, "u04": 0, "u06": 0, "u07": 0, "u08": 0, "u09": 0, "u10": 0},
    "buy_days": {"u01": 2, "u02": 1, "u03": 1, "u04": 0, "u06": 1, "u07": 1, "u08": 0, "u09": 3, "u10": 0},
    "revenue": {"u01": 30, "u02": 10, "u03": 0, "u04": 0, "u06": 100, "u07": -5, "u08": 0, "u09": 10, "u10": 0},
    "basket": {"u01": 15, "u02": 5, "u03": None, "u04": None, "u06": 100, "u07": -5, "u08": None, "u09": 2.5, "u10": None},
    "smallest": {"u01": 10, "u02": 5, "u03": None, "u04": None, "u06": 100, "u07": -5, "u08": None, "u09": 1, "u10": None},
    "biggest": {"u01": 20, "u02": 5, "u03": None, "u04": None, "u06": 100, "u07": -5, "u08": None, "u09": 4, "u10": None},
    "first_buy": {
        "u01": T("2024-06-10 10:00:00"), "u02": T("2024-06-20 08:00:00"), "u03": T("2024-06-25"), "u04": None,
        "u06": T("2024-06-30 12:00:00"), "u07": T("2024-06-01"), "u08": None, "u09": T("2024-06-02 01:00:00"), "u10": None,
    },
    "last_buy": {
        "u01": T("2024-06-11"), "u02": T("2024-06-20 08:00:00"), "u03": T("2024-06-25"), "u04": None,
        "u06": T("2024-06-30 12:00:00"), "u07": T("2024-06-01"), "u08": None, "u09": T("2024-06-04"), "u10": None,
    },
    "last_buy_before": {
        "u01": T("2024-06-11"), "u02": None, "u03": None, "u04": None,
        "u06": None, "u07": T("2024-06-01"), "u08": None, "u09": T("2024-06-04"), "u10": None,
    },
    "jun10_max": {"u01": 20, "u02": None, "u03": None, "u04": None, "u06": None, "u07": None, "u08": None, "u09": None, "u10": None},
    "revenue_10d": {"u01": 0, "u02": 0, "u03": 0, "u04": 0, "u06": 100, "u07": 0, "u08": 0, "u09": 0, "u10": 0},
    # [06-10 12:00, 07-01): u01 20 and a missing amount -> 20
    "basket_late": {"u01": 20, "u02": 5, "u03": None, "u04": None, "u06": 100, "u07": None, "u08": None, "u09": None, "u10": None},
    "smallest_late": {"u01": 10, "u02": 5, "u03": None, "u04": None, "u06": 100, "u07": None, "u08": None, "u09": 2, "u10": None},
    "first_late": {
        "u01": T("2024-06-10 10:00:00"), "u02": T("2024-06-20 08:00:00"), "u03": T("2024-06-25"), "u04": None,
        "u06": T("2024-06-30 12:00:00"), "u07": None, "u08": None, "u09": T("2024-06-02 02:00:00"), "u10": None,
    },
    # last_buy ascending: u07 u09 u01 u02 u03 u06 -> percent rank 0 .2 .4 .6 .8 1 -> 1 1 2 3 4 min(4, 5)
    "recency": {"u01": 2, "u02": 3, "u03": 4, "u04": None, "u06": 4, "u07": 1, "u08": None, "u09": 1, "u10": None},
    # orders 0 0 0 | 1 1 1 | 2 | 3 | 4 -> ranks 1, 4, 7, 8, 9 of 9 -> percent rank 0, 3/8, 6/8, 7/8, 1
    "frequency": {"u01": 3, "u02": 3, "u03": 2, "u04": 1, "u06": 2, "u07": 2, "u08": 1, "u09": 3, "u10": 1},
    # basket -5 2.5 5 15 100 -> percent rank 0 .25 .5 .75 1 -> 1 3 6 8 10 (10 buckets, 5 users)
    "value_score": {"u01": 8, "u02": 6, "u03": None, "u04": None, "u06": 10, "u07": 1, "u08": None, "u09": 3, "u10": None},
    "single_score": {"u01": 1, "u02": None, "u03": None, "u04": None, "u06": None, "u07": None, "u08": None, "u09": None, "u10": None},
    # frequency 1 x3, 2 x3, 3 x3 -> ranks 1, 4, 7 of 9 -> 0, 3/8, 6/8 -> 1, 1, 2
    "freq_of_freq": {"u01": 2, "u02": 2, "u03": 1, "u04": 1, "u06": 1, "u07": 1, "u08": 1, "u09": 2, "u10": 1},
}


# ---- the harness ------------------------------------------------------------------------


def _write(specs: Path, name: str, text: str) -> None:
    path = specs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def write_project(specs: Path, segments: dict[str, str], traits: str | None = TRAITS) -> Path:
    """A specs directory: the catalog, the traits, the uploads and ``segments``
    (name -> the spec's body without ``name:``)."""
    _write(specs, "_catalog.yml", CATALOG)
    if traits is not None:
        _write(specs, "_traits.yml", traits)
    for name, text in UPLOADS.items():
        _write(specs, name, text)
    for name, body in segments.items():
        _write(specs, f"{name}.yml", f"name: {name}\n" + textwrap.dedent(body))
    return specs


def _all_segments() -> dict[str, str]:
    segments = {name: f"where: {where}\n" for name, where, _ in WHERE_CASES}
    for name, (file, match_on, where) in UPLOAD_SPECS.items():
        body = f"upload: {{file: {file}, match_on: {match_on}}}\n"
        segments[name] = body + (f"where: {where}\n" if where else "")
    segments.update(TIER_SPECS)
    segments.update(HOLDOUT_SPECS)
    segments.update({name: f"priority: [{', '.join(listed)}]\n" for name, listed in PRIORITY_SPECS.items()})
    return segments


def _load_rows(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.users (user_id VARCHAR, created_at TIMESTAMP, email VARCHAR, phone VARCHAR,"
        " city VARCHAR, plan VARCHAR, signup_at TIMESTAMP, is_vip BOOLEAN, ltv DOUBLE)"
    )
    con.executemany("INSERT INTO raw.users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", USERS)
    con.execute(
        "CREATE TABLE raw.events (user_id VARCHAR, event_name VARCHAR, occurred_at TIMESTAMP,"
        " amount DOUBLE, path VARCHAR, device_type VARCHAR)"
    )
    con.executemany("INSERT INTO raw.events VALUES (?, ?, ?, ?, ?, ?)", EVENTS)
    return con


@pytest.fixture(scope="module")
def warehouse(project) -> duckdb.DuckDBPyConnection:
    """The rows, and the uploaded lists as a build loads them from the specs' files."""
    con = _load_rows(duckdb.connect(":memory:"))
    uploads.write_file_lists(con, project)
    yield con
    con.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> m.Project:
    """Every case's spec in one project: derived segments read the others."""
    return load_project(write_project(tmp_path_factory.mktemp("semantics") / "specs", _all_segments()))


@pytest.fixture(scope="module")
def full(project) -> CompiledProject:
    """Every segment and trait compiled together, as `segments compile` does."""
    return compile_project(project)


def rows(con: duckdb.DuckDBPyConnection, compiled: CompiledProject, target: str) -> list[tuple]:
    return con.execute(standalone_sql(compiled, target, AS_OF)).fetchall()


def membership(con: duckdb.DuckDBPyConnection, project: m.Project, segment: str) -> dict[str, bool]:
    """user_id -> is_holdout of ``segment``, compiled alone (with what it reads)."""
    compiled = compile_project(project, only=[segment])
    result = rows(con, compiled, f"seg_{segment}")
    ids = [r[0] for r in result]
    assert len(ids) == len(set(ids)), f"duplicate members in {segment}: {sorted(ids)}"
    return {r[0]: r[1] for r in result}


def members(con: duckdb.DuckDBPyConnection, project: m.Project, segment: str) -> set[str]:
    return set(membership(con, project, segment))


def expected_holdout(segment: str, user_id: str, percent: float) -> bool:
    """SPEC 2.6, computed independently of the compiler."""
    digest = hashlib.md5(f"{segment}:{user_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100 < percent


def _params(cases):
    return [pytest.param(name, where, expected, id=name) for name, where, expected in cases]


# ---- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "where", "expected"), _params(ATTRIBUTE_CASES))
def test_attribute_operators(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(LOGIC_CASES))
def test_all_any_not(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(WINDOW_CASES))
def test_event_windows(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(MEASURE_CASES))
def test_measures(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(EVENT_WHERE_CASES))
def test_event_lists_and_property_filters(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(SEQUENCE_CASES))
def test_sequences(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(DERIVED_CASES))
def test_derived_segments(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "where", "expected"), _params(TRAIT_CONDITION_CASES))
def test_trait_conditions(warehouse, project, name, where, expected):
    assert members(warehouse, project, name) == expected, where


@pytest.mark.parametrize(("name", "expected"), [pytest.param(n, e, id=n) for n, e in UPLOAD_CASES])
def test_uploads(warehouse, project, name, expected):
    assert members(warehouse, project, name) == expected


@pytest.mark.parametrize(("name", "expected"), [pytest.param(n, e, id=n) for n, e in TIER_CASES])
def test_tiers(warehouse, project, name, expected):
    assert members(warehouse, project, name) == expected


@pytest.mark.parametrize(("name", "expected"), [pytest.param(n, e, id=n) for n, e in PRIORITY_CASES])
def test_priority_lists(warehouse, project, name, expected):
    assert members(warehouse, project, name) == expected


def test_priority_cases_are_not_trivial():
    assert PRIORITY_CASES[1] == ("first_campaign__plan_tiers__pro", {"u06"})  # u01 went to engagement__high
    assert all(expected for _, expected in PRIORITY_CASES)


def test_tier_segments_are_named_spec__tier(project):
    spec = project.spec("value_tiers")
    assert spec.segment_names() == ("value_tiers__big", "value_tiers__vip", "value_tiers__rest")
    assert "value_tiers" not in project.segment_names()
    compiled = compile_project(project, only=["value_tiers__vip"])
    names = {model.name for model in compiled.models}
    assert "seg_value_tiers" not in names
    assert {"seg_value_tiers__big", "seg_value_tiers__vip", "seg_value_tiers__rest"} <= names


@pytest.mark.parametrize(("name", "percent", "expected"), [pytest.param(*c, id=c[0]) for c in HOLDOUT_CASES])
def test_holdout(warehouse, project, name, percent, expected):
    flags = {user: expected_holdout(name, user, percent) for user in expected}
    if 0 < percent:  # the data must exercise both sides for the case to mean anything
        assert True in flags.values() and False in flags.values(), flags
    assert membership(warehouse, project, name) == flags


def test_universe(warehouse, project):
    # u05 is created after as_of: in no segment, even all: []; u03 (no created_at) and
    # u04 (created exactly at as_of) stay; u99 (events only) is not a user.
    assert members(warehouse, project, "all_empty") == UNIVERSE
    compiled = compile_project(project, only=["cnt_gte_3"])
    universe = {r[0] for r in rows(warehouse, compiled, "int_segment_universe")}
    assert universe == UNIVERSE
    # measures are per user of the events; readers start from the universe
    measured = {r[0] for r in rows(warehouse, compiled, "int_segment_base")}
    assert measured == UNIVERSE  # not u05, not u99


@pytest.fixture(scope="module")
def traits_table(warehouse, full) -> dict[str, dict[str, object]]:
    result = warehouse.execute(standalone_sql(full, "user_traits", AS_OF))
    columns = [d[0] for d in result.description]
    data = result.fetchall()
    by_user = [dict(zip(columns, row)) for row in data]
    ids = [r["user_id"] for r in by_user]
    assert len(ids) == len(set(ids)), sorted(ids)
    return {c: {r["user_id"]: r[c] for r in by_user} for c in columns}


def test_user_traits_rows_are_the_universe(traits_table):
    assert set(traits_table["user_id"]) == UNIVERSE
    assert set(traits_table) == {"user_id", *TRAIT_VALUES}


@pytest.mark.parametrize("trait", list(TRAIT_VALUES))
def test_trait_values(traits_table, trait):
    assert traits_table[trait] == TRAIT_VALUES[trait]


def test_trait_alone_matches_full_compile(warehouse, project):
    # compiled with only=[...], a segment reading a quantile still ranks the whole universe
    assert members(warehouse, project, "t_recency_4") == {"u03", "u06"}


# ---- structure: one shared pass over the events -----------------------------------------


SHARED_SEGMENTS = {
    "a_buyers": "where: {event: purchase, count: {gte: 3}}\n",
    "b_non_buyers": "where: {event: purchase, count: {is: 0}}\n",
    "c_active": "where: {event: [purchase, login], within: 7d}\n",
    "d_inactive": "where: {event: [login, purchase, login], within: 7d, count: {lt: 1}}\n",
    "e_stalled": "where: {event: cart_add, not_followed_by: {event: checkout}}\n",
    "f_converted": "where: {event: cart_add, followed_by: {event: checkout}}\n",
}
SHARED_TRAITS = "traits:\n  orders: {event: purchase, count: true}\n"


def _measure_columns(compiled: CompiledProject) -> list[str]:
    return [n for n in compiled.model(MEASURES).query.named_selects if n != "user_id"]


def test_same_measure_shares_one_column(tmp_path, warehouse):
    specs = write_project(tmp_path / "specs", SHARED_SEGMENTS, traits=SHARED_TRAITS)
    compiled = compile_project(load_project(specs))
    columns = _measure_columns(compiled)
    # count(purchase) for a, b and the trait; count(login|purchase within 7d) for c, d;
    # count(cart_add) and last_occurred(cart_add) (the anchor t0) for e, f
    kinds = sorted(c.rsplit("_", 1)[0] for c in columns)
    assert kinds == ["count_cart_add", "count_login_purchase", "count_purchase", "last_occurred_cart_add"], columns
    # and each segment reads the shared column: they still select the right users
    expected = {
        "a_buyers": {"u01", "u09"},
        "b_non_buyers": {"u04", "u08", "u10"},
        "c_active": {"u01", "u02", "u03", "u04", "u06"},  # (06-23 12:00, as_of]
        "d_inactive": {"u07", "u08", "u09", "u10"},
        "e_stalled": {"u03", "u04", "u06", "u09"},
        "f_converted": {"u01", "u02", "u08"},
    }
    for name, want in expected.items():
        got = {r[0] for r in rows(warehouse, compiled, f"seg_{name}")}
        assert got == want, name


def test_followed_and_not_followed_share_one_followup_column(tmp_path):
    specs = write_project(tmp_path / "specs", SHARED_SEGMENTS, traits=SHARED_TRAITS)
    compiled = compile_project(load_project(specs))
    sequences = compiled.model("int_user_event_sequences").query.named_selects
    assert len(sequences) == 2, sequences  # user_id and ONE follow-up count for e and f


def test_events_are_read_once(project, full):
    for compiled in (full, compile_project(project, only=["seq_two_same_anchor"])):
        # the measures: GROUP BY scans of at most MAX_AGGREGATES_PER_SCAN aggregates
        # each, those of windows within 90 days apart from the others, plus one narrow
        # scan for all active days, whatever their number
        measures = compiled.model(MEASURES).query
        event_scans = [t for t in measures.find_all(exp.Table) if t.meta.get("model") == STG_EVENTS]
        names = _measure_columns(compiled)
        has_days = any(c.startswith("active_days_") for c in names)
        plain = [c.measure.filter.window for c in compiled.measures.measures if c.measure.kind != "active_days"]
        recent = sum(isinstance(w, m.WithinWindow) and w.duration.seconds <= 90 * 86400 for w in plain)
        scans = [-(-n // MAX_AGGREGATES_PER_SCAN) for n in (recent, len(plain) - recent)]
        assert compiled is not full or (recent and len(plain) - recent)  # both kinds in the full project
        assert len(event_scans) == sum(scans) + has_days
        columns = _measure_columns(compiled)
        assert len(columns) == len(set(columns))


@pytest.mark.parametrize(("segment", "joins"), [("t_recency_4", 0), ("seq_nfb", 0), ("cnt_gte_3", 1), ("d_paris", 0)])
def test_one_query_joins_the_universe_to_the_measures_once(project, full, segment, joins):
    """Compiled alone (one query: preview, explain), the base reads the universe's and
    the measures' columns through the traits where there are traits or follow-ups, and
    joins nothing itself; a build's base joins the universe to its tables."""
    def base_joins(compiled: CompiledProject) -> int:
        return len(compiled.model("int_segment_base").query.args.get("joins") or [])

    assert base_joins(compile_project(project, only=[segment])) == joins
    assert base_joins(full) == 2


def test_membership_reads_the_base_once(full):
    """Every segment is a column of one pass over the base, derived ones and tiers
    included, and the per-segment models only filter the membership."""
    flags = full.model("int_segment_flags").query
    bases = [t for t in flags.find_all(exp.Table) if t.meta.get("model") == "int_segment_base"]
    assert len(bases) == 1
    membership = full.model("segment_membership").query
    assert {t.meta.get("model") for t in membership.find_all(exp.Table)} == {"int_segment_flags"}
    for model in full.models:
        if model.name.startswith("seg_"):
            assert {t.meta.get("model") for t in model.query.find_all(exp.Table)} == {"segment_membership"}


def _materialize(con: duckdb.DuckDBPyConnection, compiled: CompiledProject) -> None:
    """Build every model as a table, in order, from its dbt SQL (what `dbt build` does)."""
    as_of = AS_OF.isoformat(sep=" ")
    for model in compiled.models:
        sql = dbt_sql(model, "test")
        sql = re.sub(r"\{\{ ref\('(\w+)'\) \}\}", r'"\1"', sql)
        sql = re.sub(r"\{\{ source\('(\w+)', '(\w+)'\) \}\}", r"\1.\2", sql)
        sql = sql.replace("{{ segments_as_of() }}", as_of)
        assert "{{" not in sql, sql
        con.execute(f'CREATE TABLE "{model.name}" AS {sql}')


def check_membership(result: list[tuple]) -> None:
    """``(segment_name, user_id, is_holdout, as_of)`` rows of every case compiled
    together are exactly what the cases expect, holdout flags included."""
    got: dict[str, set[str]] = {}
    for segment, user, _holdout, as_of in result:
        assert as_of == AS_OF
        got.setdefault(segment, set()).add(user)
    cases = [(n, e) for n, _, e in WHERE_CASES] + UPLOAD_CASES + TIER_CASES + PRIORITY_CASES
    cases += [(n, e) for n, _, e in HOLDOUT_CASES]
    wrong = {n: (sorted(got.get(n, set())), sorted(e)) for n, e in cases if got.get(n, set()) != e}
    assert not wrong
    assert len(result) == sum(len(e) for _, e in cases)  # no duplicate (segment, user)
    flags = {(s, u): h for s, u, h, _ in result}
    for name, percent, expected in HOLDOUT_CASES:
        assert {u: flags[(name, u)] for u in expected} == {u: expected_holdout(name, u, percent) for u in expected}


def test_full_compile_agrees_with_alone(full, project):
    """Every case compiled together (shared measures and follow-ups, the dbt models in
    order) selects the same users as compiled alone."""
    con = _load_rows(duckdb.connect(":memory:"))
    uploads.write_file_lists(con, project)
    try:
        _materialize(con, full)
        result = con.execute("SELECT segment_name, user_id, is_holdout, as_of FROM segment_membership").fetchall()
    finally:
        con.close()
    check_membership(result)


# ---- the catalog's timezone ------------------------------------------------------------------

#: Los Angeles is UTC-7 in June: u01's purchases of 06-10 10:00 and 06-10 23:59:59 and
#: 06-11 00:00 UTC are all on 06-10 there; a date such as 2024-06-15 starts at 07:00 UTC.
TIMEZONE_CASES = [
    ("tz_days_gte_2", "{event: purchase, active_days: {gte: 2}}", {"u09"}),  # UTC: u01 too
    ("tz_days_is_1", "{event: purchase, active_days: {is: 1}}", {"u01", "u02", "u03", "u06", "u07"}),
    ("tz_login_before", "{event: login, before: 2024-06-15}", {"u06", "u07", "u08", "u10"}),  # u07: 06-15 00:00 UTC
    ("tz_login_between", "{event: login, between: [2024-06-01, '2024-06-15']}", {"u07", "u08"}),  # u06: 06-01 00:00 UTC
    # a date-time with Z keeps its meaning
    ("tz_login_between_z", "{event: login, between: ['2024-06-01T00:00:00Z', 2024-06-15]}", {"u06", "u07", "u08"}),
]


@pytest.fixture(scope="module")
def zoned_project(tmp_path_factory: pytest.TempPathFactory) -> m.Project:
    specs = write_project(
        tmp_path_factory.mktemp("zoned") / "specs", {name: f"where: {where}\n" for name, where, _ in TIMEZONE_CASES}
    )
    (specs / "_catalog.yml").write_text(CATALOG + "timezone: America/Los_Angeles\n", encoding="utf-8")
    return load_project(specs)


@pytest.mark.parametrize(("name", "where", "expected"), _params(TIMEZONE_CASES))
def test_catalog_timezone(warehouse, zoned_project, name, where, expected):
    assert members(warehouse, zoned_project, name) == expected


def test_catalog_timezone_days_of_traits(zoned_project):
    """The full compile (the dbt models) counts the traits' days in the zone too."""
    con = _load_rows(duckdb.connect(":memory:"))
    try:
        _materialize(con, compile_project(zoned_project))
        days = dict(con.execute("SELECT user_id, buy_days FROM user_traits").fetchall())
    finally:
        con.close()
    assert (days["u01"], days["u02"], days["u09"]) == (1, 1, 3)  # UTC: 2, 1, 3


def test_utc_catalog_timezone_compiles_as_none(tmp_path):
    specs = write_project(tmp_path / "specs", {"s": "where: {event: purchase, active_days: {gte: 2}}\n"})
    plain = compile_project(load_project(specs))
    (specs / "_catalog.yml").write_text(CATALOG + "timezone: Etc/UTC\n", encoding="utf-8")
    utc = load_project(specs)
    assert utc.catalog.timezone is None
    assert [x.query.sql() for x in compile_project(utc).models] == [x.query.sql() for x in plain.models]
