# The two commands of the README. Both set everything up on a fresh machine first:
# a virtualenv in .venv with the pinned versions of constraints.txt.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Sample data -> every example segment built in embedded DuckDB -> sizes.
# Honours SEGMENTS_WAREHOUSE (or pass ARGS="--warehouse PATH").
demo: $(STAMP)
	$(VENV)/bin/segments demo $(ARGS)

# The whole test suite (what .ci/run runs).
test: $(STAMP)
	$(VENV)/bin/pytest $(ARGS)

clean:
	rm -rf $(VENV) .segments dbt_project/target dbt_project/logs warehouse.duckdb
