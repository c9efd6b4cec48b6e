"""Tables built in buckets of users, so that their joins fit DuckDB's memory limit.

``int_segment_flags`` joins every user's attributes, measures and traits: at millions of
users the hash tables of one statement outgrow a memory limit of hundreds of megabytes
(the 80M-event benchmark failed there at 1 GB). On DuckDB the compiler marks it
``segments_bucketed_table`` (``dbt_project/macros/segments_bucketed_table.sql``): one
statement per bucket of users, ``hash(user_id) % N = i``, each reading only its
bucket's rows of every model it joins. A model marked ``bucketed`` has each model it
reads filtered to the current bucket, read from the session variables the
materialization sets; outside it (the variables unset) the filter keeps every row, so
the views stay correct for anyone who reads them.

Other engines build the same models as plain tables: the trees are unchanged, only
DuckDB's rendering adds the filter (:func:`filter_reads`) and the materialization
(:func:`dbt_config`).
"""

from __future__ import annotations

from sqlglot import exp

from segments.compiler import sqlexpr as sx

#: The materialization of ``dbt_project/macros/segments_bucketed_table.sql``.
MATERIALIZATION = "segments_bucketed_table"
#: Engines with that materialization (its read filter uses DuckDB session variables).
DIALECTS = ("duckdb",)
#: The DuckDB variables the materialization sets while it builds a bucket.
BUCKETS_VARIABLE, BUCKET_VARIABLE = "segments_buckets", "segments_bucket"
#: Values per bucket (users times the columns joined per user). Each bucket costs a
#: scan of the inputs: the bench's 30 segments (76 columns) at 1M users stay in one
#: bucket (the same time as a plain table), at 4M users take four, each well inside
#: the default memory limit beside the statement dbt's second thread runs.
CELLS_PER_BUCKET = 80_000_000
#: The model whose rows are counted to choose the number of buckets (every user).
COUNTED = "int_segment_universe"


def applies(dialect: str) -> bool:
    return dialect in DIALECTS


def _variable(name: str, unset: int) -> exp.Expression:
    value = exp.Anonymous(this="getvariable", expressions=[exp.Literal.string(name)])
    # the type of hash(): an INTEGER would make DuckDB compute the modulo in HUGEINT, 10x slower
    return exp.cast(exp.Coalesce(this=value, expressions=[exp.Literal.number(unset)]), exp.DataType.Type.UBIGINT)


def predicate(user_id: exp.Expression) -> exp.Expression:
    """The current bucket's users: every user when no bucket is being built.

    >>> predicate(exp.column("user_id")).sql("duckdb")
    "HASH(user_id) % CAST(COALESCE(GETVARIABLE('segments_buckets'), 1) AS UBIGINT) = CAST(COALESCE(GETVARIABLE('segments_bucket'), 0) AS UBIGINT)"
    """
    hashed = exp.Anonymous(this="hash", expressions=[user_id])
    return exp.EQ(this=exp.Mod(this=hashed, expression=_variable(BUCKETS_VARIABLE, 1)), expression=_variable(BUCKET_VARIABLE, 0))


def filter_reads(query: exp.Expression) -> exp.Expression:
    """``query`` with every model it reads (each keyed by ``user_id``) narrowed to the
    current bucket: ``(SELECT * FROM model WHERE <predicate>) AS alias``."""

    def narrow(node: exp.Expression) -> exp.Expression:
        if not (isinstance(node, exp.Table) and "model" in node.meta):
            return node
        alias = node.args.get("alias")
        table = node.copy()
        table.set("alias", None)
        inner = exp.select("*").from_(table).where(predicate(sx.col("user_id")))
        return exp.Subquery(this=inner, alias=alias.copy() if alias else exp.TableAlias(this=sx.ident(node.name)))

    return query.transform(narrow)


def bucket_rows(columns: int) -> int:
    """Users per bucket for a table joining ``columns`` columns per user."""
    return max(10_000, CELLS_PER_BUCKET // max(1, columns))


def dbt_config(columns: int) -> dict[str, object]:
    """The model's dbt config on DuckDB: the materialization and how to size buckets
    (``SEGMENTS_BUCKET_ROWS`` in the environment overrides ``bucket_rows``)."""
    return {"materialized": MATERIALIZATION, "bucket_rows": bucket_rows(columns), "bucket_count_from": COUNTED}
