# Two commands from a fresh clone: `make demo` and `make test`. Everything installs into .venv,
# at the versions of requirements.lock (the ones CI tested).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLE := data/nyc-uber-2014-04-04.parquet

.PHONY: install demo test test-fast lint format lock bench chromium clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@echo "installing matcher and its dependencies into $(VENV) (a few minutes on a new machine)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONUNBUFFERED=1 $(BIN)/python -m pip install --progress-bar off -c requirements.lock -e '.[test,dev]' \
	    | grep --line-buffered -E '^(Collecting|Successfully)' || true  # unbuffered: one line per package as it comes
	$(BIN)/python -c "import matcher, ray, scipy, polars"  # fail here, not later, on a broken install
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/matcher compare $(SAMPLE) --out runs/demo --policies greedy,batch:2 --drivers 150 --overwrite
	@echo "report: runs/demo/report.html"
	$(BIN)/matcher replay data/synth-small.parquet --drivers data/synth-small-drivers.parquet \
	    --out runs/demo-ray --shards 2 --backend ray --num-cpus 0.5 --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# The tests that need no Ray (seconds, not minutes): the inner loop of development.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not ray and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin requirements.lock to what the venv holds now (after changing pyproject.toml).
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | LC_ALL=C sort > requirements.lock

# Headless Chromium for tests/test_report_browser.py (Debian's package; CI runs this before make test).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	    echo "installing chromium (apt-get) for the report's browser test..."; \
	    SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf runs .pytest_cache .hypothesis
