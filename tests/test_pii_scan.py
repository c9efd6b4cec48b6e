"""No member data outside the warehouse (issue 14, SPEC 3.2).

The demo (data, build, sync), uploads of lists of the demo users' emails and phones, a
build and a preview of them, a Dagster refresh in process and a sync; then every file
of the repository checkout (what git tracks, and every file the run wrote in it: dbt's
``target/`` and ``logs/`` among them), the work directory and ``DAGSTER_HOME`` is
searched for every email and phone number of the demo users and of the uploaded lists.
The warehouse files are the one place they belong, and are not searched.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from segments import paths
from segments.cli import main

AS_OF = dt.datetime(2026, 1, 15)
EMAIL = re.compile(rb"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]+")
# a phone as people write it: digits with spaces, dots, dashes or parentheses between
PHONE = re.compile(rb"\+?[0-9][0-9 ().-]{6,}[0-9]")
WAREHOUSE_FILES = (".duckdb", ".duckdb.wal")


def national(number: str) -> str:
    """The last ten digits: the part of a phone every format keeps."""
    return re.sub(r"[^0-9]", "", number)[-10:]


def found_in(path: Path, emails: set[str], phones: set[str], offset: int = 0) -> list[str]:
    """What of the member data ``path`` holds (from byte ``offset``), said as kinds
    and counts (a failing test must not print the data either)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read().lower()
    except OSError:
        return []
    hits = [f"{len(e)} email(s)" for e in [{m for m in EMAIL.findall(data) if m.decode() in emails}] if e]
    numbers = {national(m.decode()) for m in PHONE.findall(data)} & phones
    return hits + ([f"{len(numbers)} phone(s)"] if numbers else [])


def untracked_sizes() -> dict[Path, int]:
    """The size of every file of the checkout outside git and the virtualenv."""
    out = {}
    for path in paths.ROOT.rglob("*"):
        if ".venv" not in path.parts and ".git" not in path.parts and path.is_file():
            out[path] = path.stat().st_size
    return out


def scanned(roots: list[Path], before: dict[Path, int], since: float) -> dict[Path, int]:
    """Each file to search, with the offset to search from: what git tracks, whole;
    what the run wrote in the checkout (dbt's target and logs...), from where it
    stood before the run (an older log is not this run's doing); ``roots``, whole."""
    root = paths.ROOT
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    files = {root / name.decode(): 0 for name in tracked if name}
    for path, size in untracked_sizes().items():
        if path.stat().st_mtime >= since and path not in files:
            files[path] = before.get(path, 0) if before.get(path, 0) <= size else 0
    for folder in roots:
        files.update({p: 0 for p in folder.rglob("*") if p.is_file()})
    return {p: offset for p, offset in files.items() if p.is_file() and not p.name.endswith(WAREHOUSE_FILES)}


DAGSTER_YAML = """\
storage:
  sqlite:
    base_dir: {home}/storage
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {home}
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home}/logs
telemetry:
  enabled: false
"""


