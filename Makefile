# Two commands from a fresh clone: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLE := data/nyc-uber-2014-04-04.parquet

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/matcher compare $(SAMPLE) --out runs/demo --policies greedy,batch:2 --drivers 150
	@echo "report: runs/demo/report.html"
	$(BIN)/matcher replay data/synth-small.parquet --drivers data/synth-small-drivers.parquet \
	    --out runs/demo-ray --shards 2 --backend ray --num-cpus 0.5

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf runs .pytest_cache .hypothesis
