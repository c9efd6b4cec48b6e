"""The semantic cases of test_semantics.py on a real PostgreSQL server.

Every case is compiled together, as ``segments compile`` does, and each model is
created in dependency order from the SQL dbt would run there (the same sqlglot trees
through the same dialect rewrites), materialized as dbt_project.yml says. The
hand-written rows reach the server the way ``segments load`` brings files
(``Session.import_tables``). Membership, holdout flags and trait values must be exactly
those worked out by hand from the contract.

Spark runs the same SQL for the example specs and for specs written to reach every
dialect rewrite, in the one Spark build of test_engines.py: a run of these few hundred
tiny cases costs Spark minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest
from sqlglot import exp

from segments import engines, uploads
from segments.compiler import models as md
from segments.compiler import render
from segments.compiler import sqlexpr as sx
from segments.engines.base import Session
from segments.spec import model as m
from segments.spec.parse import load_project
from test_semantics import AS_OF, TIMEZONE_CASES, TRAIT_VALUES, UNIVERSE, _all_segments, _load_rows, check_membership, write_project, zoned_project  # noqa: F401 - a fixture

SCHEMA, RAW = "semantics", "semantics_raw"


def materialize(session: Session, compiled: md.CompiledProject, schema: str = SCHEMA) -> None:
    def relation(node: exp.Table) -> exp.Table:
        if "model" in node.meta:
            return exp.table_(node.meta["model"], db=schema)
        return exp.table_(node.meta["source"][1], db=RAW)

    session.execute(exp.Create(kind="SCHEMA", exists=True, this=exp.Table(this=exp.to_identifier(schema))))
    for model in compiled.models:
        query = render.substitute(model.query, relation, sx.timestamp_literal(AS_OF))
        kind = "VIEW" if model.folder == md.STAGING else "TABLE"
        session.execute(exp.Create(kind=kind, this=exp.table_(model.name, db=schema), expression=query))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> m.Project:
    return load_project(write_project(tmp_path_factory.mktemp("semantics") / "specs", _all_segments()))


@pytest.fixture(scope="module")
def engine_session(postgres_env, project) -> Iterator[Session]:
    """The rows, and the uploaded lists as a build loads them from the specs' files."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in postgres_env.items():
            patch.setenv(name, value)
        engine = engines.get("postgres")
        with engine.connect() as session, duckdb.connect(":memory:") as rows:
            _load_rows(rows)
            uploads.write_file_lists(rows, project)
            tables = {engine.table(t, RAW): f"raw.{t}" for t in ("users", "events")}
            tables[engine.table(md.UPLOADS_TABLE, RAW)] = f"main.{md.UPLOADS_TABLE}"
            session.import_tables(rows, tables)
            yield session


@pytest.fixture(scope="module")
def full(project) -> md.CompiledProject:
    return md.compile_project(project)


@pytest.fixture(scope="module")
def materialized(engine_session, full) -> Session:
    materialize(engine_session, full)
    return engine_session


def test_every_case_selects_the_expected_members(materialized):
    columns = ["segment_name", "user_id", "is_holdout", "as_of"]
    check_membership(materialized.rows(exp.select(*columns).from_(exp.table_(md.MEMBERSHIP, db=SCHEMA))))


def test_every_trait_has_the_expected_values(materialized):
    names = ["user_id", *TRAIT_VALUES]
    rows = materialized.rows(exp.select(*names).from_(exp.table_(md.TRAITS, db=SCHEMA)))
    assert {r[0] for r in rows} == UNIVERSE
    got = {trait: {r[0]: r[i] for r in rows} for i, trait in enumerate(names) if i}
    assert {t: v for t, v in got.items() if v != TRAIT_VALUES[t]} == {}


def test_a_catalog_timezone_counts_local_days(engine_session, zoned_project):
    """The catalog's timezone cases of test_semantics.py (days and dates of Los Angeles)."""
    materialize(engine_session, md.compile_project(zoned_project), schema="semantics_tz")
    rows = engine_session.rows(exp.select("segment_name", "user_id").from_(exp.table_(md.MEMBERSHIP, db="semantics_tz")))
    got: dict[str, set[str]] = {}
    for segment, user in rows:
        got.setdefault(segment, set()).add(user)
    assert {name: got.get(name, set()) for name, _, _ in TIMEZONE_CASES} == {n: e for n, _, e in TIMEZONE_CASES}
    days = dict(engine_session.rows(exp.select("user_id", "buy_days").from_(exp.table_(md.TRAITS, db="semantics_tz"))))
    assert (days["u01"], days["u02"], days["u09"]) == (1, 1, 3)
