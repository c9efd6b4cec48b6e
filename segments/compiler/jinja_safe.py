"""Keep user text out of dbt's Jinja.

dbt renders every model file and most of every properties file with Jinja before it
reads them, so a spec value, a description or an uploaded key holding ``{{``, ``{%``
or ``{#`` would run as template code at build time (``run_query``, ``env_var``...),
while ``segments preview`` and ``review``, which read the trees directly, would show
a harmless literal. The generated files therefore never carry those openers from
user text:

- in SQL, a string literal holding one becomes a concatenation of literals cut right
  after each ``{`` that starts an opener, so no piece holds one and the expression
  still means the literal text on every engine (no dbt, no Jinja needed to read it);
- in YAML and comments, which dbt renders as templates, such a ``{`` is written as
  ``{{ '{' }}``: the only Jinja in the file is that constant, which renders back to
  the literal text.

Our own macro calls (``{{ ref(...) }}``, ``{{ segments_as_of() }}``) are put in after
this step, so they are never touched.
"""

from __future__ import annotations

import re

from sqlglot import exp

#: A ``{`` that starts a Jinja opener: ``{{``, ``{%`` or ``{#``.
_OPENER_START = re.compile(r"\{(?=[{%#])")
_JINJA_BRACE = "{{ '{' }}"


def has_opener(text: str) -> bool:
    """True when ``text`` holds ``{{``, ``{%`` or ``{#``.

    >>> has_opener("{x}"), has_opener("a{{b"), has_opener("{#")
    (False, True, True)
    """
    return _OPENER_START.search(text) is not None


def _pieces(text: str) -> list[str]:
    """``text`` cut right after each ``{`` that starts an opener: no piece holds one,
    and the pieces joined are ``text``.

    >>> _pieces("a{{b}}{%c")
    ['a{', '{b}}{', '%c']
    >>> _pieces("{{{")
    ['{', '{', '{']
    """
    cuts = [m.start() + 1 for m in _OPENER_START.finditer(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _literal(node: exp.Expression) -> exp.Expression:
    if not (isinstance(node, exp.Literal) and node.is_string and has_opener(node.this)):
        return node
    pieces = [exp.Literal.string(p) for p in _pieces(node.this)]
    joined: exp.Expression = pieces[0]
    for piece in pieces[1:]:
        joined = exp.DPipe(this=joined, expression=piece)
    # The parentheses keep the concatenation one operand wherever the literal stood.
    return exp.Paren(this=joined)


def sql_tree(tree: exp.Expression) -> exp.Expression:
    """A copy of ``tree`` whose string literals hold no Jinja opener, same meaning.

    >>> sql_tree(exp.Literal.string("{{ x }}")).sql()
    "('{' || '{ x }}')"
    >>> sql_tree(exp.Literal.string("plain")).sql()
    "'plain'"
    """
    return tree.transform(_literal)


def text(value: str) -> str:
    """``value`` as template text that dbt's Jinja renders back to ``value``.

    >>> text("{{ env_var('X') }} and {x}")
    "{{ '{' }}{ env_var('X') }} and {x}"
    """
    return _OPENER_START.sub(lambda _: _JINJA_BRACE, value)


def document(value: object) -> object:
    """A copy of a YAML document (dicts, lists, scalars) with every string, keys
    included, passed through :func:`text`."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {document(k): document(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [document(v) for v in value]
    return value
