"""The pre-commit hooks and the GitHub Actions review workflow call real commands."""

from __future__ import annotations

import re
import shlex
import pytest
import typer
import yaml

from segments import paths
from segments.cli import app, main, with_plugins

PRE_COMMIT = paths.ROOT / ".pre-commit-config.yaml"
WORKFLOW = paths.ROOT / ".github" / "workflows" / "segment-review.yml"
SEGMENTS = ".venv/bin/segments"


def hooks() -> list[dict]:
    return [hook for repo in yaml.safe_load(PRE_COMMIT.read_text())["repos"] for hook in repo["hooks"]]


def options_of(command: str) -> set[str]:
    with_plugins()  # demo is sync's
    group = typer.main.get_command(app)
    return {name for param in group.commands[command].params for name in param.opts}  # type: ignore[attr-defined]


@pytest.mark.parametrize("hook", hooks(), ids=lambda hook: hook["id"])
def test_pre_commit_hook_passes_on_the_repository(capsys, hook):
    program, *argv = shlex.split(hook["entry"])
    assert program == SEGMENTS and hook["pass_filenames"] is False
    assert main(argv) == 0, capsys.readouterr()


@pytest.mark.parametrize(
    ("path", "hook_ids"),
    [
        ("segment_specs/abandoned_cart.yml", {"segments-validate", "segments-compile-check", "segments-test"}),
        ("segment_specs/engagement.tests.yml", {"segments-validate", "segments-compile-check", "segments-test"}),
        ("dbt_project/models/segments/seg_vip_upload.sql", {"segments-compile-check"}),
        ("segments/spec/grammar.py", {"segments-compile-check", "segments-schema-check", "segments-test"}),
        ("schemas/segment.schema.json", {"segments-schema-check"}),
        ("README.md", set()),
    ],
)
def test_pre_commit_hooks_run_on_the_files_they_check(path, hook_ids):
    assert {hook["id"] for hook in hooks() if re.search(hook["files"], path)} == hook_ids


def test_review_workflow_runs_real_commands():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "segment_specs/**" in workflow[True]["pull_request"]["paths"]  # YAML 1.1 reads `on` as true
    steps = workflow["jobs"]["review"]["steps"]
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch's specs come from git
    commands = [
        shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", line))
        for step in steps
        for line in step.get("run", "").splitlines()
        if line.startswith(SEGMENTS)
    ]
    assert [argv[1] for argv in commands] == ["demo", "review"]
    for argv in commands:
        used = {token for token in argv[2:] if token.startswith("--")}
        assert used <= options_of(argv[1]), argv
    review = commands[1]
    report = review[review.index("--out") + 1]
    assert f"--body-file {report}" in WORKFLOW.read_text()  # the comment posts what the review wrote
