"""A run's evaluation results on disk: one pair of files per attack, merged into ``metrics.json``.

    eval/<attack>.json         accuracy, #examples, seconds, the attack's exact settings, checkpoint
                               hash, package versions and git revision
    eval/<attack>.correct.npz  per-example correctness (bool) and the test indices it refers to
    metrics.json               ``merge_metrics``: every eval/<attack>.json, plus the worst case over
                               them (an example counts only if it survives every attack)

The evaluation checks (``part.base.vocabulary.CHECKS``: ``curve``, ``sanity``) write the same pair, with a 2-D
``correct`` (one row per ε of the curve, per attack of the checks) and the arrays that name the rows; they are
never merged into ``metrics.json`` and are read back, verified, with :func:`load_check`.

for the final weights (``model.pt``, checkpoint ``last``); the other weights a run may keep (``best``,
``ema``: ``part.base.rundir.CHECKPOINT_FILES``) get the same files in ``eval_<name>/`` and ``metrics_<name>.json``.

Apart from the attacks (``part.evaluation.evaluate``) and free of torch: the merge job and the tables read and
write these files without loading a model.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from part.base import files, provenance
from part.base.config import non_finite_key
from part.base.rundir import RunPaths, eval_dir_name, metrics_name
from part.base.vocabulary import ATTACKS, CHECKS, TABLE_ATTACKS

FORMAT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def now() -> str:
    """The UTC time a result is created, as recorded in it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_result(run_dir: str | Path, name: str, entry: dict[str, Any], correct: np.ndarray,
                 index: np.ndarray, checkpoint: str = "last",
                 arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Write one attack's pair of files; returns ``entry`` completed with its flags file and their hash.
    ``arrays`` are further arrays of the flags file (a check's row names: ``eps_255``, ``rows``).

    The JSON goes first and comes last: a kill in between leaves flags without a JSON, which counts as
    not evaluated (merges read the JSONs), never a JSON beside another evaluation's flags.
    """
    eval_dir = Path(run_dir) / eval_dir_name(checkpoint)
    correct_file = f"{name}.correct.npz"
    files.sweep_temporaries(eval_dir, [f"{name}.json", correct_file])  # this attack's job owns these two files
    (eval_dir / f"{name}.json").unlink(missing_ok=True)
    files.atomic_write(eval_dir / correct_file, lambda tmp: _save_npz(tmp, correct, index, **(arrays or {})))
    entry = {**entry, "checkpoint": checkpoint, "correct_file": f"{eval_dir_name(checkpoint)}/{correct_file}",
             "correct_sha256": file_sha256(eval_dir / correct_file)}
    files.write_json(eval_dir / f"{name}.json", entry)
    return entry


def _save_npz(tmp: Path, correct: np.ndarray, index: np.ndarray, **arrays: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
        np.savez_compressed(f, correct=correct, index=index, **arrays)


def load_check(run_dir: str | Path, name: str,
               checkpoint: str = "last") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON entry, arrays of its flags file) of an evaluation check (``curve``, ``sanity``), verified: the flags
    are the ones the JSON was written with, ``correct`` is (rows, N) over the N test ``index``es, and the entry was
    computed for the run's current weights where those are present (a table may read results without them)."""
    run_dir = Path(run_dir)
    path = run_dir / eval_dir_name(checkpoint) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {name!r} has not been evaluated for this run's {checkpoint} weights "
                                f"(`part evaluate --run {run_dir} --attacks {name}`)")
    again = f"re-run `part evaluate --run {run_dir} --checkpoint {checkpoint} --attacks {name}`"
    entry = read_finite_json(path, again)
    if not _flags_match(run_dir, entry):
        raise ValueError(f"{path}: its per-example flags are missing or not the ones it was written with; {again}")
    weights = RunPaths(run_dir).weights(checkpoint)
    if weights.is_file() and file_sha256(weights) != entry["checkpoint_sha256"]:
        raise ValueError(f"{path}: computed for another {weights.name} than the current one; {again} or delete it")
    with np.load(run_dir / entry["correct_file"]) as f:
        arrays = {key: f[key] for key in f.files}
    correct, index = arrays["correct"], arrays["index"]
    if correct.ndim != 2 or correct.shape[1] != len(index) or len(index) != entry["n_examples"]:
        raise ValueError(f"{run_dir / entry['correct_file']}: flags of shape {correct.shape} for {len(index)} indices "
                         f"and {entry['n_examples']} examples; expected (rows, n_examples); {again}")
    arrays["correct"] = correct.astype(bool)
    return entry, arrays


def load_correct(run_dir: str | Path, attack: str, checkpoint: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """(correct bool (N,), test indices (N,)) of one evaluated attack."""
    path = Path(run_dir) / eval_dir_name(checkpoint) / f"{attack}.correct.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: attack {attack!r} has not been evaluated for this run's {checkpoint} weights")
    try:
        with np.load(path) as f:  # allow_pickle=False: an object array is refused, never unpickled
            return f["correct"].astype(bool), f["index"]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not the per-example flags this pipeline writes ({err}); delete it and evaluate "
                         f"{attack!r} again") from None


