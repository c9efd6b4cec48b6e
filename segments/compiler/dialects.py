"""One tree, SQL for each engine: sqlglot renders, a few rewrites fill the gaps.

The compiler builds its queries from nodes that name an operation rather than one
engine's function. sqlglot spells most of them for every dialect; for the few it does
not (or spells with another meaning), :func:`transpile` rewrites the node into what the
engine has, before sqlglot renders it:

=====================  ==================================  =============================
node                   meaning                             rewritten for
=====================  ==================================  =============================
``FromBase(h, 16)``    hex digits read as an unsigned      duckdb, postgres, spark,
                       integer (the holdout, SPEC 2.6)     snowflake (bigquery and trino
                                                           are sqlglot's own)
``EndsWith(x, s)``     ``x`` ends with ``s``               postgres, trino (neither has
                                                           ``ends_with``)
``INTERVAL 7 DAY``      a duration (a number: portable)     trino (only ``INTERVAL '7'
                                                           DAY``)
``TIMESTAMP`` type     a naive UTC instant                 spark (``TIMESTAMP_NTZ``: its
                                                           ``TIMESTAMP`` is zoned)
=====================  ==================================  =============================

Everything else (intervals, ``FILTER`` clauses, ``ConvertTimezone`` from UTC for the
catalog's ``timezone`` (``AT TIME ZONE`` twice on duckdb and postgres, spark's
``CONVERT_TIMEZONE`` on its ``TIMESTAMP_NTZ``), ``STRPOS``, ``REGEXP_REPLACE`` of every
match, ``VALUES`` lists, text types) is sqlglot's own transpilation.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

#: Engines segments builds on (a dbt adapter and a connection of its own).
ENGINE_DIALECTS = ("duckdb", "postgres", "spark")
#: Every dialect ``segments compile --dialect`` writes.
DIALECTS = ENGINE_DIALECTS + ("snowflake", "bigquery", "trino")

_HEX = 16


def _hex_digits(node: exp.FromBase) -> exp.Expression:
    return node.this.copy()


def _duckdb_hex(node: exp.FromBase) -> exp.Expression:
    prefixed = exp.DPipe(this=exp.Literal.string("0x"), expression=_hex_digits(node))
    return exp.cast(prefixed, exp.DataType.Type.UBIGINT)


def _postgres_hex(node: exp.FromBase) -> exp.Expression:
    # 'x' || 16 hex digits is a bit(64) literal; up to 15 significant digits stay positive
    padded = exp.Pad(
        this=_hex_digits(node), expression=exp.Literal.number(16),
        fill_pattern=exp.Literal.string("0"), is_left=True,
    )
    bits = exp.cast(exp.DPipe(this=exp.Literal.string("x"), expression=padded), exp.DataType.build("BIT(64)", dialect="postgres"))
    return exp.cast(bits, exp.DataType.Type.BIGINT)


def _spark_hex(node: exp.FromBase) -> exp.Expression:
    decimal = exp.Anonymous(this="CONV", expressions=[_hex_digits(node), exp.Literal.number(16), exp.Literal.number(10)])
    return exp.cast(decimal, exp.DataType.Type.BIGINT)


def _snowflake_hex(node: exp.FromBase) -> exp.Expression:
    return exp.ToNumber(this=_hex_digits(node), format=exp.Literal.string("X" * 16))


_HEX_TO_INT: dict[str, Callable[[exp.FromBase], exp.Expression]] = {
    "duckdb": _duckdb_hex,
    "postgres": _postgres_hex,
    "spark": _spark_hex,
    "snowflake": _snowflake_hex,
}
_NO_ENDS_WITH = ("postgres", "trino")
_ZONED_TIMESTAMP = ("spark",)
_QUOTED_INTERVAL = ("trino",)
#: Engines that take ``WITH x AS MATERIALIZED``; elsewhere it is a plain CTE.
_MATERIALIZED_CTE = ("duckdb", "postgres")


def _rewrite(dialect: str) -> Callable[[exp.Expression], exp.Expression]:
    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.FromBase) and dialect in _HEX_TO_INT:
            if node.expression.to_py() != _HEX:
                raise ValueError(f"only base {_HEX} is rewritten, not {node.expression.sql()}")
            return _HEX_TO_INT[dialect](node)
        if isinstance(node, exp.EndsWith) and dialect in _NO_ENDS_WITH:
            suffix = node.expression
            tail = exp.Right(this=node.this.copy(), expression=exp.Length(this=suffix.copy()))
            return exp.EQ(this=tail, expression=suffix.copy())
        if isinstance(node, exp.Interval) and dialect in _QUOTED_INTERVAL and node.this.is_number:
            quoted = node.copy()
            quoted.set("this", exp.Literal.string(node.this.name))
            return quoted
        if isinstance(node, exp.CTE) and node.args.get("materialized") is not None and dialect not in _MATERIALIZED_CTE:
            node.set("materialized", None)  # in place: its query is rewritten next
            return node
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.TIMESTAMP and dialect in _ZONED_TIMESTAMP:
            return exp.DataType.build(exp.DataType.Type.TIMESTAMPNTZ)
        return node

    return rewrite


def check(dialect: str) -> str:
    """``dialect`` when segments writes it, else ValueError naming the choices.

    >>> check("postgres")
    'postgres'
    >>> check("mysql")
    Traceback (most recent call last):
    ...
    ValueError: unknown dialect 'mysql'; choose one of: duckdb, postgres, spark, snowflake, bigquery, trino
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; choose one of: {', '.join(DIALECTS)}")
    return dialect


def transpile(tree: exp.Expression, dialect: str) -> exp.Expression:
    """A copy of ``tree`` with the nodes ``dialect`` lacks rewritten (see the module).

    >>> ends = exp.EndsWith(this=exp.column("city"), expression=exp.Literal.string("ris"))
    >>> transpile(ends, "postgres").sql("postgres")
    "RIGHT(city, LENGTH('ris')) = 'ris'"
    >>> transpile(ends, "spark").sql("spark")
    "ENDSWITH(city, 'ris')"
    """
    return tree.transform(_rewrite(check(dialect)))


def render(tree: exp.Expression, dialect: str, pretty: bool = False) -> str:
    """``tree`` as SQL for ``dialect``.

    >>> bucket = exp.FromBase(this=exp.column("h"), expression=exp.Literal.number(16))
    >>> [render(bucket, d) for d in ("duckdb", "spark", "trino")]
    ["CAST('0x' || h AS UBIGINT)", 'CAST(CONV(h, 16, 10) AS BIGINT)', 'FROM_BASE(h, 16)']
    """
    # transpile's transform made a copy of its own: sqlglot need not copy it again
    # (copying a model's tree costs as much as rendering it)
    return transpile(tree, dialect).sql(dialect=dialect, pretty=pretty, copy=False)
