"""Broken specs: each error names ``file:line:col`` and says what is wrong.

Every case writes a small valid project plus the files of the case, then checks
that one of the reported errors sits exactly at the expected place and contains
the expected words.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from segments.errors import SpecErrors
from segments.spec.parse import load_project

CATALOG = """\
users:
  table: raw.users
  key: user_id
  created_at: created_at
  attributes:
    email: {type: string, pii: true}
    phone: {type: string, pii: true}
    city: {type: string}
    plan: {type: string, values: [free, pro, enterprise]}
    signup_at: {type: timestamp}
    is_vip: {type: boolean}
    lifetime_value: {type: number}
events:
  table: raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    amount: {type: number}
    path: {type: string}
"""
TRAITS = """\
traits:
  orders_365d: {event: purchase, within: 365d, count: true}
  last_order_at: {event: purchase, last_occurred: true}
  recency_score: {quantile: last_order_at, buckets: 5}
"""
DESTINATIONS = """\
destinations:
  intercom_main: {type: intercom, token: "${INTERCOM_TOKEN}"}
"""
BUYERS = "name: buyers\nwhere: {event: purchase, within: 30d}\n"
ENGAGEMENT = """\
name: engagement
tiers:
  - {name: high, where: {event: login, within: 7d}}
  - {name: low}
