"""The JSON Schemas of spec files: fresh, valid, and agreeing with the validator.

The schemas come from the grammar the parser checks keys with. Every spec the
validator accepts (the examples, the golden specs, the acceptance cases) must
validate, every example must point editors at its schema, and each broken spec
below must be rejected by both the validator and the schema.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from segments import paths
from segments.cli import main
from segments.errors import SpecErrors
from segments.spec import schema
from segments.spec.parse import load_project

GOLDEN_SPECS = Path(__file__).parent / "golden" / "specs"
ACCEPTANCE = Path("/work/shared/acceptance")
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


class EditorLoader(yaml.SafeLoader):
    """Reads YAML as an editor's language server does for the schema: times stay text."""


EditorLoader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def kind_of(path: Path) -> str:
    if path.name.endswith((".tests.yml", ".tests.yaml")):
        return "tests"
    return {"_catalog": "catalog", "_traits": "traits"}.get(path.stem, "segment")


def schema_errors(kind: str, text: str) -> list[str]:
    validator = jsonschema.Draft7Validator(schema.document_schema(kind))
    return [error.message for error in validator.iter_errors(yaml.load(text, Loader=EditorLoader))]


def spec_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.stem != "_destinations")


def test_committed_schemas_are_fresh(capsys):
    assert main(["schema", "--check"]) == 0, capsys.readouterr().out


