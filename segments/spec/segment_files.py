"""One segment spec file: its keys, rule or upload or tiers, refresh, holdout,
checks and ``sync:`` entries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from yaml.nodes import Node

from segments.spec import grammar, uploads
from segments.spec import model as m
from segments.spec.conditions import _Env, _condition
from segments.spec.nodes import (
    CHECK_KEYS, MAX_NAME_LENGTH, SEGMENT_KEYS, SEGMENT_NAME_RE, TIER_NAME_RE, _Ctx, _check_keys, _entries,
    _free_text, _kind, _list, _misspelt, _name, _number, _plain, _require, _text, _unknown, _value_of,
)


# ---- segment specs ---------------------------------------------------------------------------


@dataclass
class _SpecInfo:
    """What the cross-file checks need from a spec, even a broken one."""

    ctx: _Ctx
    name: str
    defines: list[tuple[str, Node | None]]  # segment names, each with its defining node
    tiered: bool = False
    deps: dict[str, list[tuple[str, Node]]] = field(default_factory=dict)  # name -> references
    refs: list[tuple[str, Node]] = field(default_factory=list)  # every reference in the file


_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM_RE = re.compile(r"(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?")


def cron_problem(text: str) -> str | None:
    """What is wrong with a 5-field cron expression, or None if it is valid.

    Examples:
        >>> cron_problem("0 */6 * * mon-fri") is None
        True
        >>> cron_problem("0 6 * *")
        'expected 5 fields (minute hour day-of-month month day-of-week), got 4'
        >>> cron_problem("61 6 * * *")
        "minute '61' is out of range 0-59"
    """
    fields = text.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
    for value, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in value.lower().split(","):
            match = _CRON_ITEM_RE.fullmatch(item)
            if match is None or match.group(2) == "0":
                return f"invalid {label} '{value}'"
            if match.group(1) == "*":
                continue
            for part in match.group(1).split("-"):
                if part in names:  # jan is month 1, sun is weekday 0
                    number = names.index(part) + low
                elif part.isdigit():
                    number = int(part)
                else:
                    return f"invalid {label} '{value}'"
                if not low <= number <= high:
                    return f"{label} '{part}' is out of range {low}-{high}"
    return None


def _refresh(ctx: _Ctx, node: Node | None) -> str | None:
    """``refresh``: a 5-field cron in UTC (unquoted ``0 * * * *`` is plain text), or
    ``realtime``."""
    text = _free_text(ctx, node, "refresh")
    if text is None:
        return None
    if text.strip() == m.REALTIME:
        return m.REALTIME
    problem = cron_problem(text)
    if problem:
        ctx.error(node, f"invalid refresh cron '{text}' (or 'realtime'): {problem}")
        return None
    return text


def _holdout(ctx: _Ctx, node: Node | None) -> int | float | None:
    number = _number(ctx, node, "holdout")
    low, high = grammar.HOLDOUT.minimum, grammar.HOLDOUT.maximum
    if number is not None and not low <= number <= high:
        ctx.error(node, f"holdout must be a percent between {low} and {high}, got {number}")
        return None
    return number


def _upload(ctx: _Ctx, node: Node, specs_dir: Path, env: _Env) -> m.Upload | None:
    return uploads.upload(ctx, node, specs_dir, env)


def _tiers(
    ctx: _Ctx, node: Node, name: str | None, env: _Env
) -> tuple[list[tuple[m.Tier | None, Node]], list[list[tuple[str, Node]]]]:
    """``tiers``: each tier with its name node, and each tier's segment references."""
    items = _list(ctx, node, "tiers")
    if items is None:
        return [], []
    if not items:
        ctx.error(node, "tiers needs at least one tier")
    tiers: list[tuple[m.Tier | None, Node]] = []
    refs: list[list[tuple[str, Node]]] = []
    seen: set[str] = set()
    for position, item in enumerate(items, start=1):
        mark = ctx.mark()
        tier_refs: list[tuple[str, Node]] = []
        refs.append(tier_refs)
        entries = _entries(ctx, item, "a tier")
        if entries is None:
            tiers.append((None, item))  # a mapping node: no name to define
            continue
        _check_keys(ctx, entries, grammar.TIER.names)
        name_node = _require(ctx, item, entries, "name", "a tier")
        tier = _name(
            ctx,
            name_node,
            "tier name",
            TIER_NAME_RE,
            "lower-case letters, digits and _, starting with a letter",
        )
        if tier is not None:
            if tier in seen:
                ctx.error(name_node, f"duplicate tier name '{tier}'")
            seen.add(tier)
            if name is not None and len(f"{name}__{tier}") > MAX_NAME_LENGTH:
                ctx.error(
                    name_node,
                    f"segment name '{name}__{tier}' is longer than {MAX_NAME_LENGTH} characters",
                )
        where_node = _value_of(entries, "where")
        where = None
        if where_node is not None:
            where = _condition(ctx, where_node, replace(env, refs=tier_refs), in_event=False)
        elif position < len(items):
            ctx.error(item, "only the last tier may omit where")
        ok = not ctx.failed_since(mark) and tier is not None
        tiers.append((m.Tier(tier, where) if ok else None, name_node or item))  # type: ignore[arg-type]
    return tiers, refs