def worst_case_correct(run_dir: str | Path, attacks: list[str], checkpoint: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """(correct under every attack (N,), test indices (N,)) over the examples all ``attacks`` have seen.

    Attacks may cover different prefixes of the test split (AutoAttack often runs on fewer examples).
    """
    correct = [load_correct(run_dir, name, checkpoint) for name in attacks]
    common = functools.reduce(np.intersect1d, [index for _, index in correct])
    return np.logical_and.reduce([c[np.isin(index, common)] for c, index in correct]), common


def metrics_schema() -> dict[str, Any]:
    return json.loads(resources.files("part").joinpath("schema/metrics.schema.json").read_text())


def build_metrics(run_dir: str | Path, entries: dict[str, dict[str, Any]], checkpoint: str = "last") -> dict[str, Any]:
    """metrics.json content from per-attack entries; refuses to mix results of different weights.

    Attacks may cover different prefixes of the test split (AutoAttack often runs on fewer
    examples); the worst case is taken over the examples that every attack has seen.
    """
    run_dir = Path(run_dir)
    if not entries:
        raise ValueError(f"{run_dir / eval_dir_name(checkpoint)}: no evaluated attack to merge")
    weights = RunPaths(run_dir).weights(checkpoint)
    sha = file_sha256(weights)
    again = f"`part evaluate --run {run_dir} --checkpoint {checkpoint} --attacks"
    stale = sorted(name for name, e in entries.items() if e["checkpoint_sha256"] != sha)
    if stale:
        raise ValueError(f"{run_dir}: eval results {stale} were computed for another {weights.name} than the current "
                         f"one; re-run {again} {','.join(stale)}` or delete them")
    mismatched = sorted(name for name, e in entries.items() if not _flags_match(run_dir, e))
    if mismatched:
        raise ValueError(f"{run_dir}: the per-example flags of {mismatched} are not the ones their JSON was written "
                         f"with; re-run {again} {','.join(mismatched)}`")
    order = sorted(entries, key=_attack_order)
    survivors, common = worst_case_correct(run_dir, order, checkpoint)
    return {
        "format_version": FORMAT_VERSION, "run": entries[order[0]]["run"], "checkpoint": checkpoint,
        "checkpoint_sha256": sha,
        "split": "test", "table_attacks": [a for a in TABLE_ATTACKS if a in entries],
        "mma_column": "mma (the PART release's variant); mm3 = Gao et al.'s published MM3",
        "attacks": {name: entries[name] for name in order},
        "worst_case": {"attacks": order, "n_examples": len(common), "n_correct": int(survivors.sum()),
                       "accuracy": 100.0 * int(survivors.sum()) / len(common) if len(common) else 0.0},
        "created": now(), "environment": provenance.environment(hardware=False),
    }


def _flags_match(run_dir: Path, entry: dict[str, Any]) -> bool:
    """Whether the entry's per-example flags file is there and is the one it was written with."""
    path = run_dir / entry["correct_file"]
    return path.is_file() and file_sha256(path) == entry.get("correct_sha256")


def _attack_order(name: str) -> int:
    return ATTACKS.index(name) if name in ATTACKS else len(ATTACKS)


def merge_metrics(run_dir: str | Path, checkpoint: str = "last") -> dict[str, Any]:
    """Merge every ``eval/<attack>.json`` of a run into ``metrics.json`` (validated, written atomically);
    for another ``checkpoint``, its ``eval_<name>/`` into ``metrics_<name>.json``.

    Merges of one run are serialised by a lock file, and each job writes its own results before it
    merges, so the last merge to finish sees every finished attack whatever the interleaving.
    """
    run_dir = Path(run_dir)
    eval_dir = run_dir / eval_dir_name(checkpoint)
    if not eval_dir.is_dir():  # refused before anything is created: nothing has been evaluated
        raise ValueError(f"{eval_dir}: missing, no evaluated attack to merge (`part evaluate --run {run_dir} "
                         f"--checkpoint {checkpoint}` evaluates and merges)")
    with _merging(eval_dir / ".merge.lock"):
        files.sweep_temporaries(run_dir, [metrics_name(checkpoint)])  # a merge killed mid-write; merges are serialised
        entries = {p.name.removesuffix(".json"): read_result(p, checkpoint) for p in sorted(eval_dir.glob("*.json"))
                   if p.name.removesuffix(".json") not in CHECKS}  # the checks are read with load_check
        metrics = build_metrics(run_dir, entries, checkpoint)
        jsonschema.validate(metrics, metrics_schema())
        files.write_json(run_dir / metrics_name(checkpoint), metrics)
    return metrics


@contextlib.contextmanager
def _merging(path: Path) -> Iterator[None]:
    """Hold ``path`` with ``flock`` while the body runs, waiting for any other merge of the run; the file is
    removed when the body ends, so a finished run keeps no lock file.

    ``part.base.lock`` refuses a second writer, but a merge must wait for the one before it (every per-attack job
    merges when it ends). The holder unlinks the file while still holding it; a waiter that was blocked on
    the unlinked file finds, once it gets it, that the path names another file (or none) and starts over on
    the path's current file, so two merges never hold different files at once. A merge killed by SIGKILL
    leaves the file, unlocked: the next merge takes it and removes it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: a waiter then sees the path changed
        os.close(fd)


def read_finite_json(path: Path, remedy: str) -> dict[str, Any]:
    """The JSON object of a result file (``files.read_json_object``), refusing NaN and infinite numbers: Python
    writes and reads them though JSON has none, and a NaN accuracy would reach a table as a dash, or a best."""
    obj = files.read_json_object(path, remedy)
    if (key := non_finite_key(obj)) is not None:
        raise ValueError(f"{path}: key '{key}': got a NaN or infinite number, expected a finite one; {remedy}")
    return obj


def read_result(path: Path, checkpoint: str = "last") -> dict[str, Any]:
    """One attack's ``eval/<attack>.json``, checked against the entry a metrics file holds: a damaged or foreign
    file is an error naming it and the key, before any merge reads it."""
    again = f"delete it and evaluate again (`part evaluate --run {path.parent.parent} --checkpoint {checkpoint} " \
            f"--attacks {path.stem}`)"
    if path.stem not in ATTACKS:
        raise ValueError(f"{path}: not an attack's result (expected eval files named after {', '.join(ATTACKS)}); "
                         "move it out of the evaluation directory")
    entry = read_finite_json(path, again)
    errors = sorted(_entry_validator().iter_errors(entry), key=lambda e: list(e.absolute_path))
    if errors:
        key = ".".join(map(str, errors[0].absolute_path))
        raise ValueError(f"{path}: {f'key {key!r}: ' if key else ''}{errors[0].message}; {again}")
    return entry


@functools.cache
def _entry_validator() -> jsonschema.Draft202012Validator:
    """The schema of one attack's entry in metrics.json (its ``$defs.attack_entry``), which each eval JSON is."""
    schema = metrics_schema()
    return jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/attack_entry"})
