"""The sources' fingerprint that a finished workflow records and `make check-demo` compares (part.workflow.fingerprint)."""

import os
from pathlib import Path

import pytest

from part.workflow.fingerprint import FILE_NAME, certify, main, recorded, source_files, source_fingerprint, stale_reason

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path):
    """A small checkout: one file of each source kind, and the things that are not sources."""
    for name, text in {"part/a.py": "x = 1\n", "rules/r.smk": "rule r:\n", "workflow_scripts/s.py": "pass\n",
                       "Snakefile": "include: 'rules/r.smk'\n", "configs/demo.yaml": "seed: 0\n",
                       "part/__pycache__/a.cpython-311.pyc": "bytecode", "results/tables/main.csv": "a,b\n",
                       "logs/train.log": "epoch 1\n", "README.md": "# demo\n", "tests/test_a.py": "pass\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_fingerprint_follows_the_sources_and_nothing_else(checkout):
    before = source_fingerprint(checkout)
    for other in ("results/tables/main.csv", "logs/train.log", "README.md", "tests/test_a.py",
                  "part/__pycache__/a.cpython-311.pyc"):
        (checkout / other).write_text("changed\n")
    (checkout / "results" / FILE_NAME).write_text("anything\n")
    assert source_fingerprint(checkout) == before
    for source in ("part/a.py", "rules/r.smk", "workflow_scripts/s.py", "Snakefile", "configs/demo.yaml"):
        text = (checkout / source).read_text()
        (checkout / source).write_text(text + "# edited\n")
        assert source_fingerprint(checkout) != before, source
        (checkout / source).write_text(text)
        assert source_fingerprint(checkout) == before, source  # the bytes count, not the file's time
    (checkout / "configs" / "new.yaml").write_text("")
    assert source_fingerprint(checkout) != before
    (checkout / "configs" / "new.yaml").unlink()
    (checkout / "part" / "a.py").rename(checkout / "part" / "b.py")
    assert source_fingerprint(checkout) != before


def test_the_checkouts_sources_are_its_code_and_configs():
    names = {p.relative_to(ROOT).as_posix() for p in source_files(ROOT)}
    assert {"Snakefile", "part/workflow/fingerprint.py", "rules/report.smk", "workflow_scripts/fingerprint.py",
            "configs/demo.yaml"} <= names
    assert not any("__pycache__" in name or name.startswith(("results/", "tests/", "docs/")) for name in names)


def test_outputs_older_than_a_source_are_recorded_as_stale(checkout):
    output = checkout / "results" / "tables" / "main.csv"
    assert certify([output], checkout) == source_fingerprint(checkout)  # written after every source
    edited = checkout / "part" / "a.py"
    os.utime(edited, (output.stat().st_mtime + 10,) * 2)  # a source edited after the output was made
    assert certify([output], checkout) == "stale: " + f"{output} is older than part/a.py"


def test_a_check_refuses_outputs_of_other_sources_with_one_message_that_says_how_to_refresh(checkout):
    results = checkout / "results"
    absent = stale_reason(results, checkout)
    assert "outputs are stale" in absent and f"no {FILE_NAME}" in absent and absent.endswith("run `make demo` to refresh them")
    (results / FILE_NAME).write_text(source_fingerprint(checkout) + "\n")
    assert stale_reason(results, checkout) is None and recorded(results) == source_fingerprint(checkout)
    (checkout / "part" / "a.py").write_text("x = 2\n")
    other = stale_reason(results, checkout)
    assert "outputs are stale" in other and f"{FILE_NAME} is of other sources" in other and "make demo" in other
    (results / FILE_NAME).write_text("stale: results/tables/main.csv is older than part/a.py\n")
    assert "older than part/a.py" in stale_reason(results, checkout)


def test_make_demo_reruns_every_job_only_over_outputs_of_other_sources(checkout, capsys):
    results = checkout / "results"
    assert main([str(results), "--root", str(checkout)]) == 0 and capsys.readouterr().out == ""  # a first run
    (results / FILE_NAME).write_text(source_fingerprint(checkout) + "\n")
    assert main([str(results), "--root", str(checkout)]) == 0 and capsys.readouterr().out == ""  # up to date
    (checkout / "part" / "a.py").write_text("x = 2\n")
    main([str(results), "--root", str(checkout)])
    assert capsys.readouterr().out == "--forceall\n"
