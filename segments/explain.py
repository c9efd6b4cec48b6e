"""``segments explain NAME USER_ID``: why a user is in or out of a segment, rule by rule.

Every condition of the rule is evaluated per user with the compiler's own builders
(:func:`segments.compiler.predicates.predicate` over the columns of
``int_segment_base``, the same measure columns, the same holdout hash), in one query
built like ``preview``'s: the project's models as CTEs over the input tables, no dbt,
nothing written. The verdict is the segment's compiled rule itself, as
``int_segment_flags`` evaluates it, so the explanation cannot drift from the build;
the conditions under it say why, each with the value it read (a measure's count, a
trait's value, a follow-up count).

A PII attribute's value (``pii: true`` in ``_catalog.yml``) is never read: its line
shows ``(pii)`` and whether the condition held. An uploaded list's keys are never
shown either, only whether the user is in it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from segments import engines, uploads
from segments.compiler import experiments
from segments.compiler import models as md
from segments.compiler import predicates as pr
from segments.compiler import render
from segments.compiler import sqlexpr as sx
from segments.engines.base import EngineError, Session
from segments.errors import SegmentsError
from segments.spec import model as m
from segments.spec.parse import load_project
from segments.spec.timeparse import utc_now

ALL, ANY, NOT, LEAF = "all", "any", "not", "leaf"


@dataclass
class _Node:
    """A condition to evaluate: its words, its boolean, the values it shows."""

    text: str
    holds: exp.Expression
    kind: str = LEAF
    #: (label, expression) pairs read per user; a None expression shows "(pii)"
    values: list[tuple[str, exp.Expression | None]] = field(default_factory=list)
    needs: str | None = None
    children: list["_Node"] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One line of an explanation: a condition, whether it held, and why."""

    depth: int
    text: str
    holds: bool
    kind: str = LEAF
    detail: str = ""

    def line(self) -> str:
        mark = "[y]" if self.holds else "[n]"
        detail = f": {self.detail}" if self.detail else ""
        return f"{'  ' * self.depth}{mark} {self.text}{detail}"


@dataclass(frozen=True)
class Explanation:
    """Why one user is in or out of one segment at ``as_of``."""

    segment: str
    user_id: str
    as_of: dt.datetime
    known: bool  # the user is in the users table
    in_universe: bool  # ... and not created after as_of
    member: bool  # the compiled rule holds (holdout included)
    holdout: bool
    holdout_pct: float | None
    steps: list[Step]
    arm: str | None = None  # the member's experiment arm

    def lines(self) -> list[str]:
        head = f"{self.segment}: user {self.user_id} at {self.as_of.isoformat(sep=' ')} UTC is "
        if not self.known:
            return [head + "out: no such user in the users table"]
        if not self.in_universe:
            return [head + "out: created after as_of, so in no segment (SPEC 2.2)"]
        if not self.member:
            verdict = "out"
        elif self.holdout:
            verdict = f"in, in the {_number(self.holdout_pct)}% holdout (never synced)"
        elif self.holdout_pct:
            verdict = f"in (not in the {_number(self.holdout_pct)}% holdout)"
        else:
            verdict = "in"
        if self.member and self.arm is not None:
            verdict += f", arm {self.arm}"
        return [head + verdict] + [step.line() for step in self.steps]


# ---------------------------------------------------------------------------
# Conditions in words
# ---------------------------------------------------------------------------

_OPS = {
    "is": "is", "is_not": "is not", "in": "is one of", "not_in": "is none of", "contains": "contains",
    "not_contains": "does not contain", "starts_with": "starts with", "ends_with": "ends with",
    "gt": "more than", "gte": "at least", "lt": "less than", "lte": "at most",
    "before": "before", "after": "after", "within": "in the last", "not_within": "not in the last",
}