def test_no_member_data_in_any_file_the_pipeline_writes(tmp_path, dbt_manifest, monkeypatch, capsys):
    before = untracked_sizes()
    started = time.time() - 1
    work, home, inbox = tmp_path / "work", tmp_path / "dagster_home", tmp_path / "inbox"
    for folder in (work, home, inbox):
        folder.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(home=home))
    monkeypatch.setenv("SEGMENTS_WORK_DIR", str(work))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv(paths.WAREHOUSE_ENV, str(warehouse))
    monkeypatch.setenv("SEGMENTS_TARGET", "duckdb")

    # the demo: sample data, a build of the repository's specs, syncs to a local receiver
    assert main(["demo", "--users", "400", "--warehouse", str(warehouse), "--as-of", AS_OF.isoformat()]) == 0
    con = duckdb.connect(str(warehouse), read_only=True)
    users = con.execute("SELECT user_id, email, phone FROM raw.users").fetchall()
    con.close()
    emails = {e.strip().lower() for _, e, _ in users if e}
    phones = {national(p) for _, _, p in users if p and len(national(p)) == 10}
    assert len(emails) > 300 and len(phones) > 300

    # a Dagster refresh in process of the repository's specs, its runs stored in DAGSTER_HOME
    from dagster import DagsterInstance
    from sync.receiver import AudienceReceiver
    from sync_fixtures import SECRET

    from orchestration.assets import AS_OF_TAG, format_as_of
    from orchestration.definitions import defs
    from orchestration.schedules import FULL_REFRESH_JOB

    with AudienceReceiver(SECRET) as receiver:
        monkeypatch.setenv("CRM_HOOK_URL", receiver.url)
        monkeypatch.setenv("CRM_HOOK_SECRET", SECRET)
        monkeypatch.setenv("SEGMENTS_EXPORT_DIR", str(work / "exports"))
        with DagsterInstance.from_config(str(home)) as instance:
            result = defs.resolve_job_def(FULL_REFRESH_JOB).execute_in_process(
                instance=instance, tags={AS_OF_TAG: format_as_of(AS_OF)}, raise_on_error=False
            )
        assert any(e.asset_key.to_user_string() == "seg_vip_upload" for e in result.get_asset_materialization_events())

        # lists of those users uploaded, in the messy forms people paste, plus strangers
        # (built, not written: this file is searched too)
        strangers = ["Stranger.One" + "@Example.org", f"+91 {9_988_776_655 // 100_000} {9_988_776_655 % 100_000}"]
        (inbox / "mailing.csv").write_text("email\n" + "\n".join(f" {e.upper()} " for e in sorted(emails)[:50]) + f"\n{strangers[0]}\n")
        pasted = [p for _, _, p in users if p][:50]
        (inbox / "callers.csv").write_text("phone,note\n" + "\n".join(f'"{p}",x' for p in pasted) + f'\n"{strangers[1]}",x\n')
        emails.add(strangers[0].lower())
        phones.add(national(strangers[1]))
        specs = work / "specs"
        shutil.copytree(paths.SPECS_DIR, specs)
        (specs / "mailing.yml").write_text("name: mailing\nupload: {match_on: email}\n")
        (specs / "callers.yml").write_text("name: callers\nupload: {match_on: phone}\nsync:\n  - destination: crm_hook\n")
        common = ["--specs", str(specs), "--warehouse", str(warehouse)]
        assert main(["upload", "mailing", str(inbox / "mailing.csv"), *common]) == 0
        assert main(["upload", "callers", str(inbox / "callers.csv"), *common]) == 0
        assert main(["build", *common, "--as-of", AS_OF.isoformat()]) == 0
        assert main(["preview", "callers", "--sql-full", *common]) == 0
        out = capsys.readouterr().out
        assert "callers: 50 members" in out and "uploaded list: 50 users matched, 1 listed keys unmatched" in out

        # then a sync of everything, uploaded lists included
        assert main(["sync", "--destination", "crm_hook", *common]) == 0
        assert main(["sync", "--destination", "exports", *common]) == 0
        assert "callers" in receiver.audiences

    roots = [work, home, paths.DBT_PROJECT_DIR / "target", paths.DBT_PROJECT_DIR / "logs"]
    files = scanned(roots, before, started)
    assert any(p.name == "dbt.log" for p in files) and any(p.is_relative_to(home / "storage") for p in files)
    leaks = {str(p): hits for p, offset in files.items() if (hits := found_in(p, emails, phones, offset))}
    assert not leaks, f"member data outside the warehouse: {leaks}"


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        (b"x ASHA.Rao@Example.com y", ["1 email(s)"]),
        (b"phone=+91 98765 43210;", ["1 phone(s)"]),
        (b'"0091-98765-43210" and 098765 43210', ["1 phone(s)"]),
        (b"other@example.com 2026-01-15 00:00:00 98765 43219", []),
    ],
    ids=["email", "e164", "other_formats", "none"],
)
def test_the_scan_finds_member_data_in_any_format(tmp_path, text, hits):
    path = tmp_path / "f.log"
    path.write_bytes(b"header\n" + text)
    assert found_in(path, {"asha.rao@example.com"}, {national("9876543210")}) == hits
    assert found_in(path, {"asha.rao@example.com"}, {national("9876543210")}, offset=len(path.read_bytes())) == []
