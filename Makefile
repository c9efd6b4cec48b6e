# The two commands of the README. Both set everything up on a fresh machine first:
# a virtualenv in .venv with the pinned versions of constraints.txt.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test setup clean dagster bench-sync bench-build bench-realtime

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

# The Dagster UI on http://127.0.0.1:3000: segments, checks, schedules, runs.
# DAGSTER_HOME is the root (dagster.yaml), its storage .dagster/ (git-ignored); the
# engine of SEGMENTS_TARGET (duckdb, postgres or spark; duckdb by default) and the
# warehouse of SEGMENTS_WAREHOUSE (absolute: dbt reads it from dbt_project/), by default
# warehouse.duckdb here.
dagster: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" DAGSTER_HOME="$(CURDIR)" \
	SEGMENTS_TARGET="$(or $(SEGMENTS_TARGET),duckdb)" \
	SEGMENTS_WAREHOUSE="$(abspath $(or $(SEGMENTS_WAREHOUSE),warehouse.duckdb))" \
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

# The whole test suite (what .ci/run runs).
test: $(STAMP)
	$(VENV)/bin/pytest $(ARGS)

# The sync benchmark of issue 3 (a script, not a test): segments sync beside drt-core
# on one loopback receiver; writes bench/RESULTS-sync.md. See bench/README.md.
bench-sync: $(STAMP)
	$(VENV)/bin/python bench/sync_bench.py $(ARGS)

# The build benchmark of issue 12 (a script, not a test): segments build of 30 and 200
# segments beside a one-pass floor, one hand-fused query and hand-written queries, on
# time-ordered and shuffled events and at 5M-80M events, compile, preview and refreshes
# after an hour, a day and nothing new, on 1M demo users; writes bench/RESULTS.md.
# See bench/README.md.
bench-build: $(STAMP)
	$(VENV)/bin/python bench/build_bench.py $(ARGS)

# The real-time benchmark of issue 15 (a script, not a test): segments watch on five
# real-time segments, 20 rounds of 1,000 new events, latency to a loopback webhook
# receiver and the watch's memory, beside a full build of the same segments on 1M demo
# users; writes bench/RESULTS-realtime.md. ARGS="--users 100000" for a quick run.
bench-realtime: $(STAMP)
	$(VENV)/bin/python bench/realtime_bench.py $(ARGS)

clean:
	rm -rf $(VENV) .segments dbt_project/target dbt_project/logs warehouse.duckdb test-artifacts
	rm -rf .dagster .logs_queue .nux .telemetry
