"""Owner routing: a spec's ``owner`` reaches the platform with its members.

Where the platform's API has an owner of a contact (Intercom's ``owner_id``, an admin
id), the destination's ``owners:`` option maps each spec owner to it and an add sets
it. Where it has none (Braze, Wati, Customer.io; Chatwoot, whose assignee is a
conversation's, not a contact's), the destination's ``owner_attribute:`` names a
contact attribute an add sets to the owner's name. Both are opt-in: they write
to contacts other tools may read. A remove leaves the owner as it is (someone may
have taken the conversation on since).

The engine hands the owner to the audience among its options, under :data:`OWNER`,
and checks before the first request that every owner a sync routes has its admin id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from segments.errors import SegmentsError
from sync.errors import TerminalError

#: The audience option holding the spec's owner (filled by the engine, not by specs).
OWNER = "_owner"


def owner_of(options: Mapping[str, object]) -> str | None:
    owner = options.get(OWNER)
    return str(owner) if owner not in (None, "") else None


def admin_id(owners: object, owner: str | None) -> str | None:
    """The platform id ``owners`` maps ``owner`` to (None when there is no map or owner).

    >>> admin_id({"sales-team": 991266252}, "sales-team"), admin_id(None, "sales-team"), admin_id({}, None)
    ('991266252', None, None)
    """
    if not isinstance(owners, Mapping) or owner is None:
        return None
    value = owners.get(owner)
    return None if value is None else str(value)


def check_owners(destination: str, owners: object, routed: Iterable[tuple[str, str | None]]) -> None:
    """Every (segment, owner) synced to a destination with an ``owners`` map has an id there.

    >>> check_owners("intercom_main", {"sales": 1}, [("cart", "sales"), ("vip", None)])
    >>> check_owners("intercom_main", {"sales": 1}, [("cart", "lifecycle")])
    Traceback (most recent call last):
    ...
    segments.errors.SegmentsError: destination intercom_main: owners has no id for owner 'lifecycle' (segment cart); add it, or drop owners to route no owner
    """
    if not isinstance(owners, Mapping):
        return
    for segment, owner in routed:
        if owner is not None and owner not in owners:
            raise SegmentsError(
                f"destination {destination}: owners has no id for owner {owner!r} (segment {segment}); "
                "add it, or drop owners to route no owner"
            )


def owner_attribute(destination_options: Mapping[str, object], options: Mapping[str, object]) -> tuple[str, str] | None:
    """(attribute, owner) to set on each add, when the destination names an
    ``owner_attribute`` and the spec has an owner.

    >>> owner_attribute({"owner_attribute": "segment_owner"}, {OWNER: "sales-team"})
    ('segment_owner', 'sales-team')
    >>> owner_attribute({}, {OWNER: "sales-team"}) is None, owner_attribute({"owner_attribute": "o"}, {}) is None
    (True, True)
    """
    attribute, owner = destination_options.get("owner_attribute"), owner_of(options)
    if not attribute or owner is None:
        return None
    return str(attribute), owner


def owner_failed(error: TerminalError) -> TerminalError:
    """A refused owner update, said as such: the record fails (its membership was sent)
    and both are tried again next run.

    >>> str(owner_failed(TerminalError("PUT /contacts/{id} answered 400", 400)))
    'setting the owner failed: PUT /contacts/{id} answered 400'
    """
    return TerminalError(f"setting the owner failed: {error}", error.status)
