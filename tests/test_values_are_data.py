"""Values are data (SPEC 3.2): whatever text a spec or an uploaded file holds, a build
treats it as its literal text, on DuckDB and PostgreSQL, through dbt.

Hypothesis generates values (quotes, Jinja delimiters and calls, backslashes, Unicode
in several normal forms, very long strings) and puts each in every value position of a
spec (is, in, contains, starts_with, ends_with, an event name, a property value, the
description, owner and tags) and in an uploaded CSV cell. Each example loads rows
holding the same values, builds with ``segments build`` (dbt renders every generated
file with Jinja) and checks that

- every segment has exactly the members the literal text selects, and preview agrees;
- dbt's manifest carries description, owner and tags as the literal text;
- no other relation changed: a canary table is intact and the warehouse holds the same
  relations after every example;
- a secret in the environment reached no file dbt wrote.

The attacks of issue 18 (``run_query`` dropping a table, ``env_var`` copying a secret)
are always among the examples.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from segments import engines, paths, pipeline, warehouse
from segments.spec.parse import load_project

AS_OF = dt.datetime(2024, 6, 30, 12, 0, 0)
AT = dt.datetime(2024, 6, 20, 8, 0, 0)
SECRET_ENV, SECRET = "SEGMENTS_VALUES_SECRET", "s3cr3t-values-are-data-7f1c"
CANARY = ("canary", "guard")

CATALOG = """\
users:
  table: vad_raw.users
  key: user_id
  attributes:
    city: {type: string}
events:
  table: vad_raw.events
  user_key: user_id
  name: event_name
  timestamp: occurred_at
  properties:
    path: {type: string}
