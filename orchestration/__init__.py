"""Dagster orchestration of the segments: assets, checks, schedules, gating.

``orchestration.definitions`` assembles the code location; each concern lives in its
own module (project, translator, resources, assets, checks, schedules, gating,
sync_assets).
"""
