"""Push segment membership changes to chat and messaging platforms (SPEC 4)."""
