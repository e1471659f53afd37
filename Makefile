# Quick start: `make demo` (set up + train every method on the bundled digits data), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs/demo
METHODS := natural at trades mart part part_trades part_mart

.PHONY: setup demo test bench clean

$(BIN)/part: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/part

data/prepared/digits.pt: | $(BIN)/part
	$(BIN)/part prepare --dataset digits --out data/prepared

demo: $(BIN)/part data/prepared/digits.pt
	for m in $(METHODS); do \
	  $(BIN)/part train --config configs/digits.yaml --set method=$$m --out $(RUNS)/$$m || exit 1; \
	done

test: $(BIN)/part
	$(BIN)/pytest -q

bench: $(BIN)/part
	$(BIN)/python benchmarks/train_throughput.py --model small_cnn --size 8 --channels 1 --n 1024

clean:
	rm -rf $(RUNS) data/prepared
