"""The import graph: analysis modules never import the trainer, and the torch-free ones stay torch-free.

Each check runs in a fresh interpreter, so what one test imported cannot hide what another needs.
"""

import json
import subprocess
import sys

import pytest

ANALYSIS = ["part.analysis.aggregate", "part.analysis.plots", "part.analysis.experiments", "part.workflow.report", "part.analysis.curve_table"]
TORCH_FREE = ["part.base.grid", "part.base.config", "part.base.vocabulary", "part.evaluation.results", "part.base.rundir", "part.base.files",
              "part.analysis.aggregate", "part.analysis.plots", "part.analysis.experiments", "part.workflow.report", "part.analysis.compare", "part.analysis.stats",
              "part.cli", "part.workflow.plan", "part.analysis.curve_table", "part.workflow.status", "part.base.lock", "part.workflow.joblog",
              "part.analysis.tensorboard_export"]


def imported_by(module: str) -> set[str]:
    probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ANALYSIS)
def test_analysis_modules_do_not_import_the_training_module(module):
    assert "part.training.train" not in imported_by(module)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_tables_results_and_the_grid_do_not_import_torch(module):
    heavy = sorted(m for m in imported_by(module) if m.split(".")[0] == "torch")
    assert heavy == [], f"{module} imports {heavy[:3]}"


def test_the_grid_imports_no_plotting_library():
    modules = imported_by("part.base.grid")
    assert not {m.split(".")[0] for m in modules} & {"matplotlib", "seaborn", "pandas", "numpy"}
