"""The project a command works on: found from the working directory up, or named by
``--project-dir`` / ``$SEGMENTS_PROJECT_DIR``; ``segments init``; usage errors.

All in process, no dbt: fast.
"""

from __future__ import annotations

import filecmp
import shutil
import tomllib
from pathlib import Path

import pytest

from segments import paths, scaffold
from segments.cli import app, main, with_plugins

REPO = Path(__file__).resolve().parents[1]
with_plugins()  # the commands of sync too: they take the same options
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.PROJECT_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.WAREHOUSE_ENV, raising=False)
    monkeypatch.delenv(paths.WORK_DIR_ENV, raising=False)
    yield
    paths.use(None)


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "shop"
    scaffold.init(root)
    return root


# --- usage errors: every command, exit 2 with its usage and options ----------------

def test_every_command_is_covered():
    assert set(COMMANDS) == {
        "validate", "compile", "schema", "build", "preview", "load", "members", "init", "list", "sync", "demo", "review",
        "upload", "explain", "test", "watch",
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_prints_usage_and_exits_2(capsys, command):
    code, out, err = run(capsys, command, "--bogus-flag")
    assert code == 2
    assert f"Usage: segments {command}" in err and "No such option: --bogus-flag" in err
    options = err.split("Options:")[1]
    assert "--help" in options and ("--project-dir" in options) == (command != "init")
    assert "internal error" not in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["preview"], "Missing argument"),
        (["review"], "Missing option '--base'"),
        (["preview", "x", "--limit"], "requires an argument"),
        (["members", "--segment"], "requires an argument"),
        (["build", "--as-of"], "requires an argument"),
        (["preview", "x", "--limit", "many"], "Invalid value for '--limit'"),
        (["no-such-command"], "No such command"),
    ],
)
def test_missing_or_malformed_arguments_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and "Usage: segments" in err and message in err
    assert "internal error" not in err and "Traceback" not in err


def test_usage_error_lists_the_valid_options(capsys):
    code, _, err = run(capsys, "members", "--segmnt", "x")
    options = err.split("Options:")[1]
    assert code == 2 and all(o in options for o in ("--segment", "--specs", "--warehouse", "--target", "--project-dir"))


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"init"}))
def test_every_project_command_takes_specs_and_project_dir(command):
    callback = next(c.callback for c in app.registered_commands if (c.name or c.callback.__name__) == command)
    params = callback.__code__.co_varnames[: callback.__code__.co_argcount]
    assert "project_dir" in params
    if command not in ("schema", "demo"):
        assert "specs" in params


# --- finding the project ----------------------------------------------------------

def test_the_repository_is_a_project():
    layout = paths.load(REPO)
    assert layout.specs_dir == REPO / "segment_specs" and layout.dbt_project_dir == REPO / "dbt_project"
    assert layout.dagster_home == REPO and (REPO / "dagster.yaml").is_file()


def test_root_is_the_nearest_marked_folder_up(monkeypatch, project):
    inner = project / "segment_specs" / "deeper"
    inner.mkdir()
    monkeypatch.chdir(inner)
    assert paths.current().root == project
    assert paths.SPECS_DIR == project / "segment_specs"
    assert paths.warehouse_path() == project / "warehouse.duckdb"
    assert paths.work_dir() == project / ".segments"


def test_a_pyproject_without_the_table_is_not_a_marker(monkeypatch, project):
    nested = project / "tools"
    nested.mkdir()
    (nested / "pyproject.toml").write_text('[project]\nname = "tools"\n')
    monkeypatch.chdir(nested)
    assert paths.current().root == project


def test_no_project_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "validate")
    assert code == 1 and "no segments project here" in err and "segments init" in err


def test_project_dir_and_environment_override_the_working_directory(capsys, monkeypatch, project, tmp_path):
    other = tmp_path / "other"
    scaffold.init(other)
    (other / "segment_specs" / "new_signups.yml").rename(other / "segment_specs" / "fresh_signups.yml")
    text = (other / "segment_specs" / "fresh_signups.yml").read_text().replace("name: new_signups", "name: fresh_signups")
    (other / "segment_specs" / "fresh_signups.yml").write_text(text)
    monkeypatch.chdir(project)
    assert "new_signups" in run(capsys, "list")[1]
    assert "fresh_signups" in run(capsys, "list", "--project-dir", str(other))[1]
    monkeypatch.setenv(paths.PROJECT_DIR_ENV, str(other))
    assert "fresh_signups" in run(capsys, "list")[1]
    assert "new_signups" in run(capsys, "list", "--project-dir", str(project))[1]  # the option wins
    assert paths.current().root == other  # each invocation starts afresh


def test_paths_are_set_in_the_marker(monkeypatch, project):
    marker = project / "pyproject.toml"
    text = marker.read_text().replace('specs = "segment_specs"', 'specs = "audiences"')
    text = text.replace('warehouse = "warehouse.duckdb"', 'warehouse = "data/wh.duckdb"')
    marker.write_text(text + '\n')
    (project / "segment_specs").rename(project / "audiences")
    monkeypatch.chdir(project)
    layout = paths.current()
    assert layout.specs_dir == project / "audiences" and layout.default_warehouse == project / "data" / "wh.duckdb"
    assert main(["validate"]) == 0