"""
LONG = "a_long_spec_name_of_forty_characters_xxx"  # with a 26-character tier: 68 > 63
BASE = {
    "_catalog.yml": CATALOG,
    "_traits.yml": TRAITS,
    "_destinations.yml": DESTINATIONS,
    "buyers.yml": BUYERS,
    "engagement.yml": ENGAGEMENT,
    "uploads/vip.csv": "email,note\na@example.com,x\n",
}


def write(root: Path, files: dict[str, str | None]) -> Path:
    """Write ``BASE`` then ``files`` (None deletes a base file) under root/specs."""
    specs = root / "specs"
    for name, text in {**BASE, **files}.items():
        if text is None:
            continue
        path = specs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return specs


def errors_of(root: Path, files: dict[str, str | None]) -> list[str]:
    """Every error of the project, as ``file:line:col: message`` relative to specs/."""
    specs = write(root, files)
    with pytest.raises(SpecErrors) as raised:
        load_project(specs)
    return [str(error).replace(f"{specs}/", "") for error in raised.value.errors]


def segment(body: str) -> dict[str, str | None]:
    """A case made of one spec file ``s.yml`` whose first line is ``name: s``."""
    return {"s.yml": "name: s\n" + textwrap.dedent(body)}


CASES: list[tuple[str, dict[str, str | None], str, str]] = [
    # --- unknown keys and names, with the closest valid one ----------------------------
    (
        "unknown_key",
        segment("where:\n  event: login\n  withn: 7d\n"),
        "s.yml:4:3",
        "unknown key 'withn' (did you mean 'within'?)",
    ),
    (
        "unknown_top_key",
        segment("where: {segment: buyers}\ndescripton: x\n"),
        "s.yml:3:1",
        "unknown key 'descripton' (did you mean 'description'?)",
    ),
    (
        "misspelt_condition_kind",
        segment("where:\n  atribute: city\n  is: Paris\n"),
        "s.yml:3:3",
        "unknown key 'atribute' (did you mean 'attribute'?)",
    ),
    (
        "no_condition_kind",
        segment("where: {}\n"),
        "s.yml:2:8",
        "a condition needs one of: all, any, not, attribute",
    ),
    (
        "unknown_attribute",
        segment("where:\n  attribute: cty\n  is: Paris\n"),
        "s.yml:3:14",
        "unknown attribute 'cty' (did you mean 'city'?)",
    ),
    (
        "unknown_property",
        segment("where:\n  event: page_view\n  where: {property: pth, is: /}\n"),
        "s.yml:4:21",
        "unknown property 'pth' (did you mean 'path'?)",
    ),
    (
        "unknown_trait",
        segment("where: {trait: orders_356d, gt: 1}\n"),
        "s.yml:2:16",
        "unknown trait 'orders_356d' (did you mean 'orders_365d'?)",
    ),
    (
        "unknown_segment",
        segment("where: {segment: buyer}\n"),
        "s.yml:2:18",
        "unknown segment 'buyer' (did you mean 'buyers'?)",
    ),
    (
        "tiered_spec_is_no_segment",
        segment("where: {segment: engagement}\n"),
        "s.yml:2:18",
        "'engagement' has tiers and is not a segment itself; refer to one of: "
        "engagement__high, engagement__low",
    ),
    (
        "unknown_tier",
        segment("where: {segment: engagement__hgh}\n"),
        "s.yml:2:18",
        "(did you mean 'engagement__high'?)",
    ),
    (
        "unknown_destination",
        segment("where: {segment: buyers}\nsync:\n  - destination: intercom_mian\n"),
        "s.yml:4:18",
        "unknown destination 'intercom_mian' (did you mean 'intercom_main'?)",
    ),
    (
        "no_destinations_file",
        {
            **segment("where: {segment: buyers}\nsync: [{destination: x}]\n"),
            "_destinations.yml": None,
        },
        "s.yml:3:22",
        "unknown destination 'x' (none are defined: add it to _destinations.yml)",
    ),
    (
        "unknown_match_on",
        segment("upload: {file: uploads/vip.csv, match_on: emial}\n"),
        "s.yml:2:43",
        "unknown match_on 'emial' (did you mean 'email'?)",
    ),
    (
        "unknown_config_file",
        {"_trait.yml": "traits: {}\n"},
        "_trait.yml:1:1",
        "unknown configuration file '_trait.yml' (did you mean '_traits.yml'?)",
    ),
    # --- values that do not fit the type -----------------------------------------------
    (
        "number_for_string",
        segment("where:\n  attribute: city\n  contains: 49\n"),
        "s.yml:4:13",
        "quote it ('49')",
    ),
    (
        "boolean_for_string",
        segment("where: {attribute: city, in: [Paris, yes]}\n"),
        "s.yml:2:38",
        "got boolean yes: quote it ('yes')",
    ),
    (
        "text_for_number",
        segment("where: {attribute: lifetime_value, gt: abc}\n"),
        "s.yml:2:40",
        "must be a number, got text 'abc'",
    ),
    (
        "quoted_number",
        segment("where: {attribute: lifetime_value, gt: '5'}\n"),
        "s.yml:2:40",
        "remove the quotes",
    ),
    (
        "boolean_is_not_number",
        segment("where: {attribute: lifetime_value, lt: true}\n"),
        "s.yml:2:40",
        "must be a number, got boolean true",
    ),
    (
        "text_for_boolean",
        segment("where: {attribute: is_vip, is: 'true'}\n"),
        "s.yml:2:32",
        "must be true or false, got text 'true'",
    ),
    (
        "null_value",
        segment("where: {attribute: city, is: null}\n"),
        "s.yml:2:30",
        "use is_set: false",
    ),
    (
        "in_needs_list",
        segment("where: {attribute: city, in: Paris}\n"),
        "s.yml:2:30",
        "must be a list",
    ),
    (
        "between_two_values",
        segment("where: {attribute: lifetime_value, between: [1, 2, 3]}\n"),
        "s.yml:2:45",
        "exactly 2 values",
    ),
    (
        "is_set_boolean",
        segment("where: {attribute: city, is_set: 1}\n"),
        "s.yml:2:34",
        "must be true or false",
    ),
    (
        "value_not_in_catalog",
        segment("where: {attribute: plan, is: entreprise}\n"),
        "s.yml:2:30",
        "'entreprise' is not an allowed value of attribute 'plan' (did you mean 'enterprise'?)",
    ),
    (
        "in_value_not_in_catalog",
        segment("where: {attribute: plan, not_in: [free, pri]}\n"),
        "s.yml:2:41",
        "(did you mean 'pro'?)",
    ),
    (
        "timestamp_value",
        segment("where: {attribute: signup_at, is: 12}\n"),
        "s.yml:2:35",
        "must be a time",
    ),
    (
        "measure_value_type",
        segment("where: {event: login, count: {gte: '3'}}\n"),
        "s.yml:2:36",
        "count (number) must be a number",
    ),
    (
        "min_of_timestamp_is_time",
        {
            "_catalog.yml": CATALOG + "    seen_at: {type: timestamp}\n",
            **segment("where: {event: login, min: {property: seen_at, is: 5}}\n"),
        },
        "s.yml:2:52",
        "must be a time",
    ),
    # --- operators ------------------------------------------------------------------------
    (
        "wrong_operator_for_type",
        segment("where:\n  attribute: lifetime_value\n  contains: x\n"),
        "s.yml:4:3",
        "operator 'contains' does not apply to attribute 'lifetime_value' (number); "
        "use one of: is, is_not, in, not_in, is_set, gt",
    ),
    (
        "wrong_operator_for_trait",
        segment("where: {trait: last_order_at, gt: 1}\n"),
        "s.yml:2:31",
        "operator 'gt' does not apply to trait 'last_order_at' (timestamp)",
    ),
    (
        "wrong_operator_for_measure",
        segment("where: {event: login, count: {within: 7d}}\n"),
        "s.yml:2:31",
        "operator 'within' does not apply to count (number)",
    ),
    (
        "two_operators",
        segment("where:\n  attribute: lifetime_value\n  gt: 1\n  lt: 5\n"),
        "s.yml:5:3",
        "exactly one operator per condition, found 'gt' and 'lt'",
    ),
    (
        "no_operator",
        segment("where:\n  attribute: city\n"),
        "s.yml:3:3",
        "attribute 'city' needs an operator",
    ),
    (
        "misspelt_where",
        segment("whre: {segment: buyers}\n"),
        "s.yml:2:1",
        "unknown key 'whre' (did you mean 'where'?)",
    ),
    (
        "misspelt_operator",
        segment("where: {attribute: signup_at, withn: 7d}\n"),
        "s.yml:2:31",
        "unknown key 'withn' (did you mean 'within'?)",
    ),
    (
        "ignore_case_on_number",
        segment("where: {attribute: lifetime_value, is: 1, ignore_case: true}\n"),
        "s.yml:2:43",
        "ignore_case only applies to text",
    ),
    (
        "ignore_case_with_is_set",
        segment("where: {attribute: city, is_set: true, ignore_case: true}\n"),
        "s.yml:2:40",
        "ignore_case only applies to text",
    ),
    (
        "ignore_case_not_boolean",
        segment("where: {attribute: city, is: x, ignore_case: 1}\n"),
        "s.yml:2:46",
        "ignore_case must be true or false",
    ),
    # --- durations and times ---------------------------------------------------------------
    (
        "bad_duration",
        segment("where: {event: login, within: 7days}\n"),
        "s.yml:2:31",
        "invalid duration '7days'",
    ),
    (
        "duration_without_unit",
        segment("where: {event: login, within: 30}\n"),
        "s.yml:2:31",
        "add a unit, e.g. 30d",
    ),
    (
        "bad_duration_operator",
        segment("where: {attribute: signup_at, not_within: 2 weeks}\n"),
        "s.yml:2:43",
        "invalid duration '2 weeks'",
    ),
    (
        "bad_time",
        segment("where: {event: login, before: yesterday}\n"),
        "s.yml:2:31",
        "invalid time 'yesterday'",
    ),
    (
        "bad_date",
        segment("where: {attribute: signup_at, after: '2024-02-30'}\n"),
        "s.yml:2:38",
        "invalid time '2024-02-30'",
    ),
    (
        "bad_relative_time",
        segment("where: {event: login, after: now - 7}\n"),
        "s.yml:2:30",
        "offset after 'now -'",
    ),
    (
        "between_two_times",
        segment("where: {event: login, between: [2024-01-01]}\n"),
        "s.yml:2:32",
        "between takes exactly 2 times",
    ),
    # --- event conditions ------------------------------------------------------------------
    (
        "two_windows",
        segment("where:\n  event: login\n  within: 7d\n  before: now\n"),
        "s.yml:5:3",
        "at most one window: found 'within' and 'before'",
    ),
    (
        "two_measures",
        segment("where:\n  event: login\n  count: {gte: 1}\n  active_days: {gte: 2}\n"),
        "s.yml:5:3",
        "at most one measure: found 'count' and 'active_days'",
    ),
    (
        "both_sequences",
        segment("where:\n  event: a\n  followed_by: {event: b}\n  not_followed_by: {event: c}\n"),
        "s.yml:5:3",
        "followed_by or not_followed_by, not both",
    ),
    ("empty_event_list", segment("where: {event: []}\n"), "s.yml:2:16", "at least one event name"),
    (
        "numeric_event_name",
        segment("where: {event: 404}\n"),
        "s.yml:2:16",
        "an event name must be text, got number 404: quote it",
    ),
    (
        "sum_of_text_property",
        segment("where: {event: page_view, sum: {property: path, gt: 1}}\n"),
        "s.yml:2:43",
        "sum needs a number property; property 'path' is string",
    ),
    (
        "sum_needs_property",
        segment("where: {event: purchase, sum: {gt: 1}}\n"),
        "s.yml:2:31",
        "sum needs 'property'",
    ),
    (
        "sequence_unknown_key",
        segment("where: {event: a, not_followed_by: {event: b, withn: 1d}}\n"),
        "s.yml:2:47",
        "unknown key 'withn' (did you mean 'within'?)",
    ),
    (
        "property_outside_event",
        segment("where: {property: path, is: /}\n"),
        "s.yml:2:9",
        "'property' conditions are only allowed inside an event's where",
    ),
    (
        "attribute_inside_event",
        segment("where:\n  event: login\n  where: {attribute: city, is: x}\n"),
        "s.yml:4:11",
        "'attribute' is not allowed in an event's where",
    ),
    (
        "two_kinds",
        segment("where: {attribute: city, event: login}\n"),
        "s.yml:2:26",
        "a condition has exactly one kind: found 'attribute' and 'event'",
    ),
    (
        "all_needs_list",
        segment("where: {all: {segment: buyers}}\n"),
        "s.yml:2:14",
        "'all' must be a list",
    ),
    # --- segment files -----------------------------------------------------------------------
    (
        "missing_where",
        segment("description: nothing to match\n"),
        "s.yml:1:1",
        "needs 'where' (or 'upload', 'tiers' or 'priority')",
    ),
    (
        "name_is_not_stem",
        {"s.yml": "name: t\nwhere: {segment: buyers}\n"},
        "s.yml:1:7",
        "name 't' must equal the file name stem 's'",
    ),
    ("missing_name", {"s.yml": "where: {segment: buyers}\n"}, "s.yml:1:1", "needs 'name'"),
    (
        "invalid_name",
        {"Bad.yml": "name: Bad\nwhere: {segment: buyers}\n"},
        "Bad.yml:1:7",
        "invalid segment name 'Bad'",
    ),
    (
        "duplicate_key",
        segment("where: {segment: buyers}\nwhere: {segment: buyers}\n"),
        "s.yml:3:1",
        "duplicate key 'where'",
    ),
    (
        "duplicate_name_yaml",
        {"buyers.yaml": BUYERS},
        "buyers.yml:1:7",
        "duplicate segment name 'buyers' (also defined at",
    ),
    (
        "duplicate_name_across_folders",
        {"growth/buyers.yml": BUYERS},
        "growth/buyers.yml:1:7",
        "duplicate segment name 'buyers' (also defined at buyers.yml:1:7)",
    ),
    (
        "duplicate_name_in_two_subfolders",
        {"growth/s.yml": "name: s\nwhere: {segment: buyers}\n", "crm/s.yml": "name: s\nwhere: {segment: buyers}\n"},
        "growth/s.yml:1:7",
        "duplicate segment name 's' (also defined at crm/s.yml:1:7)",
    ),
    (
        "subfolder_name_is_the_stem",
        {"growth/s.yml": "name: t\nwhere: {segment: buyers}\n"},
        "growth/s.yml:1:7",
        "name 't' must equal the file name stem 's'",
    ),
    (
        "subfolder_spec_is_checked",
        {"growth/s.yml": "name: s\nwhere: {segment: buyrs}\n"},
        "growth/s.yml:2:18",
        "unknown segment 'buyrs' (did you mean 'buyers'?)",
    ),
    (
        "config_file_in_subfolder",
        {"growth/_traits.yml": TRAITS},
        "growth/_traits.yml:1:1",
        "belong at the top of",
    ),
    (
        "event_is_not_boolean",
        segment("where: {event: login, is: 1}\n"),
        "s.yml:2:27",
        "is on an event condition takes true (occurred) or false (never), got number 1; "
        "to test how many times, write count: {gte: 1}",
    ),
    (
        "event_is_and_count",
        segment("where: {event: login, is: true, count: {gte: 2}}\n"),
        "s.yml:2:33",
        "an event condition has at most one measure: found 'is' and 'count'",
    ),
    (
        "event_is_false_and_sequence",
        segment("where: {event: login, is: false, followed_by: {event: buy}}\n"),
        "s.yml:2:23",
        "is: false (never occurred) cannot be combined with followed_by",
    ),
    (
        "event_is_string",
        segment("where: {event: login, is: 'yes please'}\n"),
        "s.yml:2:27",
        "write count: {gte: 1}",
    ),
    (
        "timestamp_between_three",
        segment("where: {attribute: signup_at, between: [2024-01-01, now, now]}\n"),
        "s.yml:2:40",
        "'between' on attribute 'signup_at' takes exactly 2 values [start, end], got 3",
    ),
    (
        "timestamp_between_number",
        segment("where: {attribute: signup_at, between: [1, now]}\n"),
        "s.yml:2:41",
        "(timestamp)",
    ),
    (
        "boolean_between",
        segment("where: {attribute: is_vip, between: [true, false]}\n"),
        "s.yml:2:28",
        "operator 'between' does not apply to attribute 'is_vip' (boolean)",
    ),
    (
        "tier_name_collides",
        {"engagement__high.yml": "name: engagement__high\nwhere: {segment: buyers}\n"},
        "engagement__high.yml:1:7",
        "duplicate segment name 'engagement__high'",
    ),
    (
        "holdout_range",
        segment("where: {segment: buyers}\nholdout: 60\n"),
        "s.yml:3:10",
        "holdout must be a percent between 0 and 50, got 60",
    ),
    (
        "holdout_type",
        segment("where: {segment: buyers}\nholdout: ten\n"),
        "s.yml:3:10",
        "holdout must be a number",
    ),
    (
        "checks_mapping",
        segment("where: {segment: buyers}\nchecks: 20\n"),
        "s.yml:3:9",
        "checks must be a mapping, got number 20",
    ),
    (
        "checks_unknown_key",
        segment("where: {segment: buyers}\nchecks: {max_size_change: 20}\n"),
        "s.yml:3:10",
        "unknown key 'max_size_change' (did you mean 'max_size_change_pct'?)",
    ),
    (
        "checks_size_change_positive",
        segment("where: {segment: buyers}\nchecks: {max_size_change_pct: 0}\n"),
        "s.yml:3:31",
        "max_size_change_pct must be a positive percent, got 0",
    ),
    (
        "checks_size_change_type",
        segment("where: {segment: buyers}\nchecks: {max_size_change_pct: lots}\n"),
        "s.yml:3:31",
        "max_size_change_pct must be a number",
    ),
    (
        "cron_fields",
        segment("where: {segment: buyers}\nrefresh: 0 6 * *\n"),
        "s.yml:3:10",
        "expected 5 fields",
    ),
    (
        "cron_range",
        segment("where: {segment: buyers}\nrefresh: '0 25 * * *'\n"),
        "s.yml:3:10",
        "hour '25' is out of range 0-23",
    ),
    (
        "cron_characters",
        segment("where: {segment: buyers}\nrefresh: '0 6 * * ?'\n"),
        "s.yml:3:10",
        "invalid day of week '?'",
    ),
    (
        "tags_list",
        segment("where: {segment: buyers}\ntags: whatsapp\n"),
        "s.yml:3:7",
        "tags must be a list",
    ),
    ("yaml_syntax", segment("where: {segment: buyers\n"), "s.yml:3:1", "invalid YAML"),
    ("empty_file", {"s.yml": ""}, "s.yml:1:1", "the file is empty"),
    (
        "not_a_mapping",
        {"s.yml": "- a\n- b\n"},
        "s.yml:1:1",
        "a segment spec must be a mapping, got a list",
    ),
    # --- tiers ---------------------------------------------------------------------------------
    (
        "tier_without_where_not_last",
        segment("tiers:\n  - {name: a}\n  - {name: b, where: {segment: buyers}}\n"),
        "s.yml:3:5",
        "only the last tier may omit where",
    ),
    (
        "duplicate_tier",
        segment("tiers:\n  - {name: a, where: {segment: buyers}}\n  - {name: a}\n"),
        "s.yml:4:12",
        "duplicate tier name 'a'",
    ),
    ("tier_name_rule", segment("tiers:\n  - {name: Hi}\n"), "s.yml:3:12", "invalid tier name 'Hi'"),
    (
        "tier_name_length",
        {f"{LONG}.yml": f"name: {LONG}\ntiers:\n  - {{name: a_tier_name_of_twenty_five}}\n"},
        f"{LONG}.yml:3:12",
        "is longer than 63 characters",
    ),
    (
        "tiers_and_upload",
        segment("upload: {file: uploads/vip.csv, match_on: email}\ntiers:\n  - {name: a}\n"),
        "s.yml:3:1",
        "upload and tiers cannot be combined",
    ),
    ("empty_tiers", segment("tiers: []\n"), "s.yml:2:8", "tiers needs at least one tier"),
    (
        "tier_unknown_key",
        segment("tiers:\n  - {name: a, wher: {segment: buyers}}\n"),
        "s.yml:3:15",
        "unknown key 'wher' (did you mean 'where'?)",
    ),
    # --- priority lists ------------------------------------------------------------------------
    ("priority_unknown_segment", segment("priority: [buyers, buyrs]\n"), "s.yml:2:20", "buyrs"),
    ("priority_twice", segment("priority: [buyers, buyers]\n"), "s.yml:2:20", "segment 'buyers' is listed twice in priority"),
    (
        "priority_of_a_tiered_spec",
        segment("priority: [engagement]\n"),
        "s.yml:2:12",
        "'engagement' has tiers and is not a segment itself",
    ),
    ("priority_and_where", segment("where: {segment: buyers}\npriority: [buyers]\n"), "s.yml:3:1",
     "where and priority cannot be combined"),
    ("priority_and_tiers", segment("tiers:\n  - {name: a}\npriority: [buyers]\n"), "s.yml:4:1",
     "tiers and priority cannot be combined"),
    ("empty_priority", segment("priority: []\n"), "s.yml:2:11", "priority needs at least one segment"),
    # --- uploads ---------------------------------------------------------------------------------
    (
        "upload_missing_file",
        segment("upload: {file: uploads/vp.csv, match_on: email}\n"),
        "s.yml:2:16",
        "upload file 'uploads/vp.csv' not found",
    ),
    (
        "upload_missing_column",
        {
            **segment("upload: {file: uploads/x.csv, match_on: email}\n"),
            "uploads/x.csv": "e_mail,note\na@b.c,\n",
        },
        "s.yml:2:16",
        "has no column 'email' in its header row (2 columns)",
    ),
    (
        "upload_empty_csv",
        {**segment("upload: {file: uploads/x.csv, match_on: email}\n"), "uploads/x.csv": ""},
        "s.yml:2:16",
        "is empty: it needs a header row",
    ),
    (
        "upload_needs_match_on",
        segment("upload: {file: uploads/vip.csv}\n"),
        "s.yml:2:9",
        "upload needs 'match_on'",
    ),
    # --- cycles ----------------------------------------------------------------------------------
    (
        "cycle",
        {"a.yml": "name: a\nwhere: {segment: b}\n", "b.yml": "name: b\nwhere: {segment: a}\n"},
        "a.yml:2:18",
        "segment cycle: a -> b -> a",
    ),
    ("self_cycle", segment("where: {not: {segment: s}}\n"), "s.yml:2:24", "segment cycle: s -> s"),
    (
        "tier_cycle",
        segment("tiers:\n  - {name: a, where: {segment: s__b}}\n  - {name: b}\n"),
        "s.yml:3:32",
        "segment cycle: s__b -> s__b",
    ),
    # --- _catalog.yml ----------------------------------------------------------------------------
    (
        "catalog_type",
        {"_catalog.yml": CATALOG.replace("city: {type: string}", "city: {type: strng}")},
        "_catalog.yml:8:18",
        "unknown type 'strng' (did you mean 'string'?)",
    ),
    (
        "catalog_values_on_number",
        {
            "_catalog.yml": CATALOG.replace(
                "{type: number}\nevents", "{type: number, values: [a]}\nevents"
            )
        },
        "_catalog.yml:12:36",
        "values only applies to string columns",
    ),
    (
        "catalog_value_not_text",
        {"_catalog.yml": CATALOG.replace("[free, pro, enterprise]", "[free, no]")},
        "_catalog.yml:9:41",
        "a value must be text, got boolean no: quote it",
    ),
    (
        "catalog_unknown_key",
        {"_catalog.yml": CATALOG.replace("  key: user_id", "  kye: user_id")},
        "_catalog.yml:3:3",
        "unknown key 'kye' (did you mean 'key'?)",
    ),
    (
        "catalog_table",
        {"_catalog.yml": CATALOG.replace("raw.users", "a.b.users")},
        "_catalog.yml:2:10",
        "invalid table 'a.b.users'",
    ),
    (
        "catalog_identifier",
        {"_catalog.yml": CATALOG.replace("name: event_name", "name: event-name")},
        "_catalog.yml:16:9",
        "invalid name 'event-name'",
    ),
    (
        "catalog_timezone_misspelt",
        {"_catalog.yml": CATALOG + "timezone: Asia/Kolkatta\n"},
        f"_catalog.yml:{CATALOG.count(chr(10)) + 1}:11",
        "unknown timezone 'Asia/Kolkatta' (did you mean 'Asia/Kolkata'?)",
    ),
    (
        "catalog_timezone_city_alone",
        {"_catalog.yml": CATALOG + "timezone: kolkata\n"},
        f"_catalog.yml:{CATALOG.count(chr(10)) + 1}:11",
        "unknown timezone 'kolkata' (did you mean 'Asia/Kolkata'?)",
    ),
    (
        "catalog_timezone_not_a_zone",
        {"_catalog.yml": CATALOG + "timezone: \"'; DROP TABLE x; --\"\n"},
        f"_catalog.yml:{CATALOG.count(chr(10)) + 1}:11",
        "unknown timezone ''; DROP TABLE x; --' (expected an IANA name such as Europe/Paris",
    ),
    (
        "catalog_timezone_path",
        {"_catalog.yml": CATALOG + "timezone: ../../etc/passwd\n"},
        f"_catalog.yml:{CATALOG.count(chr(10)) + 1}:11",
        "unknown timezone '../../etc/passwd'",
    ),
    (
        "catalog_timezone_number",
        {"_catalog.yml": CATALOG + "timezone: 5\n"},
        f"_catalog.yml:{CATALOG.count(chr(10)) + 1}:11",
        "timezone must be text, got number 5",
    ),
    # --- _traits.yml -----------------------------------------------------------------------------
    (
        "trait_unknown_quantile",
        {"_traits.yml": TRAITS + "  x: {quantile: order_365d, buckets: 3}\n"},
        "_traits.yml:5:17",
        "unknown trait 'order_365d' (did you mean 'orders_365d'?)",
    ),
    (
        "trait_cycle",
        {
            "_traits.yml": TRAITS
            + "  x: {quantile: y, buckets: 3}\n  y: {quantile: x, buckets: 3}\n"
        },
        "_traits.yml:5:17",
        "trait cycle: x -> y -> x",
    ),
    (
        "trait_count_false",
        {"_traits.yml": TRAITS + "  x: {event: a, count: false}\n"},
        "_traits.yml:5:24",
        "a trait's measure is written 'count: true'",
    ),
    (
        "trait_buckets",
        {"_traits.yml": TRAITS + "  x: {quantile: orders_365d, buckets: 0}\n"},
        "_traits.yml:5:39",
        "buckets must be a whole number >= 1",
    ),
    (
        "trait_sum_of_text",
        {"_traits.yml": TRAITS + "  x: {event: a, sum: path}\n"},
        "_traits.yml:5:22",
        "sum needs a number property",
    ),
    (
        "trait_no_measure",
        {"_traits.yml": TRAITS + "  x: {event: a, within: 7d}\n"},
        "_traits.yml:5:6",
        "trait 'x' needs a measure",
    ),
    (
        "trait_reserved_name",
        {"_traits.yml": TRAITS + "  user_id: {event: a, count: true}\n"},
        "_traits.yml:5:3",
        "'user_id' is reserved",
    ),
    (
        "trait_unknown_key",
        {"_traits.yml": TRAITS + "  x: {event: a, count: true, withn: 7d}\n"},
        "_traits.yml:5:30",
        "unknown key 'withn' (did you mean 'within'?)",
    ),
    (
        "trait_no_traits_file",
        {**segment("where: {trait: orders, gt: 1}\n"), "_traits.yml": None},
        "s.yml:2:16",
        "unknown trait 'orders' (none are defined: add it to _traits.yml)",
    ),
    (
        "trait_segment_style_measure",
        {"_traits.yml": TRAITS + "  x: {event: a, sum: {property: amount, gt: 1}}\n"},
        "_traits.yml:5:22",
        "a trait's measure is written 'sum: PROPERTY', got a mapping",
    ),
    (
        "empty_event_name",
        segment("where: {event: [a, '']}\n"),
        "s.yml:2:20",
        "an event name must not be empty",
    ),
    # --- _destinations.yml ---------------------------------------------------------------
    (
        "destination_type",
        {"_destinations.yml": DESTINATIONS + "  hook: {type: webhok, url: x}\n"},
        "_destinations.yml:3:16",
        "unknown destination type 'webhok' (did you mean 'webhook'?)",
    ),
    (
        "destination_requires",
        {"_destinations.yml": DESTINATIONS + "  w: {type: wati, requires: city}\n"},
        "_destinations.yml:3:29",
        "requires needs a boolean attribute",
    ),
    (
        "destination_max_remove",
        {"_destinations.yml": DESTINATIONS + "  w: {type: wati, max_remove_pct: 150}\n"},
        "_destinations.yml:3:35",
        "between 0 and 100",
    ),
]


@pytest.mark.parametrize(
    ("files", "where", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error(tmp_path: Path, files: dict[str, str | None], where: str, message: str) -> None:
    errors = errors_of(tmp_path, files)
    # One mistake gives one error: no noise from what follows it.
    assert len(errors) == 1, "\n".join(errors)
    assert errors[0].startswith(f"{where}: ") and message in errors[0], errors[0]


def test_base_project_is_valid(tmp_path: Path) -> None:
    # Every case above is the base plus one mistake: the base itself must pass.
    project = load_project(write(tmp_path, {}))
    assert project.segment_names() == ("buyers", "engagement__high", "engagement__low")


def test_specs_in_subfolders_are_read_and_underscore_folders_skipped(tmp_path: Path) -> None:
    project = load_project(
        write(
            tmp_path,
            {
                "growth/churn/late.yml": "name: late\nwhere: {segment: buyers}\n",
                "crm/vip.yaml": "name: vip\nwhere: {attribute: is_vip, is: true}\n",
                # Skipped, as before: drafts, hidden folders and files, and CSVs.
                "_drafts/broken.yml": "name: nope\n: [\n",
                ".git/x.yml": "not: a spec\n",
                "crm/.wip.yml": "name: wip\n",
            },
        )
    )
    assert project.segment_names() == ("buyers", "engagement__high", "engagement__low", "late", "vip")
    late = project.spec("late")
    assert late.path.parts[-3:] == ("growth", "churn", "late.yml")


def test_every_file_reports_in_one_run(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        {
            "_catalog.yml": CATALOG.replace("{type: boolean}", "{type: bool}"),
            "_traits.yml": TRAITS + "  x: {quantile: nope, buckets: 2}\n",
            "a.yml": "name: a\nwhere: {attribute: cty, is: x}\n",
            "b.yml": "name: b\nwhere: {event: login, within: 7days}\nholdout: 99\n",
            "c.yml": "name: c\nwhere: {segment: zzz}\n",
        },
    )
    files = {error.split(":", 1)[0] for error in errors}
    assert files == {"_catalog.yml", "_traits.yml", "a.yml", "b.yml", "c.yml"}, errors
    assert len([e for e in errors if e.startswith("b.yml")]) == 2


def test_missing_catalog_still_checks_other_files(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        {
            "_catalog.yml": None,
            "a.yml": "name: a\nwhere: {attribute: anything, is: x}\nholdout: 80\n",
            "b.yml": "name: b\nwhere: {segment: nope}\n",
        },
    )
    assert errors[0].startswith("_catalog.yml:1:1: missing _catalog.yml")
    # Without a catalog, attribute names cannot be checked, everything else is.
    assert not any("unknown attribute" in e for e in errors)
    assert any(e.startswith("a.yml:3:10: holdout") for e in errors)
    assert any(e.startswith("b.yml:2:18: unknown segment 'nope'") for e in errors)


def test_broken_catalog_still_checks_other_files(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        {
            "_catalog.yml": "users: [\n",
            "a.yml": "name: a\nwhere: {event: login, within: 7days}\n",
        },
    )
    assert [e.split(":")[0] for e in errors] == ["_catalog.yml", "a.yml"]


def test_missing_specs_dir(tmp_path: Path) -> None:
    with pytest.raises(SpecErrors, match="specs directory not found"):
        load_project(tmp_path / "nowhere")


def test_errors_are_sorted_and_printable(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        {"b.yml": "name: b\nwhere: {segment: x}\n", "a.yml": "name: a\nwhere: {segment: y}\n"},
    )
    assert errors == sorted(errors)


# ---- uploads stay inside the specs folder and their content is never echoed -----------

SECRET_LINE = "SEGMENTS_SECRET_TOKEN=hunter2-do-not-print"


@pytest.mark.parametrize(
    ("file_text", "message"),
    [
        ("{outside}", "must be a path inside the specs folder"),
        ("../outside.csv", "must be a path inside the specs folder"),
        ("uploads/../../outside.csv", "must be a path inside the specs folder"),
        ("uploads/link.csv", "leads outside the specs folder"),
        ("uploads/linked_dir/outside.csv", "leads outside the specs folder"),
    ],
    ids=["absolute", "dotdot", "dotdot_inside_path", "symlink_file", "symlink_dir"],
)
def test_upload_files_outside_the_specs_folder_are_refused_unread(tmp_path: Path, file_text: str, message: str) -> None:
    outside = tmp_path / "outside.csv"
    # a header naming the match_on column: reading it would have succeeded
    outside.write_text(f"email,{SECRET_LINE}\na@example.com,x\n", encoding="utf-8")
    root = tmp_path / "project"
    specs = write(root, {**segment(f"upload: {{file: '{file_text.format(outside=outside)}', match_on: email}}\n")})
    (specs / "uploads" / "link.csv").symlink_to(outside)
    (specs / "uploads" / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(SpecErrors) as raised:
        load_project(specs)
    errors = [str(e) for e in raised.value.errors]
    assert len(errors) == 1 and message in errors[0], errors
    assert "hunter2" not in errors[0]


def test_a_symlink_inside_the_specs_folder_is_followed(tmp_path: Path) -> None:
    specs = write(tmp_path, segment("upload: {file: uploads/alias.csv, match_on: email}\n"))
    (specs / "uploads" / "alias.csv").symlink_to(specs / "uploads" / "vip.csv")
    project = load_project(specs)
    (spec,) = [s for s in project.segments if s.name == "s"]
    assert spec.upload.keys == ("a@example.com",)


@pytest.mark.parametrize(
    "content",
    [f"{SECRET_LINE},other\n1,2\n", "email\n" + SECRET_LINE * 9000, "\xff\xfe" + SECRET_LINE],
    ids=["no_column", "field_over_limit", "not_utf8"],
)
def test_upload_errors_never_echo_file_content(tmp_path: Path, content: str) -> None:
    specs = write(tmp_path, segment("upload: {file: uploads/bad.csv, match_on: email}\n"))
    (specs / "uploads" / "bad.csv").write_bytes(content.encode("latin-1"))
    with pytest.raises(SpecErrors) as raised:
        load_project(specs)
    errors = [str(e) for e in raised.value.errors]
    assert errors and all("hunter2" not in e and "SEGMENTS_SECRET" not in e for e in errors), errors
