"""No silent mass removal at publish (issue 18, item 5).

A build replaces every published segment at once. When its specs folder is empty,
or when it would drop or empty most of the segments published now (a wrong
``--specs``, a catalog pointing at an empty table), publishing would remove every
member from every audience and the next sync would send the removals: refuse, as the
sync's ``max_remove_pct`` guard does, unless the user says ``--force``.
"""

from __future__ import annotations

from sqlglot import exp

from segments import membership
from segments.compiler import models as md
from segments.engines.base import Session

#: Refuse when more than this share of the published segments would be dropped or emptied.
MAX_LOST_SHARE = 0.5
FORCE_HINT = "if that is intended, build again with --force"


def empty_specs(specs_dir: object) -> str:
    return f"{specs_dir} holds no segments: building would drop every published segment; {FORCE_HINT}"


def _sizes(session: Session, schema: str) -> dict[str, int]:
    if not session.has_table(schema, md.MEMBERSHIP):
        return {}
    sizes = membership.sizes(session, session.engine.table(md.MEMBERSHIP, schema))
    return {name: members for name, (members, _) in sizes.items()}


def refusal(session: Session, published: list[str], segments: list[str]) -> str | None:
    """Why publishing ``segments`` (built in the build schema) over ``published``
    must wait for ``--force``, or None when it may go ahead."""
    if not published:
        return None
    engine = session.engine
    before = _sizes(session, engine.target_schema)
    after = _sizes(session, engine.build_schema)
    kept = set(segments)
    dropped = [s for s in published if s not in kept]
    emptied = [s for s in published if s in kept and before.get(s, 0) > 0 and after.get(s, 0) == 0]
    lost = len(dropped) + len(emptied)
    if lost <= MAX_LOST_SHARE * len(published):
        return None
    parts = [f"drop {len(dropped)}" if dropped else "", f"empty {len(emptied)}" if emptied else ""]
    named = ", ".join(sorted(dropped + emptied)[:5]) + (", ..." if lost > 5 else "")
    return (
        f"this build would {' and '.join(p for p in parts if p)} of the {len(published)} published segments "
        f"({named}); nothing was published; {FORCE_HINT}"
    )