"""

ATTACKS = [
    "{{ run_query('drop table canary.guard') }}",
    "{% do run_query('drop table vad_raw.events') %}",
    "{{ env_var('" + SECRET_ENV + "') }}",
    "{# hidden #}",
]
PIECES = [*ATTACKS, "{{", "{%", "{#", "}}", "%}", "{", "'", "''", '"', "\\", "\\'", "\\\\", "%", "_", "--", "/*", ";"]
# the same letters composed and decomposed, and compatibility forms NFKC folds
UNICODE = ["é", "e\u0301", "Å", "A\u030a", "ﬁ", "①", "𝔘", "ß", "İ"]
_TEXT = st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Co"))
_CHUNK = st.one_of(st.sampled_from(PIECES), st.sampled_from(UNICODE), st.text(_TEXT, min_size=1, max_size=6))


def _normalized(text: str, form: str | None) -> str:
    return unicodedata.normalize(form, text) if form else text


_SHORT = st.builds(_normalized, st.lists(_CHUNK, min_size=1, max_size=6).map("".join), st.sampled_from([None, "NFC", "NFD", "NFKC", "NFKD"]))
_LONG = st.builds(lambda chunk, times: (chunk * times)[:6000], _CHUNK, st.integers(300, 3000))
# a value is somewhere a name: all-blank text is a validation error there, not data
VALUES = st.lists(st.one_of(_SHORT, _SHORT, _LONG).filter(str.strip), min_size=2, max_size=2, unique=True)

#: position -> (segment name prefix, the spec's rule for value v)
RULES = {
    "is": lambda v: {"attribute": "city", "is": v},
    "in": lambda v: {"attribute": "city", "in": [v, "no such city"]},
    "has": lambda v: {"attribute": "city", "contains": v},
    "pre": lambda v: {"attribute": "city", "starts_with": v},
    "suf": lambda v: {"attribute": "city", "ends_with": v},
    "ev": lambda v: {"event": v},
    "prop": lambda v: {"event": v, "where": {"property": "path", "is": v}},
}


def _cell(value: str) -> str:
    # framed so that TRIM (which engines define differently for Unicode spaces) is a no-op
    return f"id:{value}:end"


def _users(values: list[str]) -> list[tuple[str, str | None]]:
    return [(f"k{i}", v) for i, v in enumerate(values)] + [(_cell(v), None) for v in values]


def _expected(values: list[str]) -> dict[str, set[str]]:
    users = _users(values)
    out: dict[str, set[str]] = {}
    for i, v in enumerate(values):
        city = {"is": lambda c: c == v, "in": lambda c: c == v, "has": lambda c: v in c,
                "pre": lambda c: c.startswith(v), "suf": lambda c: c.endswith(v)}
        for name, test in city.items():
            out[f"{name}_{i}"] = {u for u, c in users if c is not None and test(c)}
        # user k_j has one event named v_j whose path is v_j
        out[f"ev_{i}"] = out[f"prop_{i}"] = {f"k{j}" for j, w in enumerate(values) if w == v}
        out[f"up_{i}"] = {_cell(v)}
    return out


def _write_specs(root: Path, values: list[str]) -> Path:
    specs = root / "specs"
    (specs / "uploads").mkdir(parents=True)
    (specs / "_catalog.yml").write_text(CATALOG, encoding="utf-8")

    def dump(name: str, body: dict) -> None:
        text = yaml.safe_dump({"name": name, **body}, allow_unicode=True, sort_keys=False)
        (specs / f"{name}.yml").write_text(text, encoding="utf-8")

    for i, v in enumerate(values):
        for prefix, rule in RULES.items():
            dump(f"{prefix}_{i}", {"where": rule(v)})
        with (specs / "uploads" / f"list_{i}.csv").open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([["user_id"], [_cell(v)]])
        dump(f"up_{i}", {
            "description": v, "owner": v, "tags": [v],
            "upload": {"file": f"uploads/list_{i}.csv", "match_on": "user_id"},
        })
    return specs


def _write_inputs(root: Path, values: list[str]) -> tuple[Path, Path]:
    users, events = root / "users.parquet", root / "events.parquet"
    with duckdb.connect() as con:
        con.execute("create table u (user_id varchar, city varchar)")
        con.executemany("insert into u values (?, ?)", _users(values))
        con.execute("create table e (user_id varchar, event_name varchar, occurred_at timestamp, path varchar)")
        con.executemany("insert into e values (?, ?, ?, ?)", [(f"k{i}", v, AT, v) for i, v in enumerate(values)])
        con.execute(f"copy u to '{users}' (format parquet)")
        con.execute(f"copy e to '{events}' (format parquet)")
    return users, events


def _relations(session) -> set[tuple[str, str]]:
    query = exp.select("table_schema", "table_name").from_(exp.table_("tables", db="information_schema"))
    return {(str(s), str(t)) for s, t in session.rows(query) if str(s) not in ("pg_catalog", "information_schema")}


class Warehouse:
    def __init__(self, target: str, tmp: Path):
        self.target, self.tmp, self.relations = target, tmp, None
        self.engine = engines.get(target)
        with self.engine.connect() as session:
            session.execute(exp.Create(kind="SCHEMA", exists=True, this=exp.Table(this=exp.to_identifier(CANARY[0]))))
            guard = exp.table_(CANARY[1], db=CANARY[0])
            session.execute(exp.Create(kind="TABLE", this=guard, expression=exp.select(exp.alias_(exp.Literal.string("intact"), "note"))))

    def canary(self) -> list[tuple]:
        with self.engine.connect(read_only=True) as session:
            return session.rows(exp.select("note").from_(exp.table_(CANARY[1], db=CANARY[0])))


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def wh(request, tmp_path_factory) -> Iterator[Warehouse]:
    tmp = tmp_path_factory.mktemp(f"values-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_ENV, SECRET)
        patch.setenv(paths.WORK_DIR_ENV, str(tmp / "work"))
        if request.param == "duckdb":
            patch.setenv(paths.WAREHOUSE_ENV, str(tmp / "warehouse.duckdb"))
        else:
            import psycopg2

            env = request.getfixturevalue("postgres_env")
            for name, value in env.items():
                patch.setenv(name, value)
            # a database of its own: this module's publishes never meet another test's
            con = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=env["PGDATABASE"])
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("create database values_are_data")
            con.close()
            patch.setenv("PGDATABASE", "values_are_data")
        yield Warehouse(request.param, tmp)


_examples = iter(range(10**6))


# derandomized: CI runs the same examples every time; no shrinking, which can take
# minutes on values that each need a dbt build
@settings(max_examples=3, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@example(values=[ATTACKS[0], ATTACKS[2]])
@example(values=[ATTACKS[1] + " é", ATTACKS[3] + "\\' e\u0301"])
@given(values=VALUES)
def test_generated_values_mean_their_literal_text(wh: Warehouse, values: list[str]) -> None:
    root = wh.tmp / f"example{next(_examples)}"
    specs = _write_specs(root, values)
    users, events = _write_inputs(root, values)
    project = load_project(specs)
    with wh.engine.connect() as session:
        warehouse.load_inputs(session, project.catalog, users, events)
    compiled: list[pipeline.Compiled] = []
    pipeline.build(specs, None, AS_OF, target=wh.target, on_compiled=compiled.append)

    expected = _expected(values)
    with wh.engine.connect(read_only=True) as session:
        got: dict[str, set[str]] = {name: set() for name in expected}
        for segment, user, *_ in warehouse.members(session).rows:
            got[segment].add(user)
        relations = _relations(session)
    assert got == expected
    for name, members in expected.items():
        assert pipeline.preview(specs, None, name, AS_OF, target=wh.target).size == len(members), name

    manifest = json.loads((compiled[0].project_dir / "target" / "manifest.json").read_text(encoding="utf-8"))
    nodes = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    for i, v in enumerate(values):
        node = nodes[f"seg_up_{i}"]
        assert (node["description"], node["config"]["meta"]["segments"]["owner"]) == (v, v)
        assert v in node["tags"]

    assert wh.canary() == [("intact",)]
    if wh.relations is None:
        wh.relations = relations
    assert relations == wh.relations
    written = [p for p in compiled[0].project_dir.rglob("*") if p.is_file()]
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]


#: The only Jinja the generated files may hold: our macro calls, and the escaped brace.
OWN_JINJA = [
    "{{ segments_as_of() }}", "{{ target.schema }}", "{{ '{' }}",
]


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_generated_files_hold_no_jinja_but_our_own(tmp_path: Path) -> None:
    """Fast and without dbt: every generated file, in every dialect, holds no user opener."""
    import re

    from segments.compiler import dialects
    from segments.compiler import models as md
    from segments.compiler import writer

    values = [ATTACKS[0], ATTACKS[1], ATTACKS[2] + ATTACKS[3]]
    specs = _write_specs(tmp_path, values)
    project = load_project(specs)
    compiled = md.compile_project(project)
    for dialect in dialects.DIALECTS:
        for rel, text in writer.generated_files(project, compiled, dialect).items():
            if rel.suffix == ".yml":  # the text dbt's Jinja sees is the loaded strings
                text = "\n".join(_strings(yaml.safe_load(text))) + text.partition("\n")[0]
            stripped = re.sub(r"\{\{ (ref|source)\('[a-z0-9_]+'(, '[a-z0-9_]+')?\) \}\}", "", text)
            for own in OWN_JINJA:
                stripped = stripped.replace(own, "")
            assert not re.search(r"\{[{%#]", stripped), (dialect, rel)
        assert "run_query" in "".join(writer.generated_files(project, compiled, dialect).values())