def _priority(
    ctx: _Ctx, node: Node, name: str | None
) -> tuple[list[tuple[m.Tier | None, Node]], list[list[tuple[str, Node]]]]:
    """``priority: [a, b, c]``: one tier per listed segment, ``{segment: X}`` its rule,
    so a user is in the first listed segment that holds them only (first match wins,
    as tiers do). The listed names are checked with every spec known, as references."""
    items = _list(ctx, node, "priority")
    if not items:
        if items is not None:
            ctx.error(node, "priority needs at least one segment")
        return [], []
    tiers: list[tuple[m.Tier | None, Node]] = []
    refs: list[list[tuple[str, Node]]] = []
    seen: set[str] = set()
    for item in items:
        segment = _text(ctx, item, "a segment of priority")
        refs.append([(segment, item)] if segment is not None else [])
        if segment is None:
            tiers.append((None, item))
            continue
        if segment in seen:
            ctx.error(item, f"segment '{segment}' is listed twice in priority")
        seen.add(segment)
        if name is not None and len(f"{name}__{segment}") > MAX_NAME_LENGTH:
            ctx.error(item, f"segment name '{name}__{segment}' is longer than {MAX_NAME_LENGTH} characters")
        tiers.append((m.Tier(segment, m.SegmentCondition(segment)), item))
    return tiers, refs


def _sync(
    ctx: _Ctx, node: Node, destinations: dict[str, m.Destination] | None, experiment: m.Experiment | None = None,
) -> tuple[m.SyncTarget, ...] | None:
    """``sync: [{destination, arm?, ...options}]``; options are kept as written."""
    mark = ctx.mark()
    targets = []
    for item in _list(ctx, node, "sync") or []:
        entries = _entries(ctx, item, "a sync entry")
        if entries is None:
            continue
        dest_node = _require(ctx, item, entries, "destination", "a sync entry")
        dest = _text(ctx, dest_node, "destination")
        if dest is not None and destinations is not None and dest not in destinations:
            _unknown(ctx, dest_node, "destination", dest, list(destinations), "_destinations.yml")
        arm = None
        if "arm" in entries:
            arm_node = entries["arm"][1]
            arm = _text(ctx, arm_node, "arm")
            arms = [a for a, _ in experiment.arms] if experiment is not None else []
            if arm is not None and not arms:
                ctx.error(arm_node, "arm: this spec has no experiment")
            elif arm is not None and arm not in arms:
                _unknown(ctx, arm_node, "arm", arm, arms, "the experiment's arms")
        options = {k: _plain(ctx, v) for k, (_, v) in entries.items() if k not in ("destination", "arm")}
        targets.append(m.SyncTarget(dest, options, arm))  # type: ignore[arg-type]
    return None if ctx.failed_since(mark) else tuple(targets)


def _experiment(ctx: _Ctx, node: Node, spec_name: str) -> m.Experiment | None:
    """``experiment: {name?, arms: {arm: percent, ...}}``: at least two arms, positive
    percents with at most two decimals, adding up to 100."""
    mark = ctx.mark()
    entries = _entries(ctx, node, "experiment")
    if entries is None:
        return None
    _check_keys(ctx, entries, grammar.EXPERIMENT.names)
    name = spec_name
    if "name" in entries:
        name = _name(ctx, entries["name"][1], "experiment name", SEGMENT_NAME_RE,
                     "lower-case letters, digits and _, starting with a letter, at most 63 characters") or spec_name
    arms_node = _require(ctx, node, entries, "arms", "an experiment")
    arms_entries = _entries(ctx, arms_node, "arms") if arms_node is not None else None
    if arms_entries is None:
        return None
    arms: list[tuple[str, float]] = []
    for arm, (key_node, value_node) in arms_entries.items():
        if not TIER_NAME_RE.fullmatch(arm):
            ctx.error(key_node, f"invalid arm name '{arm}': lower-case letters, digits and _, starting with a letter")
        percent = _number(ctx, value_node, f"arm {arm}")
        if percent is None:
            continue
        if percent <= 0 or abs(round(percent * 100) - percent * 100) > 1e-6:
            ctx.error(value_node, f"arm {arm}: a percent above 0 with at most two decimals, got {percent}")
            continue
        arms.append((arm, percent))
    if len(arms_entries) < 2:
        ctx.error(arms_node, "an experiment needs at least two arms (a control group alone is holdout: N)")
    total = sum(round(p * 100) for _, p in arms)
    if not ctx.failed_since(mark) and total != 100 * 100:
        ctx.error(arms_node, f"the arms add up to {total / 100:g}%, not 100%")
    return None if ctx.failed_since(mark) else m.Experiment(name, tuple(arms))


