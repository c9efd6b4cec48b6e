"""Destinations by the ``type:`` of ``_destinations.yml``."""

from __future__ import annotations

from sync.destinations.base import Destination
from sync.destinations.braze import BrazeDestination
from sync.destinations.chatwoot import ChatwootDestination
from sync.destinations.csvfile import CsvDestination
from sync.destinations.customerio import CustomerIoDestination
from sync.destinations.intercom import IntercomDestination
from sync.destinations.wati import WatiDestination
from sync.destinations.webhook import WebhookDestination

REGISTRY: dict[str, type[Destination]] = {
    cls.type: cls
    for cls in (
        WebhookDestination, CsvDestination, IntercomDestination, ChatwootDestination,
        CustomerIoDestination, BrazeDestination, WatiDestination,
    )
}
