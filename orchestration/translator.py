"""dbt nodes as Dagster assets, driven by the metadata ``segments compile`` writes.

Every segment model's properties file carries ``config.meta.segments``: the segment's
name, its spec file, refresh cron, holdout, size-check threshold, owner and sync
destinations (see :func:`segments.compiler.segment_models.segment_model`). This module is the
one place that reads it: :class:`SegmentsTranslator` turns it into Dagster groups,
owners, tags and metadata, and :func:`segment_nodes` into the list the checks,
schedules and downstream assets are made from. No model is treated specially by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, MetadataValue
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import default_description_fn

META_KEY = "segments"  # config.meta.segments in the generated properties files
SEGMENT_TAG = "segments/segment"  # on a segment's model and on everything downstream of it
SEGMENTS_GROUP = "segments"  # segments with neither owner nor tags
BUILD_GROUP = "build"  # the models every segment is built from


def slug(text: str) -> str:
    """A Dagster group name for an owner or a tag.

    >>> slug("sales-team")
    'sales_team'
    >>> slug("Growth & Ads")
    'growth_ads'
    """
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


def segment_meta(dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the compiler wrote about a segment model; empty for every other node."""
    return (dbt_resource_props.get("meta") or {}).get(META_KEY) or {}


class SegmentsTranslator(DagsterDbtTranslator):
    """Groups segments by owner (else first tag), owners as ``team:<owner>``, the
    spec path, refresh cron, checks and compiled SQL as metadata."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        # A model is known by its name (dagster-dbt would prefix the build schema).
        if dbt_resource_props.get("resource_type") == "model":
            return AssetKey([dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        meta = segment_meta(dbt_resource_props)
        if not meta:
            return BUILD_GROUP
        for candidate in (meta.get("owner"), *dbt_resource_props.get("tags", ())):
            if candidate and slug(candidate):
                return slug(candidate)
        return SEGMENTS_GROUP

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        owner = segment_meta(dbt_resource_props).get("owner")
        if not owner:
            return None
        return [owner if "@" in owner else f"team:{owner}"]

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return default_description_fn(dbt_resource_props, display_raw_sql=False)

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = dict(super().get_tags(dbt_resource_props))
        segment = segment_meta(dbt_resource_props).get("segment")
        if segment:
            tags[SEGMENT_TAG] = segment
        return tags

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        metadata: dict[str, Any] = dict(super().get_metadata(dbt_resource_props))
        for key, value in segment_meta(dbt_resource_props).items():
            metadata[f"{META_KEY}/{key}"] = value
        spec = segment_meta(dbt_resource_props).get("spec")
        if spec:
            metadata[f"{META_KEY}/spec"] = MetadataValue.path(spec)  # relative to the repository
        sql = dbt_resource_props.get("raw_code")
        if sql:
            metadata[f"{META_KEY}/sql"] = MetadataValue.md(f"```sql\n{sql.strip()}\n```")
        return metadata


@dataclass(frozen=True)
class SegmentNode:
    """One segment as the compiler described it, with its Dagster asset key."""

    name: str
    key: AssetKey
    group: str
    spec: str
    refresh: str
    max_size_change_pct: float
    holdout_pct: float = 0
    owner: str | None = None
    destinations: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()  # the experiment's arms, if any


def segment_nodes(manifest: Mapping[str, Any], translator: DagsterDbtTranslator) -> tuple[SegmentNode, ...]:
    """Every segment model of a dbt manifest, in name order."""
    nodes = []
    for props in manifest["nodes"].values():
        meta = segment_meta(props)
        if props.get("resource_type") != "model" or not meta:
            continue
        nodes.append(SegmentNode(
            name=meta["segment"],
            key=translator.get_asset_key(props),
            group=translator.get_group_name(props) or SEGMENTS_GROUP,
            spec=meta["spec"],
            refresh=meta["refresh"],
            max_size_change_pct=meta["max_size_change_pct"],
            holdout_pct=meta.get("holdout_pct", 0),
            owner=meta.get("owner"),
            destinations=tuple(meta.get("sync", ())),
            arms=tuple((meta.get("experiment") or {}).get("arms", {})),
        ))
    return tuple(sorted(nodes, key=lambda node: node.name))


def model_key(manifest: Mapping[str, Any], translator: DagsterDbtTranslator, name: str) -> AssetKey:
    """The asset key of the model called ``name``."""
    for props in manifest["nodes"].values():
        if props.get("resource_type") == "model" and props["name"] == name:
            return translator.get_asset_key(props)
    raise KeyError(f"no dbt model named {name!r} in the manifest: run `segments compile`")


def source_key(manifest: Mapping[str, Any], translator: DagsterDbtTranslator, schema: str, table: str) -> AssetKey:
    """The asset key of the dbt source reading ``schema.table``."""
    for props in manifest["sources"].values():
        if props["schema"] == schema and props["identifier"] == table:
            return translator.get_asset_key(props)
    raise KeyError(f"no dbt source for {schema}.{table} in the manifest: run `segments compile`")