def _number(value: object) -> str:
    """
    >>> _number(10.0), _number(2.5), _number(3)
    ('10', '2.5', '3')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if value == "" or value != value.strip() else value
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value)


def needs(test: m.Test) -> str:
    """What a test asks for, in words.

    >>> needs(m.Test("gte", 1, "number"))
    'at least 1'
    >>> needs(m.Test("in", ("Pune", "Nagpur"), "string", ignore_case=True))
    'is one of Pune, Nagpur (any case)'
    >>> needs(m.Test("within", m.Duration(48, "h"), "timestamp"))
    'in the last 48h'
    """
    op, value = test.op, test.value
    if op == "is_set":
        return "is set" if value else "is not set"
    if op == "between":
        low, high = value  # type: ignore[misc]
        if test.value_type == "timestamp":
            return f"from {_scalar(low)} to before {_scalar(high)}"
        return f"between {_scalar(low)} and {_scalar(high)}"
    shown = ", ".join(_scalar(v) for v in value) if isinstance(value, tuple) else _scalar(value)  # type: ignore[union-attr]
    return f"{_OPS[op]} {shown}" + (" (any case)" if test.ignore_case else "")


def _window(window: m.Window | None) -> str:
    return "" if window is None else " " + md.describe_window(window)


def describe(condition: m.Condition) -> str:
    """A condition in one line (for event filters, where values are never read).

    >>> describe(m.Any((m.PropertyCondition("channel", m.Test("is", "sms", "string")), m.Not(m.PropertyCondition("amount", m.Test("gt", 5, "number"))))))
    '(channel is sms or not (amount more than 5))'
    """
    if isinstance(condition, (m.All, m.Any)):
        joiner = " and " if isinstance(condition, m.All) else " or "
        return "(" + joiner.join(describe(item) for item in condition.items) + ")"
    if isinstance(condition, m.Not):
        return f"not ({describe(condition.item)})"
    if isinstance(condition, m.PropertyCondition):
        return f"{condition.property} {needs(condition.test)}"
    if isinstance(condition, m.AttributeCondition):
        return f"{condition.attribute} {needs(condition.test)}"
    if isinstance(condition, m.TraitCondition):
        return f"trait {condition.trait} {needs(condition.test)}"
    if isinstance(condition, m.SegmentCondition):
        return f"member of {condition.segment}"
    if isinstance(condition, m.EventCondition):
        return _events(condition.measure.filter)
    raise TypeError(f"unknown condition {condition!r}")


def _events(event_filter: m.EventFilter) -> str:
    text = " or ".join(event_filter.events) + _window(event_filter.window)
    if event_filter.where is not None:
        text += f" where {describe(event_filter.where)}"
    return text


_MEASURES = {
    "count": "count", "active_days": "active days", "first_occurred": "first at", "last_occurred": "last at",
}


def _measure_label(measure: m.Measure) -> str:
    if measure.property:
        return f"{measure.kind} of {measure.property}"
    return _MEASURES[measure.kind]


# ---------------------------------------------------------------------------
# Conditions as expressions over int_segment_base
# ---------------------------------------------------------------------------


def _holds(expression: exp.Expression) -> exp.Expression:
    """NULL is false, as in the flags model (``COALESCE(rule, FALSE)``)."""
    return exp.Coalesce(this=sx.paren(expression), expressions=[exp.false()])


class _TreeBuilder:
    def __init__(self, project: m.Project):
        self.project = project
        self.resolver = md.base_resolver(project)

    def node(self, condition: m.Condition) -> _Node:
        holds = _holds(pr.predicate(condition, self.resolver))
        if isinstance(condition, (m.All, m.Any)):
            kind = ALL if isinstance(condition, m.All) else ANY
            text = "all of:" if kind == ALL else "any of:"
            return _Node(text, holds, kind, children=[self.node(item) for item in condition.items])
        if isinstance(condition, m.Not):
            return _Node("not:", holds, NOT, children=[self.node(condition.item)])
        if isinstance(condition, m.AttributeCondition):
            column = self.project.catalog.users.attributes[condition.attribute]
            value = None if column.pii else self.resolver.attribute(condition.attribute).expr
            return _Node(describe(condition), holds, values=[("", value)])
        if isinstance(condition, m.TraitCondition):
            return _Node(describe(condition), holds, values=[("", self.resolver.trait(condition.trait).expr)])
        if isinstance(condition, m.SegmentCondition):
            return _Node(describe(condition), holds)
        if isinstance(condition, m.EventCondition):
            return self._event(condition, holds)
        raise TypeError(f"unknown condition {condition!r}")

    def _event(self, condition: m.EventCondition, holds: exp.Expression) -> _Node:
        measure = self.resolver.measures.measure(condition.measure)
        measured = _Node(
            _events(condition.measure.filter), _holds(pr.test(condition.test, pr.Value(sx.col(measure.name), measure.nullable))),
            values=[(_measure_label(condition.measure), sx.col(measure.name))], needs=needs(condition.test),
        )
        sequence = condition.sequence
        if sequence is None:
            measured.holds = holds  # the same test, as the resolver builds it
            return measured
        follow = self.resolver.measures.followups(condition.measure.filter, sequence)
        anchor, count = sx.col(follow.anchor.name), sx.col(follow.name)
        found = exp.GT(this=count, expression=exp.Literal.number(0))
        if not sequence.followed:
            found = exp.EQ(this=count.copy(), expression=exp.Literal.number(0))
        has_anchor = exp.Not(this=exp.Is(this=anchor.copy(), expression=exp.null()))
        what = " or ".join(sequence.events) + (f" where {describe(sequence.where)}" if sequence.where else "")
        window = f" within {sequence.within} of" if sequence.within else " after"
        text = f"{'followed' if sequence.followed else 'not followed'} by {what}{window} the last {' or '.join(condition.measure.filter.events)}"
        followed = _Node(
            text, _holds(sx.and_(has_anchor, found)),
            values=[("at", anchor), ("follow-ups", count)], needs="at least 1" if sequence.followed else "none",
        )
        return _Node(f"{_events(condition.measure.filter)}, then:", holds, ALL, children=[measured, followed])

    def segment_tree(self, spec: m.SegmentSpec, segment: str) -> list[_Node]:
        """The conditions a segment's rule is the AND of, as the compiler composes it."""
        nodes: list[_Node] = []
        if spec.upload is not None:
            upload = spec.upload
            listed = f" {upload.file.name}" if upload.file is not None else ""
            text = f"in the uploaded list{listed} (matched on {upload.match_on})"
            nodes.append(_Node(text, _holds(md.upload_predicate(spec.name, upload))))
        if spec.where is not None:
            nodes.append(self.node(spec.where))
        if spec.tiers:
            names = spec.segment_names()
            index = names.index(segment)
            tier = spec.tiers[index]
            if tier.where is not None:
                tier_node = self.node(tier.where)
                nodes.append(_Node(f"tier {tier.name}:", tier_node.holds, ALL, children=[tier_node]))
            for earlier in names[:index]:
                flag = _holds(self.resolver.segment(earlier, negate=True))
                nodes.append(_Node(f"not in the earlier tier {earlier}", flag))
        return nodes


