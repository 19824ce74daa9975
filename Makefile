# Set-up is part of every target: a fresh machine needs only python3 (and make).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
CHECK_DB := $(shell mktemp -u /tmp/advisor-check-XXXXXX).db

# Parallel test processes: the tests mostly wait on worker subprocesses and I/O, so more
# processes than cores pay (docs/testing.md has the measurements). xdist hands out work in
# tests/conftest.py's order (longest first), not re-sorted by the number of tests per group.
TEST_WORKERS ?= 4

.PHONY: check test test-fast lint demo system-deps demo-deps clean bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

# The tests' system packages (a superset of the demo's); the demo needs only OpenBLAS.
system-deps:
	@bash scripts/system-deps.sh test

demo-deps:
	@bash scripts/system-deps.sh demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy alembic  # the migration scripts: a directory, not a package
	ADVISOR_DATABASE_URL=sqlite:///$(CHECK_DB) $(VENV)/bin/alembic upgrade head
	ADVISOR_DATABASE_URL=sqlite:///$(CHECK_DB) $(VENV)/bin/alembic check
	rm -f $(CHECK_DB)

# Everything, in parallel; tests sharing a module's live stack stay on one process.
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# No worker, gateway or server subprocess: the tier to run while editing.
test-fast: $(STAMP) system-deps
	$(VENV)/bin/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Lint (about 40 s with a cold mypy cache) runs beside the tests, its output shown after
# theirs; either failing fails the check.
check: $(STAMP) system-deps
	@lint_log=$$(mktemp); \
	$(MAKE) --no-print-directory lint >"$$lint_log" 2>&1 & lint_pid=$$!; \
	$(MAKE) --no-print-directory test; tests=$$?; \
	wait $$lint_pid; lint=$$?; \
	echo "--- make lint (exit $$lint)"; cat "$$lint_log"; rm -f "$$lint_log"; \
	[ $$tests -eq 0 ] && [ $$lint -eq 0 ]

demo: $(STAMP) demo-deps
	$(VENV)/bin/advisor demo

bench: $(STAMP) demo-deps
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
