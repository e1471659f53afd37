# Quick start: `make demo` (set up + run the whole workflow on the bundled digits data), `make test`;
# `make check-demo` checks a finished demo's outputs (and that the current sources made them).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo check-demo test bench clean

$(BIN)/part: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# The release's AutoAttack (attack aa_release); without its dependencies, as its pin of requests 2.25,
	# which it never imports, would downgrade the requests that snakemake uses.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt torchattacks
	touch $@

setup: $(BIN)/part

# Outputs that other sources made are all rerun (part.workflow.fingerprint prints --forceall for them).
demo: $(BIN)/part
	force=$$($(BIN)/python -m part.workflow.fingerprint results) && \
	$(BIN)/python -m part.workflow.workflow_lock --cores 2 --configfile configs/demo.yaml $$force

check-demo: $(BIN)/part
	$(BIN)/pytest -q -m demo

test: $(BIN)/part
	$(BIN)/pytest -q

bench: $(BIN)/part
	$(BIN)/python benchmarks/train_throughput.py --model small_cnn --size 8 --channels 1 --n 1024

clean:
	rm -rf results logs data/prepared