def _flatten(node: _Node, depth: int, row: dict[str, object], alias: dict[int, str]) -> list[Step]:
    holds = bool(row[alias[id(node.holds)]])
    details = []
    for label, value in node.values:
        shown = "(pii)" if value is None else _show(row[alias[id(value)]])
        details.append(f"{label} {shown}".strip())
    detail = ", ".join(details)
    if node.needs:
        detail += f", needs {node.needs}"
    steps = [Step(depth, node.text, holds, node.kind, detail)]
    for child in node.children:
        steps += _flatten(child, depth + 1, row, alias)
    return steps


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return _number(round(value, 6))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _expressions(nodes: list[_Node]) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    for node in nodes:
        out.append(node.holds)
        out += [value for _, value in node.values if value is not None]
        out += _expressions(node.children)
    return out


# ---------------------------------------------------------------------------
# The query
# ---------------------------------------------------------------------------


def _published_as_of(session: Session, segments: Sequence[str]) -> dt.datetime | None:
    """The as_of of the last published build of ``segments``, if any."""
    from segments.warehouse import SEGMENT_CATALOG

    engine = session.engine
    if not session.columns(engine.target_schema, SEGMENT_CATALOG):
        return None
    query = (
        exp.select(exp.Max(this=exp.column("as_of")))
        .from_(engine.table(SEGMENT_CATALOG))
        .where(exp.column("segment_name").isin(*[sx.literal(s) for s in segments]))
    )
    rows = session.rows(query)
    value = rows[0][0] if rows else None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value