def test_schema_check_shows_what_is_stale(capsys, tmp_path):
    shutil.copytree(paths.SCHEMAS_DIR, tmp_path, dirs_exist_ok=True)
    target = tmp_path / "segment.schema.json"
    target.write_text(target.read_text().replace('"maximum": 50', '"maximum": 40'))
    assert main(["schema", "--check", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert '-      "maximum": 40' in captured.out and '+      "maximum": 50' in captured.out
    assert "changed  segment.schema.json" in captured.err
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert main(["schema", "--check", "--out", str(tmp_path)]) == 0


@pytest.mark.parametrize("kind", sorted(schema.FILE_NAMES))
def test_schemas_are_valid_draft7(kind):
    jsonschema.Draft7Validator.check_schema(schema.document_schema(kind))


@pytest.mark.parametrize(
    "folder",
    [paths.SPECS_DIR, GOLDEN_SPECS, *sorted(ACCEPTANCE.glob("*/segment_specs"))],
    ids=lambda p: str(p.relative_to(p.parents[1])),
)
def test_every_valid_spec_validates(folder):
    load_project(folder)  # the validator accepts them all ...
    failures = {p.name: errors for p in spec_files(folder) if (errors := schema_errors(kind_of(p), p.read_text()))}
    assert not failures  # ... and so does the schema


@pytest.mark.parametrize("path", spec_files(paths.SPECS_DIR), ids=lambda p: p.name)
def test_examples_point_editors_at_their_schema(path):
    match = MODELINE.match(path.read_text().splitlines()[0])
    assert match, "the first line names the schema"
    target = (path.parent / match[1]).resolve()
    assert target == paths.SCHEMAS_DIR / schema.FILE_NAMES[kind_of(path)]
    assert target.is_file()


CATALOG = paths.SPECS_DIR / "_catalog.yml"
TRAITS = paths.SPECS_DIR / "_traits.yml"

# (file, text): each one broken in a way the shape of the file shows.
BROKEN = [
    ("bad.yml", "name: bad\nwher: {attribute: city, is: Pune}\n"),
    ("bad.yml", "name: Bad Name\nwhere: {attribute: city, is: Pune}\n"),
    ("bad.yml", "name: bad\ndescription: no rule\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, is: Pune}\nholdout: 60\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, is: Pune}\nholdout: ten\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, is: Pune, in: [Mumbai]}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, equals: Pune}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, trait: orders_365d, is: Pune}\n"),
    ("bad.yml", "name: bad\nwhere: {property: amount, gt: 1}\n"),
    ("bad.yml", "name: bad\nwhere: {all: {attribute: city, is: Pune}}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: lifetime_value, between: [1, 2, 3]}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, is_set: maybe}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, within: 7days}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, before: yesterday}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, within: 7d, after: now - 1d}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, count: {gte: 2}, active_days: {gte: 1}}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, count: 3}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, sum: {gte: 3}}\n"),
    ("bad.yml", "name: bad\nwhere: {within: 7d, count: {gte: 1}}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, is: 1}\n"),
    ("bad.yml", "name: bad\nwhere: {event: purchase, is: true, count: {gte: 2}}\n"),
    ("bad.yml", "name: bad\nwhere: {event: cart_add, followed_by: {event: purchase}, not_followed_by: {event: purchase}}\n"),
    ("bad.yml", "name: bad\nwhere: {event: cart_add, not_followed_by: {event: purchase, within: soon}}\n"),
    ("bad.yml", "name: bad\nwhere: {event: page_view, where: {attribute: city, is: Pune}}\n"),
    ("bad.yml", "name: bad\ntags: {a: b}\nwhere: {attribute: city, is: Pune}\n"),
    ("bad.yml", "name: bad\nrefresh: 0 6 * *\nwhere: {attribute: city, is: Pune}\n"),
    ("bad.yml", "name: bad\ntiers: []\n"),
    ("bad.yml", "name: bad\ntiers:\n  - {where: {attribute: city, is: Pune}}\n"),
    ("bad.yml", "name: bad\ntiers:\n  - {name: Top, where: {attribute: city, is: Pune}}\n"),
    ("bad.yml", "name: bad\nupload: {file: uploads/vip_list.csv, match_on: mobile}\n"),
    ("bad.yml", "name: bad\nupload: {match_on: email}\n"),
    ("bad.yml", "name: bad\nupload: {file: uploads/vip_list.csv, match_on: email}\ntiers:\n  - {name: all}\n"),
    ("bad.yml", "name: bad\nwhere: {attribute: city, is: Pune}\nsync:\n  - {tag: x}\n"),
    ("_catalog.yml", CATALOG.read_text().replace("users:", "people:", 1)),
    ("_catalog.yml", CATALOG.read_text().replace("city: {type: string}", "city: {type: text}")),
    ("_catalog.yml", CATALOG.read_text().replace("table: raw.users", "table: a.b.c")),
    ("_catalog.yml", CATALOG.read_text().replace("  timestamp: occurred_at\n", "")),
    ("_traits.yml", "traits:\n  orders: {event: purchase, count: true, active_days: true}\n"),
    ("_traits.yml", "traits:\n  orders: {event: purchase}\n"),
    ("_traits.yml", "traits:\n  orders: {event: purchase, count: false}\n"),
    ("_traits.yml", "traits:\n  spend: {event: purchase, sum: true}\n"),
    ("_traits.yml", "traits:\n  orders: {event: purchase, count: true}\n  score: {quantile: orders}\n"),
    ("_traits.yml", "traits:\n  orders: {event: purchase, count: true}\n  score: {quantile: orders, buckets: 0}\n"),
    ("_traits.yml", "traits:\n  Orders: {event: purchase, count: true}\n"),
]


ACCEPTED = [
    "name: ok\nwhere: {event: purchase, is: true}\n",
    "name: ok\nwhere: {event: purchase, within: 30d, is: false}\n",
    "name: ok\nwhere: {event: cart_add, is: true, not_followed_by: {event: purchase}}\n",
    "name: ok\nwhere: {attribute: signup_at, between: [2024-01-01, now - 7d]}\n",
    "name: ok\nwhere: {attribute: lifetime_value, between: [10, 20.5]}\n",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_specs_pass_validator_and_schema(tmp_path, text):
    specs = tmp_path / "specs"
    shutil.copytree(paths.SPECS_DIR, specs)
    (specs / "ok.yml").write_text(text)
    assert load_project(specs).spec("ok")
    assert schema_errors("segment", text) == []


@pytest.mark.parametrize(("name", "text"), BROKEN, ids=[f"{i:02d}-{n}" for i, (n, _) in enumerate(BROKEN)])
def test_broken_specs_are_rejected_by_validator_and_schema(tmp_path, name, text):
    specs = tmp_path / "specs"
    shutil.copytree(paths.SPECS_DIR, specs)
    (specs / name).write_text(text)
    with pytest.raises(SpecErrors):
        load_project(specs)
    assert schema_errors(kind_of(Path(name)), text)
