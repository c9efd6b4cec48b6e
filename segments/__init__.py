"""Audience segments for chat and messaging platforms, compiled to dbt models."""