def explain_users(
    specs_dir: Path,
    warehouse_file: Path | None,
    name: str,
    user_ids: Sequence[str],
    as_of: dt.datetime | None = None,
    target: str = engines.DEFAULT_TARGET,
) -> list[Explanation]:
    """Explain ``name`` (a segment, or every tier of a tiered spec) for each user.

    Args:
        as_of: the instant ``now`` means; by default the as_of of the last published
            build of the segment (so that the answer is the build's), else the clock.

    Raises:
        SegmentsError: an unknown segment, no user ids, a warehouse that cannot run it.
    """
    from segments import pipeline, warehouse

    if not user_ids:
        raise SegmentsError("explain: name at least one user id")
    project = load_project(specs_dir)
    wanted = pipeline.preview_segments(project, name)
    compiled = md.compile_project(project, only=wanted)
    engine = engines.get(target, warehouse_file)
    builder = _TreeBuilder(project)
    trees = {segment: builder.segment_tree(project.spec(segment), segment) for segment in wanted}
    verdicts = {segment: _holds(compiled.rules[segment]) for segment in wanted}
    holdouts = {segment: _holds(md.holdout_predicate(segment, project.spec(segment).holdout)) for segment in wanted}
    arms = {segment: experiments.arm(project.spec(segment).experiment) for segment in wanted}

    expressions = [*verdicts.values(), *holdouts.values(), *arms.values()]
    for nodes in trees.values():
        expressions += _expressions(nodes)
    unique: dict[int, exp.Expression] = {}
    for expression in expressions:
        unique.setdefault(id(expression), expression)
    alias = {key: f"c{index}" for index, key in enumerate(unique)}
    ids = [str(u) for u in dict.fromkeys(user_ids)]
    id_literals = [sx.literal(u) for u in ids]
    # each segment's flag, read from its word of the table (the rules' order places them)
    flags = [
        exp.alias_(md.flag_set(word, bit, "f"), md.segment_model_name(name))
        for name, (word, bit) in md.flag_bits(list(compiled.rules)).items()
    ]
    base = (
        exp.select(exp.Column(this=exp.Star(), table=sx.ident("b")), *flags)
        .from_(exp.Table(this=sx.ident(md.BASE), alias=exp.TableAlias(this=sx.ident("b"))))
        .join(exp.Table(this=sx.ident(md.FLAGS), alias=exp.TableAlias(this=sx.ident("f"))),
              on=exp.EQ(this=sx.col("user_id", "f"), expression=sx.col("user_id", "b")))
        .where(sx.col("user_id", "b").isin(*[lit.copy() for lit in id_literals]))
    )
    evaluated = exp.select("user_id", *[exp.alias_(e.copy(), alias[key]) for key, e in unique.items()]).from_(
        exp.Subquery(this=base, alias=exp.TableAlias(this=sx.ident("bf")))
    )
    asked = exp.values([(u,) for u in ids], alias="asked", columns=["asked_id"])
    final = (
        exp.select(
            sx.col("asked_id", "asked"),
            exp.alias_(exp.Not(this=exp.Is(this=sx.col("user_id", "u"), expression=exp.null())), "known_user"),
            exp.alias_(exp.Not(this=exp.Is(this=sx.col("user_id", "x"), expression=exp.null())), "in_universe"),
            *[sx.col(a, "x") for a in alias.values()],
        )
        .from_(asked)
        .join(exp.Table(this=sx.ident(md.USERS), alias=exp.TableAlias(this=sx.ident("u"))),
              on=exp.EQ(this=sx.col("user_id", "u"), expression=sx.col("asked_id", "asked")), join_type="left")
        .join(exp.Subquery(this=evaluated, alias=exp.TableAlias(this=sx.ident("x"))),
              on=exp.EQ(this=sx.col("user_id", "x"), expression=sx.col("asked_id", "asked")), join_type="left")
    )

    read_lists = md.UPLOAD_KEYS in {model.name for model in compiled.models}
    # the uploaded lists as the specs' files make them: a temporary table
    with engine.connect(read_only=not (read_lists and engine.temporaries_need_writes)) as session:
        warehouse.check_inputs(session, project.catalog)
        if as_of is None:
            as_of = _published_as_of(session, wanted) or utc_now().replace(microsecond=0)
        with uploads.overlay(session, project, compiled.segments if read_lists else []) as lists:
            source = pipeline.source_table(engine, lists)
            # the rule's own times (``within``, ``now - 7d``) read as_of as the models do, and
            # an upload's list is read where the models read it
            select = render.substitute(
                final, lambda node: source(*node.meta["source"]) if "source" in node.meta else node, sx.timestamp_literal(as_of)
            )
            query = render.standalone_query(compiled, md.BASE, as_of, source, select=select, also=(md.USERS, md.FLAGS))  # type: ignore[arg-type]
            try:
                rows = session.rows(query)
            except EngineError as error:
                raise SegmentsError(f"explain of {name} failed on {engine.describe()}: {error}") from None
    names = ["asked_id", "known_user", "in_universe", *alias.values()]
    by_user = {str(row[0]): dict(zip(names, row)) for row in rows}
    out = []
    for user in ids:
        row = by_user[user]
        in_universe = bool(row["in_universe"])
        for segment in wanted:
            steps = [s for node in trees[segment] for s in _flatten(node, 1, row, alias)] if in_universe else []
            out.append(Explanation(
                segment, user, as_of, bool(row["known_user"]), in_universe,
                in_universe and bool(row[alias[id(verdicts[segment])]]),
                in_universe and bool(row[alias[id(verdicts[segment])]]) and bool(row[alias[id(holdouts[segment])]]),
                project.spec(segment).holdout, steps,
                row[alias[id(arms[segment])]] if in_universe and project.spec(segment).experiment else None,
            ))
    return out