def _checks(ctx: _Ctx, node: Node) -> m.Checks | None:
    """``checks: {max_size_change_pct: N}``; what is not written keeps its default."""
    entries = _entries(ctx, node, "checks")
    if entries is None:
        return None
    _check_keys(ctx, entries, CHECK_KEYS)
    pct_node = _value_of(entries, "max_size_change_pct")
    pct = _number(ctx, pct_node, "max_size_change_pct")
    if pct is None:
        return m.Checks()
    if pct <= 0:
        ctx.error(pct_node, f"max_size_change_pct must be a positive percent, got {pct}")
        return None
    return m.Checks(max_size_change_pct=pct)


def _segment(
    ctx: _Ctx,
    path: Path,
    root: Node | None,
    specs_dir: Path,
    env: _Env,
    destinations: dict[str, m.Destination] | None,
) -> tuple[m.SegmentSpec | None, _SpecInfo]:
    """One segment spec file (SPEC 1.2, 1.6)."""
    mark = ctx.mark()
    # The file stem is the name other files see, even when `name:` is wrong.
    info = _SpecInfo(ctx, path.stem, [])
    entries = _entries(ctx, root, "a segment spec") if root is not None else None
    if entries is None:
        info.defines.append((path.stem, root))
        return None, info
    _check_keys(ctx, entries, SEGMENT_KEYS)
    name_node = _require(ctx, root, entries, "name", "a segment spec")
    name = _name(
        ctx,
        name_node,
        "segment name",
        SEGMENT_NAME_RE,
        "lower-case letters, digits and _, starting with a letter, at most 63 characters",
    )
    if name is not None and name != path.stem:
        ctx.error(name_node, f"name '{name}' must equal the file name stem '{path.stem}'")
    description = _free_text(ctx, _value_of(entries, "description"), "description")
    owner = _free_text(ctx, _value_of(entries, "owner"), "owner")
    tags = tuple(
        _free_text(ctx, t, "a tag") for t in _list(ctx, _value_of(entries, "tags"), "tags") or []
    )
    refresh = _refresh(ctx, _value_of(entries, "refresh")) or m.DEFAULT_REFRESH
    holdout = _holdout(ctx, _value_of(entries, "holdout"))
    experiment = None
    if "experiment" in entries:
        if "holdout" in entries:
            ctx.error(entries["experiment"][0], "holdout and experiment cannot be combined: give the control group an arm")
        experiment = _experiment(ctx, entries["experiment"][1], name or path.stem)

    top_refs: list[tuple[str, Node]] = []
    where_node = _value_of(entries, "where")
    where = None
    if where_node is not None:
        where = _condition(ctx, where_node, replace(env, refs=top_refs), in_event=False)
    upload = None
    if "upload" in entries:
        upload = _upload(ctx, entries["upload"][1], specs_dir, env)
    tiers: list[tuple[m.Tier | None, Node]] = []
    priority: tuple[str, ...] = ()
    for key in ("tiers", "priority"):
        for other in ("upload", "tiers", "where") if key == "priority" else ("upload",):
            if key in entries and other in entries:
                ctx.error(entries[key][0], f"{other} and {key} cannot be combined in one spec")
    if "tiers" in entries or "priority" in entries:
        info.tiered = True
        if "tiers" in entries:
            tiers, tier_refs = _tiers(ctx, entries["tiers"][1], info.name, env)
        else:
            tiers, tier_refs = _priority(ctx, entries["priority"][1], info.name)
            priority = tuple(tier.name for tier, _ in tiers if tier is not None)
        info.refs.extend(ref for refs in tier_refs for ref in refs)
        for index, (_, node) in enumerate(tiers):
            if _kind(node) != "text" or f"{info.name}__{node.value}" in info.deps:
                continue  # a broken or duplicate tier name, already reported
            full = f"{info.name}__{node.value}"
            info.defines.append((full, node))
            # First match wins: tier i depends on every earlier tier's rule too.
            info.deps[full] = top_refs + [r for refs in tier_refs[: index + 1] for r in refs]
    else:
        info.defines.append((info.name, name_node or root))
        info.deps[info.name] = top_refs
    info.refs.extend(top_refs)
    if (
        where_node is None
        and not {"upload", "tiers", "priority"} & entries.keys()
        and not _misspelt(ctx, entries, "where")
    ):
        ctx.error(root, "a segment spec needs 'where' (or 'upload', 'tiers' or 'priority')")
    sync = ()
    if "sync" in entries:
        sync = _sync(ctx, entries["sync"][1], destinations, experiment)
    checks = m.Checks()
    if "checks" in entries:
        checks = _checks(ctx, entries["checks"][1])

    if ctx.failed_since(mark):
        return None, info
    spec = m.SegmentSpec(
        name=name,
        path=path,
        description=description,
        owner=owner,
        tags=tags,  # type: ignore[arg-type]
        refresh=refresh,
        where=where,
        holdout=holdout,
        experiment=experiment,
        upload=upload,
        tiers=tuple(tier for tier, _ in tiers),
        priority=priority,
        sync=sync,
        checks=checks,  # type: ignore[arg-type]
        location=ctx.loc(root),  # type: ignore[arg-type]
    )
    return spec, info
