"""Destinations by the ``type:`` of ``_destinations.yml``."""

from __future__ import annotations

from sync.destinations.base import Destination
from sync.destinations.csvfile import CsvDestination
from sync.destinations.webhook import WebhookDestination

REGISTRY: dict[str, type[Destination]] = {
    cls.type: cls for cls in (WebhookDestination, CsvDestination)
}
