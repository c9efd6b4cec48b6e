"""The Dagster UI: the web server on loopback, looked at in headless Chromium.

The web server is started from Python with the default signal handlers (a shell's
background jobs may ignore SIGINT and SIGTERM, and so would it) and stopped by its
process id. Chromium is Debian's (``apt-get install chromium``, which .ci/run does);
Playwright only drives it. The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.translator import slug
from segments import paths
from segments.compiler import models as md
from segments.spec.parse import load_project

CHROMIUM = shutil.which("chromium")
ARTIFACTS = paths.ROOT / "test-artifacts"
STARTUP_LIMIT_S = 300  # a guard against a server that never comes up, not a measure

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def webserver(dbt_manifest, tmp_path_factory) -> Iterator[str]:
    """``dagster-webserver`` for the code location, on 127.0.0.1 and a free port."""
    home = tmp_path_factory.mktemp("dagster_home")
    # the project's dagster.yaml, its storage (relative to the working directory) moved here
    text = (paths.DAGSTER_HOME / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text.replace("base_dir: .dagster", f"base_dir: {home}/.dagster"))
    log = home / "webserver.log"
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        paths.WAREHOUSE_ENV: str(home / "warehouse.duckdb"),
        "SEGMENTS_TARGET": "duckdb",
    }
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=paths.ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            preexec_fn=_default_signals, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while not _answers(f"{url}/server_info"):
            if process.poll() is not None or time.monotonic() - started > STARTUP_LIMIT_S:
                pytest.fail(f"dagster-webserver did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"dagster-webserver answered after {time.monotonic() - started:.1f}s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # and the code server it started, in its own session
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_asset_graph_lists_every_segment_by_owner(webserver):
    from playwright.sync_api import sync_playwright

    project = load_project(paths.SPECS_DIR)
    owners = {slug(spec.owner) for spec in project.segments if spec.owner}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 4000})  # tall: the sidebar renders only rows in view
            page.goto(f"{webserver}/asset-groups")
            page.get_by_text("Global asset lineage").wait_for()
            groups = page.get_by_role("button", name=re.compile(r"^asset_group "))
            groups.first.wait_for()
            # unfold every group of the sidebar (its caret precedes it), last first: an unfolded
            # group pushes the ones below it, so going upwards never moves the next target
            for index in reversed(range(groups.count())):
                groups.nth(index).locator("xpath=preceding::button[1]").click()
            for name in project.segment_names():
                page.get_by_text(md.segment_model_name(name), exact=True).first.wait_for(state="attached")
            page.screenshot(path=str(ARTIFACTS / "dagster-asset-graph.png"))
            listed = page.inner_text("body")
        finally:
            browser.close()
    assert all(md.segment_model_name(name) in listed for name in project.segment_names())
    assert owners <= set(listed.split())


def test_automation_lists_the_refresh_schedules(webserver):
    from playwright.sync_api import sync_playwright

    crons = {spec.refresh for spec in load_project(paths.SPECS_DIR).segments}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{webserver}/automation")
            page.get_by_text("refresh_minute_0_schedule").wait_for()
            listed = page.inner_text("body")
        finally:
            browser.close()
    assert sum(line.endswith("_schedule") for line in listed.split()) == len(crons)
