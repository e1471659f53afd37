# Quick start: `make demo` (set up + run the whole workflow on the bundled digits data), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/part: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The release's AutoAttack (attack aa_release); without its dependencies, as its pin of requests 2.25,
	# which it never imports, would downgrade the requests that snakemake uses.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt torchattacks
	touch $@

setup: $(BIN)/part

demo: $(BIN)/part
	$(BIN)/python -m part.workflow_lock --cores 2 --configfile configs/demo.yaml

test: $(BIN)/part
	$(BIN)/pytest -q

bench: $(BIN)/part
	$(BIN)/python benchmarks/train_throughput.py --model small_cnn --size 8 --channels 1 --n 1024

clean:
	rm -rf results logs data/prepared
