"""profiles.yml read as dbt reads it: ``env_var()`` rendered from the environment.

A value that is a plain ``{{ env_var('NAME') }}`` (with or without a default) is read
without jinja; every other template goes through jinja. Both must give the same value.
"""

from __future__ import annotations

import pytest

from segments.engines import profiles
from segments.errors import SegmentsError

ENV = {"SET": "/data/w.duckdb", "EMPTY": ""}

TEMPLATES = [
    "{{ env_var('SET') }}",
    "{{env_var('SET')}}",
    "{{ env_var('SET', 'fallback') }}",
    "{{ env_var('UNSET', 'fallback') }}",
    "{{ env_var( 'UNSET' , '' ) }}",
    "{{ env_var('EMPTY', 'fallback') }}",
    "{{ env_var('EMPTY') }}",
    # not plain: rendered by jinja
    "{{ env_var('SET') }}/warehouse",
    "{{ env_var('UNSET', '5432') | as_number }}",
    "{{ env_var(\"SET\") }}",
    "x{{ env_var('SET') }}",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_value_renders_as_jinja_renders_it(template):
    assert profiles._render(template, ENV, []) == profiles._renderer(ENV).from_string(template).render()


@pytest.mark.parametrize("template", ["{{ env_var('UNSET') }}", "{{ env_var('UNSET') }}/x"])
def test_an_unset_variable_without_default_is_an_error(template):
    with pytest.raises(SegmentsError, match="UNSET, which is not set"):
        profiles._render(template, ENV, [])


def test_nested_values_render_and_others_stay():
    value = {"path": "{{ env_var('SET') }}", "threads": 2, "settings": ["{{ env_var('UNSET', '1GB') }}", "plain"]}
    assert profiles._render(value, ENV, []) == {"path": "/data/w.duckdb", "threads": 2, "settings": ["1GB", "plain"]}


def test_the_duckdb_output_needs_no_jinja(tmp_path):
    """The committed profile's duckdb output is plain env_var()s: read at every
    command's start, it does not import jinja."""
    import subprocess
    import sys

    check = (
        "import sys; from segments.engines import profiles; "
        f"print(profiles.output('duckdb', {{'SEGMENTS_WAREHOUSE': {str(tmp_path / 'w.duckdb')!r}}})['path'], 'jinja2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=profiles.paths.ROOT)
    assert done.stdout.split() == [str(tmp_path / "w.duckdb"), "False"]
