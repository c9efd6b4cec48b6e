"""Tests of the demo data generator (segments.demo_data)."""

from __future__ import annotations

import csv
import datetime as dt
import doctest
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

import segments.demo_data as demo_data
from segments.demo_data import (
    EVENTS_SCHEMA,
    USERS_SCHEMA,
    DemoData,
    generate,
    write_duckdb,
    write_files,
)

SPECS_DIR = Path(__file__).resolve().parents[1] / "segment_specs"
ANCHOR = dt.datetime(2025, 3, 1)
USERS = 2000
CATALOG_TO_DUCKDB = {
    "string": "VARCHAR",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate(users=USERS, seed=7, anchor=ANCHOR)


@pytest.fixture(scope="module")
def catalog() -> dict:
    return yaml.safe_load((SPECS_DIR / "_catalog.yml").read_text())


def catalog_users_types(catalog: dict) -> dict[str, str]:
    users = catalog["users"]
    types = {users["key"]: "VARCHAR", users["created_at"]: "TIMESTAMP"}
    types.update({name: CATALOG_TO_DUCKDB[a["type"]] for name, a in users["attributes"].items()})
    return types


def catalog_events_types(catalog: dict) -> dict[str, str]:
    events = catalog["events"]
    types = {
        events["user_key"]: "VARCHAR",
        events["name"]: "VARCHAR",
        events["timestamp"]: "TIMESTAMP",
    }
    for name, prop in events["properties"].items():
        types[prop.get("column", name)] = CATALOG_TO_DUCKDB[prop["type"]]
    return types


def is_text(series: pd.Series) -> bool:
    if isinstance(series.dtype, pd.CategoricalDtype):
        return pd.api.types.is_string_dtype(series.cat.categories)
    return pd.api.types.is_string_dtype(series)


PANDAS_CHECKS = {
    "VARCHAR": is_text,
    "DOUBLE": pd.api.types.is_float_dtype,
    "BOOLEAN": pd.api.types.is_bool_dtype,
    "TIMESTAMP": pd.api.types.is_datetime64_dtype,
    "BIGINT": pd.api.types.is_integer_dtype,
}


# --- determinism -----------------------------------------------------------------------


def test_same_arguments_give_identical_frames(data: DemoData) -> None:
    again = generate(users=USERS, seed=7, anchor=ANCHOR)
    pd.testing.assert_frame_equal(again.users, data.users)
    pd.testing.assert_frame_equal(again.events, data.events)


def test_another_seed_gives_other_data(data: DemoData) -> None:
    other = generate(users=USERS, seed=8, anchor=ANCHOR)
    assert not other.users.equals(data.users)
    assert not other.events.equals(data.events)


def test_user_attributes_do_not_depend_on_the_anchor(data: DemoData) -> None:
    later = generate(users=USERS, seed=7, anchor=ANCHOR + dt.timedelta(days=40))
    for column in ("user_id", "email", "phone", "city", "plan", "is_vip"):
        pd.testing.assert_series_equal(later.users[column], data.users[column])
    shift = pd.Timedelta(days=40)
    pd.testing.assert_series_equal(later.users["signup_at"], data.users["signup_at"] + shift)


def test_a_larger_demo_extends_a_smaller_one() -> None:
    # Crosses a block boundary of the users' draws (demo_data.USER_BLOCK_ROWS).
    rows = demo_data.USER_BLOCK_ROWS + 10
    larger = generate(users=rows + 500, seed=7, anchor=ANCHOR).users.head(rows)
    smaller = generate(users=rows, seed=7, anchor=ANCHOR).users
    for column in USERS_SCHEMA:
        if column != "lifetime_value":  # follows the events, drawn for all users at once
            pd.testing.assert_series_equal(larger[column], smaller[column])


# --- shape and types against the catalog -------------------------------------------


def test_schemas_match_the_catalog(catalog: dict) -> None:
    assert catalog["users"]["table"] == "raw.users" and catalog["events"]["table"] == "raw.events"
    assert USERS_SCHEMA == catalog_users_types(catalog)
    events_schema = dict(EVENTS_SCHEMA)
    assert events_schema.pop("event_id") == "BIGINT"  # an extra column, not in the catalog
    assert events_schema == catalog_events_types(catalog)


def test_frames_have_the_catalog_columns_and_dtypes(data: DemoData) -> None:
    for frame, schema in ((data.users, USERS_SCHEMA), (data.events, EVENTS_SCHEMA)):
        assert list(frame.columns) == list(schema)
        for column, duckdb_type in schema.items():
            assert PANDAS_CHECKS[duckdb_type](frame[column]), (column, frame[column].dtype)


def test_values_stay_within_the_catalog_lists(data: DemoData, catalog: dict) -> None:
    for name, attribute in catalog["users"]["attributes"].items():
        if "values" in attribute:
            assert set(data.users[name].dropna()) <= set(attribute["values"]), name


def test_keys_are_unique_and_present(data: DemoData) -> None:
    users, events = data.users, data.events
    assert users["user_id"].notna().all() and users["user_id"].is_unique
    assert users["user_id"].str.fullmatch(r"u\d{7}").all()
    assert events["event_id"].is_unique and (events["event_id"] > 0).all()
    for column in ("user_id", "event_name", "occurred_at"):
        assert events[column].notna().all(), column


def test_events_belong_to_users_and_follow_their_signup(data: DemoData) -> None:
    events = data.events
    assert set(events["user_id"].astype(str)) <= set(data.users["user_id"])
    signup = data.users.set_index("user_id")["signup_at"]
    signup_of_event = signup.loc[events["user_id"].astype(str)].to_numpy()
    assert (events["occurred_at"].to_numpy() >= signup_of_event).all()


def test_every_event_is_in_the_year_before_the_anchor(data: DemoData) -> None:
    occurred = data.events["occurred_at"]
    assert occurred.max() < pd.Timestamp(ANCHOR)
    assert occurred.min() >= pd.Timestamp(ANCHOR - dt.timedelta(days=365))
    assert occurred.is_monotonic_increasing  # event_id follows time


def test_volume_is_skewed_around_twenty_events_per_user(data: DemoData) -> None:
    per_user = data.events.groupby("user_id", observed=False).size()
    assert 12 <= per_user.mean() <= 30
    assert per_user.median() < per_user.mean() / 2  # many light users, a few heavy ones
    assert per_user.max() > 10 * per_user.mean()


@pytest.mark.parametrize("window", ["48h", "7D", "15D", "30D"])
def test_recent_windows_have_active_users(data: DemoData, window: str) -> None:
    recent = data.events[data.events["occurred_at"] > pd.Timestamp(ANCHOR) - pd.Timedelta(window)]
    assert recent["user_id"].nunique() >= USERS * 0.05


def test_every_event_name_occurs(data: DemoData) -> None:
    assert set(data.events["event_name"]) == set(demo_data.EVENT_NAMES)


def test_signup_events_match_signup_at(data: DemoData) -> None:
    signups = data.events[data.events["event_name"] == "signup"]
    assert signups["user_id"].is_unique
    signup_at = data.users.set_index("user_id")["signup_at"]
    expected = signup_at.loc[signups["user_id"].astype(str)].to_numpy()
    assert (signups["occurred_at"].to_numpy() == expected).all()
    in_window = signup_at >= pd.Timestamp(ANCHOR - dt.timedelta(days=365))
    assert len(signups) == in_window.sum()


def test_amount_only_on_carts_and_purchases(data: DemoData) -> None:
    events = data.events
    priced = events["event_name"].isin(["cart_add", "purchase"])
    assert events.loc[priced, "amount"].notna().all() and (events.loc[priced, "amount"] > 0).all()
    assert events.loc[~priced, "amount"].isna().all()


def test_missing_values_are_where_expected(data: DemoData) -> None:
    users = data.users
    for column in ("email", "phone", "city", "lifetime_value", "whatsapp_opt_in"):
        assert 0.01 < users[column].isna().mean() < 0.2, column
    assert 1 <= users["created_at"].isna().sum() <= USERS * 0.01
    always_set = ("user_id", "first_name", "country", "language", "plan", "signup_at",
                  "acquisition_channel", "is_vip", "email_opt_in")
    for column in always_set:
        assert users[column].notna().all(), column


def test_new_users_and_untidy_contacts_exist(data: DemoData) -> None:
    users = data.users
    assert (users["created_at"] > pd.Timestamp(ANCHOR - dt.timedelta(days=1))).sum() >= 1
    assert (users["created_at"].dropna() <= pd.Timestamp(ANCHOR)).all()
    email = users["email"].dropna()
    trimmed = email.str.strip()
    assert (email != trimmed).any() and (trimmed != trimmed.str.lower()).any()
    phone = users["phone"].dropna()
    assert phone.str.startswith("+91 ").any() and phone.str.startswith("+91-").any()
    assert phone.str.startswith("0").any()


def test_country_follows_city(data: DemoData) -> None:
    country_of = {city: country for city, country, _, _ in demo_data.CITIES}
    known = data.users.dropna(subset=["city"])
    assert (known["city"].map(country_of) == known["country"]).all()
    assert known["city"].isin(["Mumbai", "Pune", "Nagpur"]).mean() > 0.2


def test_anchor_defaults_to_today_and_accepts_aware_datetimes() -> None:
    assert generate(users=5).anchor == demo_data.default_anchor()
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    aware = dt.datetime(2025, 1, 1, 5, 30, tzinfo=ist)
    assert generate(users=5, anchor=aware).anchor == dt.datetime(2025, 1, 1)


def test_edge_sizes() -> None:
    empty = generate(users=0, anchor=ANCHOR)
    assert empty.users.empty and empty.events.empty
    assert list(empty.events.columns) == list(EVENTS_SCHEMA)
    with pytest.raises(ValueError):
        generate(users=-1)


# --- writers -----------------------------------------------------------------------------


def test_write_duckdb_round_trip(data: DemoData) -> None:
    con = duckdb.connect()
    write_duckdb(data, con)
    write_duckdb(data, con)  # replaces, does not append
    for table, frame, schema in (
        ("raw.users", data.users, USERS_SCHEMA),
        ("raw.events", data.events, EVENTS_SCHEMA),
    ):
        described = {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}
        assert described == schema
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (len(frame),)
    nulls = con.execute(
        "SELECT count(*) FILTER (WHERE email IS NULL),"
        " count(*) FILTER (WHERE lifetime_value IS NULL),"
        " count(*) FILTER (WHERE whatsapp_opt_in IS NULL) FROM raw.users"
    ).fetchone()
    users = data.users
    assert nulls == (users["email"].isna().sum(), users["lifetime_value"].isna().sum(),
                     users["whatsapp_opt_in"].isna().sum())
    first = con.execute("SELECT * FROM raw.events ORDER BY event_id LIMIT 1").fetchone()
    row = data.events.iloc[0]
    occurred = row["occurred_at"].to_pydatetime()
    expected = (row["event_id"], row["user_id"], row["event_name"], occurred)
    assert first[:4] == expected


def test_write_duckdb_creates_other_schemas() -> None:
    con = duckdb.connect()
    small = generate(users=10, anchor=ANCHOR)
    write_duckdb(small, con, users_table="demo.people", events_table="activity")
    assert con.execute("SELECT count(*) FROM demo.people").fetchone() == (10,)
    assert con.execute("SELECT count(*) FROM activity").fetchone()[0] > 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_files(tmp_path: Path, fmt: str) -> None:
    small = generate(users=50, anchor=ANCHOR)
    users_path, events_path = write_files(small, tmp_path / "out", fmt=fmt)
    assert users_path.name == f"users.{fmt}" and events_path.name == f"events.{fmt}"
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM {reader}('{users_path}')").fetchone() == (50,)
    events_rows = con.execute(f"SELECT count(*) FROM {reader}('{events_path}')").fetchone()
    assert events_rows == (len(small.events),)
    described = con.execute(f"DESCRIBE SELECT * FROM {reader}('{events_path}')").fetchall()
    types = {row[0]: row[1] for row in described}
    assert types["occurred_at"] == "TIMESTAMP" and types["amount"] == "DOUBLE"


def test_write_files_rejects_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_files(generate(users=1, anchor=ANCHOR), tmp_path, fmt="xlsx")  # type: ignore


# --- the examples shipped with the generator -----------------------------------------------


def test_vip_upload_list_matches_the_default_demo_users() -> None:
    """``segment_specs/uploads/vip_list.csv`` was written from generate(users=5000, seed=7):
    user ids, so that no member data is committed."""
    with (SPECS_DIR / "uploads" / "vip_list.csv").open(newline="") as f:
        keys = [row["user_id"].strip() for row in csv.DictReader(f)]
    users = generate(users=5000, seed=7, anchor=ANCHOR).users
    known = set(users["user_id"])
    matching = [k for k in keys if k and k in known]
    assert len(matching) >= 25
    assert len(keys) - len(matching) >= 2  # rows that match no one, on purpose


def test_docstring_examples() -> None:
    result = doctest.testmod(demo_data, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

