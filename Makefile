# The two commands: `make demo` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
DEMO_DIR ?= demo-mesh

.PHONY: demo test venv lint bench screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/trustmesh demo $(DEMO_DIR) --port $(PORT)

# pytest twice: on SQLite (with the Spark engine, the browser, the OpenAPI properties, the slow end-to-end
# tests and a --quick run of every bench/ script), then with every test mesh on a fresh PostgreSQL database
# (each test skips, saying why, where no server answers).
test: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2
	TRUSTMESH_TEST_METASTORE=postgresql $(BIN)/python -m pytest -n 2 -q -m "not spark and not browser and not schemathesis and not slow"

bench: venv
	$(BIN)/python bench/build.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/lineage.py
	$(BIN)/python bench/access.py
	$(BIN)/python bench/query.py
	$(BIN)/python bench/governance.py
	$(BIN)/python bench/scale.py

screenshots: venv  # the journey in a real browser, then its pages into docs/screenshots for the README
	TRUSTMESH_README_SCREENSHOTS=1 $(BIN)/python -m pytest tests/test_browser.py -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .artifacts