@pytest.mark.parametrize(
    "table, message",
    [
        ('speks = "x"', "unknown key(s) in [tool.segments]: speks"),
        ('models = "../elsewhere"', "models must be a folder inside the dbt project"),
        ("generate_sources = 1", "generate_sources must be true or false"),
        ("specs = 3", "specs must be a non-empty path"),
    ],
)
def test_bad_settings_are_clear_errors(capsys, monkeypatch, tmp_path, table, message):
    (tmp_path / "pyproject.toml").write_text(f"[tool.segments]\n{table}\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "validate")
    assert code == 1 and message in err and "Traceback" not in err


def test_generated_models_go_to_the_configured_folder(capsys, monkeypatch, project):
    marker = project / "pyproject.toml"
    marker.write_text(marker.read_text().replace('models = "models"', 'models = "models/audiences"'))
    monkeypatch.chdir(project)
    code, _, err = run(capsys, "compile")
    assert code == 0, err
    assert (project / "dbt_project" / "models" / "audiences" / "segments" / "seg_new_signups.sql").is_file()
    assert not (project / "dbt_project" / "models" / "segments").exists()
    assert run(capsys, "compile", "--check")[0] == 0


# --- segments init ----------------------------------------------------------------

def test_init_scaffolds_a_project_that_validates(capsys, monkeypatch, tmp_path):
    target = tmp_path / "new project"
    code, out, err = run(capsys, "init", str(target))
    assert code == 0, err
    for rel in ("pyproject.toml", ".gitignore", "README.md", "dagster.yaml", "segment_specs/_catalog.yml",
                "segment_specs/new_signups.yml", "dbt_project/dbt_project.yml", "dbt_project/profiles.yml",
                "dbt_project/macros/segments_as_of.sql"):
        assert (target / rel).is_file(), rel
    settings = tomllib.loads((target / "pyproject.toml").read_text())
    assert settings["project"]["name"] == "new-project" and "segments" in settings["tool"]
    assert settings["tool"]["dagster"]["module_name"] == "orchestration.definitions"
    assert "/.dagster/" in (target / ".gitignore").read_text()
    monkeypatch.chdir(target / "segment_specs")
    assert run(capsys, "validate")[0] == 0


def test_init_in_the_working_directory(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "init")[0] == 0
    assert paths.has_marker(tmp_path) and (tmp_path / "segment_specs" / "_catalog.yml").is_file()


def test_init_never_overwrites(capsys, project, tmp_path):
    code, _, err = run(capsys, "init", str(project))
    assert code == 1 and "a segments project already" in err
    other = tmp_path / "other"
    (other / "segment_specs").mkdir(parents=True)
    (other / "segment_specs" / "_catalog.yml").write_text("mine\n")
    code, _, err = run(capsys, "init", str(other))
    assert code == 1 and "segment_specs/_catalog.yml" in err and "nothing was written" in err
    assert sorted(p.name for p in other.rglob("*")) == ["_catalog.yml", "segment_specs"]
    assert (other / "segment_specs" / "_catalog.yml").read_text() == "mine\n"


def test_init_appends_the_table_to_an_existing_pyproject(capsys, tmp_path):
    original = '[project]\nname = "analytics"\n\n[tool.dagster]\nmodule_name = "analytics.defs"\n'
    (tmp_path / "pyproject.toml").write_text(original)
    assert run(capsys, "init", str(tmp_path))[0] == 0
    text = (tmp_path / "pyproject.toml").read_text()
    settings = tomllib.loads(text)  # still valid TOML: no table twice
    assert text.startswith(original) and settings["tool"]["dagster"]["module_name"] == "analytics.defs"
    assert settings["tool"]["segments"]["specs"] == "segment_specs"


def test_init_is_a_file_error(capsys, tmp_path):
    (tmp_path / "f").write_text("")
    code, _, err = run(capsys, "init", str(tmp_path / "f"))
    assert code == 1 and "is not a directory" in err


# The template is the package's copy of the repository's own static files: they stay one.

@pytest.mark.parametrize("rel", ["dagster.yaml", "dbt_project/dbt_project.yml", "dbt_project/profiles.yml"])
def test_template_files_match_the_repository(rel):
    assert (paths.TEMPLATE_DIR / rel).read_text() == (REPO / rel).read_text()


def test_template_macros_match_the_repository():
    compared = filecmp.dircmp(paths.TEMPLATE_MACROS, REPO / "dbt_project" / "macros")
    differing: list[str] = []

    def walk(cmp: filecmp.dircmp) -> None:
        differing.extend(cmp.left_only + cmp.right_only + cmp.diff_files)
        for sub in cmp.subdirs.values():
            walk(sub)

    walk(compared)
    assert not differing


def test_dagster_storage_lands_in_the_ignored_folder(monkeypatch, project):
    from dagster import DagsterInstance

    monkeypatch.chdir(project)
    with DagsterInstance.from_config(str(project)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
    written = {p.name for p in project.iterdir()} - {rel.parts[0] for rel in scaffold.planned(project)}
    assert written <= {".dagster", ".logs_queue", ".nux", ".telemetry"} and ".dagster" in written
    ignored = (project / ".gitignore").read_text().split()
    assert all(f"/{name}/" in ignored for name in written)
    shutil.rmtree(project / ".dagster")
