"""The import graph: analysis modules never import the trainer, and the torch-free ones stay torch-free.

Each check runs in a fresh interpreter, so what one test imported cannot hide what another needs.
"""

import json
import subprocess
import sys

import pytest

ANALYSIS = ["part.aggregate", "part.plots", "part.experiments", "part.report", "part.curve_table"]
TORCH_FREE = ["part.grid", "part.config", "part.vocabulary", "part.results", "part.rundir", "part.files",
              "part.aggregate", "part.plots", "part.experiments", "part.report", "part.compare", "part.stats",
              "part.cli", "part.plan", "part.curve_table", "part.status", "part.lock", "part.joblog",
              "part.tensorboard_export"]


def imported_by(module: str) -> set[str]:
    probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ANALYSIS)
def test_analysis_modules_do_not_import_the_training_module(module):
    assert "part.train" not in imported_by(module)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_tables_results_and_the_grid_do_not_import_torch(module):
    heavy = sorted(m for m in imported_by(module) if m.split(".")[0] == "torch")
    assert heavy == [], f"{module} imports {heavy[:3]}"


def test_the_grid_imports_no_plotting_library():
    modules = imported_by("part.grid")
    assert not {m.split(".")[0] for m in modules} & {"matplotlib", "seaborn", "pandas", "numpy"}
